"""ResNet bottleneck block: 1x1 reduce, 3x3 (strided), 1x1 expand, with a projection shortcut.

Paper: "Deep Residual Learning for Image Recognition", He et al., CVPR 2016,
arXiv:1512.03385 (Fig. 5 right for the block, Table 1 for ResNet-50). The stride
sits on the 3x3 conv, as in torchvision's "v1.5" layout, not on the first 1x1.

Published figures used by the zoo (``spaces/zoo/resnet50.yaml``): torchvision
``torchvision/models/resnet.py``, ``ResNet50_Weights.IMAGENET1K_V1`` meta
(``num_params`` 25,557,032; ``_ops`` 4.089 GMACs); the paper's Table 1 gives
3.8e9 FLOPs for the v1 layout (multiply-adds, stride on the first 1x1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import Activation, ConvNorm, DropPath, create_act, create_layer_scale, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.stems import conv_out
from nas.blocks.template import BlockContext, FusedBlock
from nas.errors import ConfigError

__all__ = ["BottleneckCfg", "Bottleneck", "check_conv_bn_block"]


def check_conv_bn_block(site: Site, kind: str) -> None:
    """Rules for a block that owns its convolutions: BatchNorm after each conv and no separate FFN."""
    if site.prefix_tokens:
        raise ConfigError(f"a {kind} block needs a feature map, not one that carries class tokens", path="kind")
    block = site.block
    if block is None:
        return
    if block.ffn.kind != "none":
        raise ConfigError(f"a {kind} block has no separate FFN; set the block's ffn to none, got {block.ffn.kind!r}",
                          path="kind")
    if block.norm.kind != "batchnorm":
        raise ConfigError(f"a {kind} block puts BatchNorm after each conv; set the block's norm to batchnorm, "
                          f"got {block.norm.kind!r}", path="kind")


@dataclass(frozen=True)
class BottleneckCfg(Component):
    """Bottleneck of width ``dim / expansion``; ``stride`` on the 3x3 conv shrinks the map."""

    layout = "nchw"

    reads_block: ClassVar[bool] = True  # check_conv_bn_block: the block's ffn and norm
    changes_width: ClassVar[bool] = True  # a projected shortcut where in_dim != dim

    stride: int = 1
    expansion: int = 4
    act: Activation = "relu"

    def check(self, site: Site) -> None:
        for name in ("stride", "expansion"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", path=name)
        if site.dim % self.expansion:
            raise ConfigError(f"{self.expansion} does not divide dim {site.dim}", path="expansion")
        check_conv_bn_block(site, "bottleneck")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_out(height, 3, self.stride, 1), conv_out(width, 3, self.stride, 1)


@register("mixer", "bottleneck", BottleneckCfg)
class Bottleneck(FusedBlock):
    """``act(shortcut(x) + drop_path(layer_scale(branch(x))))``.

    The shortcut is the identity when the block keeps width and size, else a
    strided 1x1 conv with BatchNorm (ResNet's option B). ``layer_scale`` is
    optional and absent in ResNet; the activation follows the addition.
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: BottleneckCfg = block.mixer  # type: ignore[assignment]
        in_dim, dim = context.in_dim, context.dim
        width = dim // cfg.expansion
        self.branch = nn.Sequential(
            ConvNorm(in_dim, width, 1, act=cfg.act, **dd),
            ConvNorm(width, width, 3, cfg.stride, act=cfg.act, **dd),
            ConvNorm(width, dim, 1, **dd),
        )
        projected = in_dim != dim or cfg.stride != 1
        self.shortcut = ConvNorm(in_dim, dim, 1, cfg.stride, **dd) if projected else nn.Identity()
        self.scale = create_layer_scale(dim, block.layer_scale, "nchw", **dd)
        self.drop_path = DropPath(context.drop_path) if context.drop_path > 0 else nn.Identity()
        self.act = create_act(cfg.act, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.scale(self.branch(x))))
