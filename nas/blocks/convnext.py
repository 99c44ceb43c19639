"""ConvNeXt block: depthwise conv, norm, FFN, layer scale, residual.

Paper: "A ConvNet for the 2020s", Liu et al., CVPR 2022, arXiv:2201.03545
(Fig. 4 for the block, Sec. 2.6 and Table 9 for the macro design).

Published figures used by the zoo (``spaces/zoo/convnext_*.yaml``): the paper's
Table 1 (ConvNeXt-T 28M / 4.5G, -S 50M / 8.7G, -B 89M / 15.4G, rounded) and the
exact counts of the same models in torchvision's ``torchvision/models/convnext.py``
(``ConvNeXt_*_Weights`` meta: ``num_params`` and ``_ops`` in GMACs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import DropPath, create_layer_scale, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.template import BlockContext, FusedBlock, create_ffn, create_norm
from nas.errors import ConfigError

__all__ = ["ConvNeXtCfg", "ConvNeXtBlock"]


@dataclass(frozen=True)
class ConvNeXtCfg(Component):
    """A depthwise ``kernel x kernel`` convolution mixing tokens; the block's norm and FFN follow it."""

    layout = "nchw"

    kernel: int = 7

    def check(self, site: Site) -> None:
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be an odd number >= 1, got {self.kernel}", path="kernel")
        if site.prefix_tokens:
            raise ConfigError("a depthwise conv cannot run on a feature map that carries class tokens", path="kind")


@register("mixer", "convnext", ConvNeXtCfg)
class ConvNeXtBlock(FusedBlock):
    """``x + drop_path(layer_scale(ffn(norm(dwconv(x)))))``: one norm, one residual per block.

    Unlike the MetaFormer template, the token mixer and the FFN share one residual
    and the norm sits between them (the paper's "fewer normalisation layers" step).
    The FFN runs on the NCHW map as 1x1 convolutions; the official code permutes to
    NHWC and uses linear layers, which have the same weights and MACs.
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: ConvNeXtCfg = block.mixer  # type: ignore[assignment]
        dim = context.dim
        self.dwconv = nn.Conv2d(dim, dim, cfg.kernel, padding=cfg.kernel // 2, groups=dim, **dd)
        self.norm = create_norm(block.norm, dim, "nchw", **dd)
        self.ffn = create_ffn(block.ffn, dim, "nchw", size=context.size, **dd)
        self.scale = create_layer_scale(dim, block.layer_scale, "nchw", **dd)
        self.drop_path = DropPath(context.drop_path) if context.drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.scale(self.ffn(self.norm(self.dwconv(x)))))
