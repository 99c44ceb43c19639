"""MBConv (inverted residual): 1x1 expand, depthwise k x k (strided), optional squeeze-excitation, 1x1 project.

Paper: "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Sandler et al.,
CVPR 2018, arXiv:1801.04381 (Table 1 for the block, Table 2 for the network).
The squeeze-excitation option follows EfficientNet (arXiv:1905.11946), whose
``se_ratio`` is relative to the block's input width.

Published figures used by the zoo (``spaces/zoo/mobilenetv2_100.yaml``): the
paper's Table 4 (3.4M parameters, 300M multiply-adds) and the exact count of the
same model in torchvision ``torchvision/models/mobilenetv2.py``,
``MobileNet_V2_Weights.IMAGENET1K_V1`` meta (``num_params`` 3,504,872; ``_ops`` 0.301 GMACs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import Activation, ConvNorm, DropPath, SqueezeExcite, create_layer_scale, factory_kwargs
from nas.blocks.contract import Prefix
from nas.blocks.ffn import hidden_width
from nas.blocks.registry import register
from nas.blocks.resnet import check_conv_bn_block
from nas.blocks.stems import conv_out
from nas.blocks.template import BlockContext, FusedBlock
from nas.errors import ConfigError

__all__ = ["MBConvCfg", "MBConv"]


@dataclass(frozen=True)
class MBConvCfg(Component):
    """Expand to ``expand_ratio * in_dim``, depthwise ``kernel`` of ``stride``, optional SE, project to ``dim``.

    ``expand_ratio`` 1 skips the expansion conv; ``se_ratio`` 0 disables the
    squeeze-excitation (its hidden width is ``se_ratio * in_dim``).
    """

    layout = "nchw"

    reads_block: ClassVar[bool] = True  # check_conv_bn_block: the block's ffn and norm
    changes_width: ClassVar[bool] = True  # projects to dim; the residual only where in_dim == dim
    # expand_ratio x in_dim independent hidden channels
    sharing = {"expand": Prefix(), "dwconv": Prefix(), "se": Prefix(), "project": Prefix()}

    expand_ratio: float = 6.0
    kernel: int = 3
    stride: int = 1
    se_ratio: float = 0.0
    act: Activation = "relu6"

    def check(self, site: Site) -> None:
        if self.expand_ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.expand_ratio}", path="expand_ratio")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be an odd number >= 1, got {self.kernel}", path="kernel")
        if self.stride < 1:
            raise ConfigError(f"must be >= 1, got {self.stride}", path="stride")
        if not 0 <= self.se_ratio <= 1:
            raise ConfigError(f"must be in [0, 1] (0 disables squeeze-excitation), got {self.se_ratio}",
                              path="se_ratio")
        check_conv_bn_block(site, "mbconv")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        pad = self.kernel // 2
        return conv_out(height, self.kernel, self.stride, pad), conv_out(width, self.kernel, self.stride, pad)


@register("mixer", "mbconv", MBConvCfg)
class MBConv(FusedBlock):
    """``shortcut(x) + drop_path(layer_scale(project(se(dwconv(expand(x))))))``.

    The projection is linear (BatchNorm, no activation): the paper's "linear
    bottleneck". The residual exists only where the block keeps width and size
    (stride 1, ``in_dim == dim``); elsewhere the block is a plain feed-forward
    stack. ``layer_scale`` is optional and absent in MobileNetV2.
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: MBConvCfg = block.mixer  # type: ignore[assignment]
        in_dim, dim = context.in_dim, context.dim
        expanded = cfg.expand_ratio != 1
        hidden = hidden_width(in_dim, cfg.expand_ratio) if expanded else in_dim
        self.expand = ConvNorm(in_dim, hidden, 1, act=cfg.act, **dd) if expanded else nn.Identity()
        self.dwconv = ConvNorm(hidden, hidden, cfg.kernel, cfg.stride, groups=hidden, act=cfg.act, **dd)
        self.se = (SqueezeExcite(hidden, hidden_width(in_dim, cfg.se_ratio), cfg.act, **dd) if cfg.se_ratio > 0
                   else nn.Identity())
        self.project = ConvNorm(hidden, dim, 1, **dd)
        self.residual = cfg.stride == 1 and in_dim == dim
        self.scale = create_layer_scale(dim, block.layer_scale, "nchw", **dd)
        self.drop_path = DropPath(context.drop_path) if context.drop_path > 0 and self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.scale(self.project(self.se(self.dwconv(self.expand(x))))))
        return x + out if self.residual else out
