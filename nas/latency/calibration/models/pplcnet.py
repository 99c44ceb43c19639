"""PP-LCNet at widths 0.25 to 2.5.

C. Cui et al., "PP-LCNet: A Lightweight CPU Convolutional Neural Network", arXiv:2109.15099, Table 1
(stem 3x3/2 conv of 16; thirteen depthwise-separable blocks, each a kxk depthwise conv and a 1x1 conv
with BN and h-swish, 5x5 kernels in the last six, SE in the last two; global pooling, a 1x1 conv to
1280 with h-swish after the pooling, FC) and Section 3 (SE reduces to a quarter with ReLU and
h-sigmoid, and sits between the depthwise and the pointwise conv). Channels scale by the width,
rounded to a multiple of 8; the 1280 head does not scale.

Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/PP-LCNet.md / model_list.md (the figures
in predictors/calibration/xeon.csv).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel, SqueezeExcite, make_divisible

__all__ = ["DepthSeparable", "PPLCNet", "MODELS"]

# (kernel, input channels, output channels, stride, SE) of the blocks after the stem, Table 1.
_BLOCKS: tuple[tuple[int, int, int, int, bool], ...] = (
    (3, 16, 32, 1, False),
    (3, 32, 64, 2, False), (3, 64, 64, 1, False),
    (3, 64, 128, 2, False), (3, 128, 128, 1, False),
    (3, 128, 256, 2, False), *((5, 256, 256, 1, False),) * 5,
    (5, 256, 512, 2, True), (5, 512, 512, 1, True),
)


class DepthSeparable(nn.Module):
    """kxk depthwise conv (BN, h-swish), optional SE, 1x1 conv (BN, h-swish)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *, se: bool,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.depthwise = ConvBnAct(in_channels, in_channels, kernel, stride, groups=in_channels, act="hardswish",
                                   **dd)
        self.se = (SqueezeExcite(in_channels, in_channels // 4, gate="hardsigmoid", **dd) if se
                   else nn.Identity())
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, act="hardswish", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.se(self.depthwise(x)))


class PPLCNet(nn.Module):
    """PP-LCNet with width multiplier ``width``."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, make_divisible(16 * width), 3, 2, act="hardswish", **dd)]
        for kernel, in_channels, out_channels, stride, se in _BLOCKS:
            layers.append(DepthSeparable(make_divisible(in_channels * width), make_divisible(out_channels * width),
                                         kernel, stride, se=se, **dd))
        self.features = nn.Sequential(*layers)
        self.pool_conv = nn.Conv2d(make_divisible(512 * width), 1280, 1, bias=False, **dd)
        self.act = nn.Hardswish()
        self.fc = nn.Linear(1280, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3), keepdim=True)
        return self.fc(self.act(self.pool_conv(pooled)).flatten(1))


_SOURCE = "Cui et al. arXiv:2109.15099 Table 1; PaddleClas docs/zh_CN/models/ImageNet1k/PP-LCNet.md (params)"
_WIDTHS = {"025": (0.25, 1.52), "035": (0.35, 1.65), "05": (0.5, 1.89), "075": (0.75, 2.37), "10": (1.0, 2.96),
           "15": (1.5, 4.52), "20": (2.0, 6.54), "25": (2.5, 9.04)}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"pplcnet_{key}", "pp-lcnet", partial(PPLCNet, width=width), 224, params_m, _SOURCE)
    for key, (width, params_m) in _WIDTHS.items()
)
