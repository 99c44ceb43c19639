"""Xception (the 36-convolution model PaddleClas calls Xception41).

F. Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", arXiv:1610.02357, Figure 5:
entry flow (3x3/2 conv of 32 and 3x3 conv of 64, both unpadded; three residual blocks of two separable
convs of 128, 256, 728 with a 3x3/2 max pool, shortcut a strided 1x1 conv), middle flow (eight residual
blocks of three ReLU-separable conv-BN of 728), exit flow (separable convs of 728 and 1024 with a max
pool and a strided 1x1 shortcut; separable convs of 1536 and 2048 with ReLU; pooling; FC), 299 px input.
A separable conv is a 3x3 depthwise conv followed by a 1x1 conv, without biases, then BN. Parameter count:
the paper's Table 3 (22.9M); PaddleClas's 22.69M omits the depthwise weights (see ``select.PARAMS_EXCEPTIONS``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel

__all__ = ["SeparableConv", "XceptionBlock", "Xception", "MODELS"]


class SeparableConv(nn.Sequential):
    """Optional ReLU, 3x3 depthwise conv, 1x1 conv, BN."""

    def __init__(self, in_channels: int, out_channels: int, *, relu_first: bool, device: Any = None,
                 dtype: Any = None):
        dd = factory_kwargs(device, dtype)
        super().__init__(nn.ReLU() if relu_first else nn.Identity(),
                         nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False, **dd),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False, **dd), nn.BatchNorm2d(out_channels, **dd))


class XceptionBlock(nn.Module):
    """Separable convs to ``widths`` (ReLU before each), an optional 3x3/2 max pool, and a residual shortcut."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], *, downsample: bool, relu_first: bool = True,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers.append(SeparableConv(channels, width, relu_first=relu_first or index > 0, **dd))
            channels = width
        if downsample:
            layers.append(nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(*layers)
        self.shortcut = (ConvBnAct(in_channels, channels, 1, 2 if downsample else 1, act="none", **dd)
                         if downsample or in_channels != channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception with ``middle`` middle-flow blocks (8 in the paper)."""

    def __init__(self, *, middle: int = 8, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.features = nn.Sequential(
            ConvBnAct(3, 32, 3, 2, padding=0, **dd), ConvBnAct(32, 64, 3, padding=0, **dd),
            XceptionBlock(64, (128, 128), downsample=True, relu_first=False, **dd),
            XceptionBlock(128, (256, 256), downsample=True, **dd),
            XceptionBlock(256, (728, 728), downsample=True, **dd),
            *(XceptionBlock(728, (728, 728, 728), downsample=False, **dd) for _ in range(middle)),
            XceptionBlock(728, (728, 1024), downsample=True, **dd),
            SeparableConv(1024, 1536, relu_first=False, **dd), nn.ReLU(),
            SeparableConv(1536, 2048, relu_first=False, **dd), nn.ReLU(),
        )
        self.head = Classifier(2048, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("xception", "xception", Xception, 299, 22.9, "Chollet arXiv:1610.02357 Fig. 5, Table 3"),
)
