"""Identity and pooling token mixers (MetaFormer / PoolFormer).

Paper: "MetaFormer Is Actually What You Need for Vision", Yu et al., CVPR 2022,
arXiv:2111.11418. Pooling mixes tokens with ``avgpool(x) - x`` (the ``- x``
because the block adds the residual back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["IdentityCfg", "PoolingCfg", "IdentityMixer", "Pooling"]


@dataclass(frozen=True)
class IdentityCfg(Component):
    """No token mixing (MetaFormer's IdentityFormer baseline)."""

    layout = "nchw"


@dataclass(frozen=True)
class PoolingCfg(Component):
    """Average pooling over a ``pool_size`` window, stride 1."""

    layout = "nchw"

    pool_size: int = 3

    def check(self, site: Site) -> None:
        if self.pool_size < 1 or self.pool_size % 2 == 0:
            raise ConfigError(f"must be an odd number >= 1, got {self.pool_size}", path="pool_size")


@register("mixer", "identity", IdentityCfg)
class IdentityMixer(TokenMixer):
    def __init__(self, cfg: IdentityCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register("mixer", "pooling", PoolingCfg)
class Pooling(TokenMixer):
    def __init__(self, cfg: PoolingCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.pool = nn.AvgPool2d(cfg.pool_size, stride=1, padding=cfg.pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x
