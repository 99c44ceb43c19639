"""MobileNetV3-Large and -Small at any width multiplier, and the MBConv block EfficientNet shares.

A. Howard et al., "Searching for MobileNetV3", arXiv:1905.02244, Table 1 (Large) and Table 2 (Small):
per block the kernel, expansion size, output channels, squeeze-and-excite, activation (ReLU or
h-swish) and stride; a 1x1 conv to 960 / 576, pooling, a 1x1 conv without BN to 1280 / 1024, the
classifier. SE reduces to a quarter of the expanded channels (rounded to 8) and gates with
h-sigmoid (Section 5.3). The width multiplier scales every channel count, rounded to a multiple of 8,
except the last, pooled 1x1 conv.

As PaddleClas builds the rows of predictors/calibration/v100.csv (docs/zh_CN/models/ImageNet1k/
MobileNetV3.md, whose parameter counts are the published figures here), the Small model's pooled
conv is 1280 wide like Large's (the paper has 1024; 2.94M vs 2.54M parameters at width 1.0), and
the last 1x1 conv carries no SE.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ACTIVATIONS, ConvBnAct, ReferenceModel, SqueezeExcite, make_divisible

__all__ = ["MBConv", "MobileNetV3", "MODELS"]

# (kernel, expansion size, output channels, SE, activation, stride) per block.
_Row = tuple[int, int, int, bool, str, int]
_LARGE: tuple[_Row, ...] = (
    (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2), (3, 200, 80, False, "hardswish", 1), (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1), (3, 480, 112, True, "hardswish", 1), (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2), (5, 960, 160, True, "hardswish", 1), (5, 960, 160, True, "hardswish", 1),
)
_SMALL: tuple[_Row, ...] = (
    (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 2), (5, 240, 40, True, "hardswish", 1), (5, 240, 40, True, "hardswish", 1),
    (5, 120, 48, True, "hardswish", 1), (5, 144, 48, True, "hardswish", 1), (5, 288, 96, True, "hardswish", 2),
    (5, 576, 96, True, "hardswish", 1), (5, 576, 96, True, "hardswish", 1),
)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, optional SE, 1x1 linear projection, identity shortcut.

    Args:
        se_channels: the SE bottleneck width; 0 for no SE.
        se_act, se_gate: the SE's inner activation and gate (ReLU / h-sigmoid in MobileNetV3, SiLU / sigmoid
            in EfficientNet).
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel: int, stride: int, *, act: str,
                 se_channels: int = 0, se_act: str = "relu", se_gate: str = "hardsigmoid",
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.expand = ConvBnAct(in_channels, hidden, 1, act=act, **dd) if hidden != in_channels else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, kernel, stride, groups=hidden, act=act, **dd)
        self.se = (SqueezeExcite(hidden, se_channels, act=se_act, gate=se_gate, **dd) if se_channels
                   else nn.Identity())
        self.project = ConvBnAct(hidden, out_channels, 1, act="none", **dd)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    """MobileNetV3 ``large`` or ``small`` with width multiplier ``width``; ``head`` is the pooled conv's width."""

    def __init__(self, *, size: Literal["large", "small"], width: float = 1.0, head: int = 1280,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        rows = _LARGE if size == "large" else _SMALL
        channels = make_divisible(16 * width)
        layers: list[nn.Module] = [ConvBnAct(3, channels, 3, 2, act="hardswish", **dd)]
        for kernel, expansion, out, se, act, stride in rows:
            hidden, out = make_divisible(expansion * width), make_divisible(out * width)
            layers.append(MBConv(channels, hidden, out, kernel, stride, act=act,
                                 se_channels=make_divisible(hidden / 4) if se else 0, **dd))
            channels = out
        last = make_divisible((960 if size == "large" else 576) * width)
        layers.append(ConvBnAct(channels, last, 1, act="hardswish", **dd))
        self.features = nn.Sequential(*layers)
        self.pool_conv = nn.Conv2d(last, head, 1, **dd)
        self.act = ACTIVATIONS["hardswish"]()
        self.fc = nn.Linear(head, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3), keepdim=True)
        return self.fc(self.act(self.pool_conv(pooled)).flatten(1))


_SOURCE = ("Howard et al. arXiv:1905.02244 Tables 1-2; PaddleClas docs/zh_CN/models/ImageNet1k/MobileNetV3.md "
           "(params; 1280-wide pooled conv for Small)")
_PARAMS = {
    "large": {"035": 2.10, "05": 2.67, "075": 3.91, "10": 5.47, "125": 7.44},
    "small": {"035": 1.66, "05": 1.90, "075": 2.37, "10": 2.94, "125": 3.62},
}
_WIDTHS = {"035": 0.35, "05": 0.5, "075": 0.75, "10": 1.0, "125": 1.25}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"mobilenetv3_{size}_{key}", "mobilenetv3", partial(MobileNetV3, size=size, width=width), 224,
                   _PARAMS[size][key], _SOURCE)
    for size in ("large", "small") for key, width in _WIDTHS.items()
)
