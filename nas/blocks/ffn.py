"""Channel-mixing FFNs: none, mlp (optionally with BatchNorm), conv_mlp (with a depthwise conv).

* ``mlp``: ViT/PoolFormer MLP (arXiv:2010.11929); ``batchnorm: true`` gives
  EfficientFormer's conv-BN MLP (arXiv:2206.01191, Meta4D block).
* ``conv_mlp``: a depthwise 3x3 between the two pointwise layers (PVTv2
  arXiv:2106.13797, VAN arXiv:2202.09741).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Activation, Layout, Mlp
from nas.blocks.contract import Prefix
from nas.blocks.registry import register
from nas.errors import ConfigError

__all__ = ["NoFfnCfg", "MlpCfg", "ConvMlpCfg", "hidden_width"]


def hidden_width(dim: int, ratio: float) -> int:
    """Hidden width of an FFN: ``round(dim * ratio)``, at least 1."""
    return max(1, round(dim * ratio))


def _check_ratio(ratio: float) -> None:
    if ratio <= 0:
        raise ConfigError(f"must be > 0, got {ratio}", path="ratio")


@dataclass(frozen=True)
class NoFfnCfg(Component):
    """No FFN: the block is only its token mixer."""


@dataclass(frozen=True)
class MlpCfg(Component):
    """Two pointwise layers, hidden width ``ratio * dim``."""

    sharing = {"fc1": Prefix(), "norm1": Prefix(), "fc2": Prefix()}  # ratio x dim independent hidden units

    ratio: float = 4.0
    act: Activation = "gelu"
    bias: bool = True
    batchnorm: bool = False

    def check(self, site: Site) -> None:
        _check_ratio(self.ratio)


@dataclass(frozen=True)
class ConvMlpCfg(Component):
    """Pointwise, depthwise 3x3, activation, pointwise."""

    sharing = {"fc1": Prefix(), "mid": Prefix(), "fc2": Prefix()}  # ratio x dim independent hidden units

    ratio: float = 4.0
    act: Activation = "gelu"

    def check(self, site: Site) -> None:
        _check_ratio(self.ratio)
        if site.prefix_tokens:
            raise ConfigError("a depthwise conv cannot run on a feature map that carries class tokens", path="kind")


@register("ffn", "none", NoFfnCfg)
class NoFfn(nn.Identity):
    """Placeholder; the block template skips the FFN sub-layer for this kind."""

    def __init__(self, cfg: NoFfnCfg, *, dim: int, layout: Layout, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()


@register("ffn", "mlp", MlpCfg)
class MlpFfn(Mlp):
    def __init__(self, cfg: MlpCfg, *, dim: int, layout: Layout, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__(dim, hidden_width(dim, cfg.ratio), layout, act=cfg.act, bias=cfg.bias, norm=cfg.batchnorm,
                         device=device, dtype=dtype)


@register("ffn", "conv_mlp", ConvMlpCfg)
class ConvMlpFfn(Mlp):
    def __init__(self, cfg: ConvMlpCfg, *, dim: int, layout: Layout, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__(dim, hidden_width(dim, cfg.ratio), layout, act=cfg.act, dwconv=True, size=size,
                         device=device, dtype=dtype)
