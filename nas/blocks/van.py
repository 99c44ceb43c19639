"""Large-kernel attention (LKA), the token mixer of the Visual Attention Network.

Paper: "Visual Attention Network", Guo et al., arXiv:2202.09741 (Sec. 3 for LKA
and the B0-B3 settings). Structure details (the attention sub-layer's 1x1
projections, GELU and inner shortcut; layer scale 1e-2; FFN expansion ratios
8, 8, 4, 4 for every variant) are read from the official code,
``Visual-Attention-Network/VAN-Classification`` ``models/van.py``.

A ``kernel x kernel`` depthwise convolution is decomposed into a
``(2 * dilation - 1)`` depthwise conv, a ``ceil(kernel / dilation)`` depthwise
conv with ``dilation``, and a 1x1 conv; the result gates the input
multiplicatively. The defaults (21, 3) give VAN's 5x5, 7x7 dilation 3, 1x1.

Published figures used by the zoo (``spaces/zoo/van_b*.yaml``): the official
README's model table (VAN-Tiny/Small/Base/Large = B0/B1/B2/B3: 4.1M/0.9G,
13.9M/2.5G, 26.6M/5.0G, 44.8M/9.0G), with two-decimal values from
``Westlake-AI/openmixup`` ``configs/classification/imagenet/van/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Activation, create_act, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["LkaCfg", "LargeKernelAttention", "Lka"]


@dataclass(frozen=True)
class LkaCfg(Component):
    """A decomposed ``kernel x kernel`` attention with ``dilation``, between two 1x1 projections."""

    layout = "nchw"

    kernel: int = 21
    dilation: int = 3
    act: Activation = "gelu"

    @property
    def local_kernel(self) -> int:
        """Kernel of the plain depthwise conv: ``2 * dilation - 1``."""
        return 2 * self.dilation - 1

    @property
    def dilated_kernel(self) -> int:
        """Kernel of the dilated depthwise conv: ``ceil(kernel / dilation)``."""
        return -(-self.kernel // self.dilation)

    def check(self, site: Site) -> None:
        if self.dilation < 1:
            raise ConfigError(f"must be >= 1, got {self.dilation}", path="dilation")
        if self.kernel < 1:
            raise ConfigError(f"must be >= 1, got {self.kernel}", path="kernel")
        if self.dilated_kernel % 2 == 0:
            raise ConfigError(f"ceil(kernel / dilation) must be odd to keep the map size, got "
                              f"ceil({self.kernel} / {self.dilation}) = {self.dilated_kernel}", path="kernel")
        if site.prefix_tokens:
            raise ConfigError("large-kernel attention cannot run on a feature map that carries class tokens",
                              path="kind")


class LargeKernelAttention(nn.Module):
    """``x * conv1x1(dilated_dwconv(dwconv(x)))``: an attention map from convolutions, no softmax."""

    def __init__(self, dim: int, cfg: LkaCfg, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        local, dilated = cfg.local_kernel, cfg.dilated_kernel
        self.local = nn.Conv2d(dim, dim, local, padding=local // 2, groups=dim, **dd)
        self.dilated = nn.Conv2d(dim, dim, dilated, padding=cfg.dilation * (dilated // 2), dilation=cfg.dilation,
                                 groups=dim, **dd)
        self.pointwise = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pointwise(self.dilated(self.local(x)))


@register("mixer", "lka", LkaCfg)
class Lka(TokenMixer):
    """VAN's attention sub-layer: ``proj_out(lka(act(proj_in(x)))) + x``.

    The ``+ x`` is the official code's inner shortcut; with the block template's
    residual around it, the block computes ``x + ls * (mixer(norm(x)))`` where the
    mixer already contains ``norm(x)``.
    """

    def __init__(self, cfg: LkaCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.proj_in = nn.Conv2d(dim, dim, 1, **dd)
        self.act = create_act(cfg.act, **dd)
        self.attention = LargeKernelAttention(dim, cfg, **dd)
        self.proj_out = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.attention(self.act(self.proj_in(x)))) + x
