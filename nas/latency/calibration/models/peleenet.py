"""PeleeNet.

R. J. Wang et al., "Pelee: A Real-Time Object Detection System on Mobile Devices", arXiv:1804.06882,
Section 2.1 and Table 1: a stem block (3x3/2 conv of 32; a 1x1 conv of 16 and a 3x3/2 conv of 32 beside a
2x2/2 max pool; concatenated and reduced by a 1x1 conv to 32), four dense stages of 3, 4, 8, 6 two-way dense
layers (growth rate 32: two branches of 16 channels, a 1x1 bottleneck then one or two 3x3 convs; bottleneck
widths 1, 2, 4, 4 x the half growth rate, capped at half the input channels) each closed by a 1x1
transition conv keeping the channels (128, 256, 512, 704) and, in the first three, a 2x2/2 average pool;
global pooling and FC. Every conv is followed by BN and ReLU. Parameter count: 2.8M (Table 1; PaddleClas
model_list.md gives 2.812M).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel

__all__ = ["StemBlock", "TwoWayDenseLayer", "PeleeNet", "MODELS"]


class StemBlock(nn.Module):
    """3x3/2 conv; [1x1 conv, 3x3/2 conv] beside a 2x2/2 max pool; concatenation; 1x1 conv."""

    def __init__(self, channels: int = 32, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.stem = ConvBnAct(3, channels, 3, 2, **dd)
        self.branch = nn.Sequential(ConvBnAct(channels, channels // 2, 1, **dd),
                                    ConvBnAct(channels // 2, channels, 3, 2, **dd))
        self.pool = nn.MaxPool2d(2, 2)
        self.fuse = ConvBnAct(2 * channels, channels, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.fuse(torch.cat((self.branch(x), self.pool(x)), dim=1))


class TwoWayDenseLayer(nn.Module):
    """Two branches of ``growth / 2`` channels (one and two 3x3 convs) appended to the input."""

    def __init__(self, in_channels: int, growth: int, bottleneck_width: int, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        half = growth // 2
        inner = half * bottleneck_width // 4 * 4
        if inner > in_channels / 2:
            inner = in_channels // 8 * 4
        self.branch1 = nn.Sequential(ConvBnAct(in_channels, inner, 1, **dd), ConvBnAct(inner, half, 3, **dd))
        self.branch2 = nn.Sequential(ConvBnAct(in_channels, inner, 1, **dd), ConvBnAct(inner, half, 3, **dd),
                                     ConvBnAct(half, half, 3, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.branch1(x), self.branch2(x)), dim=1)


class PeleeNet(nn.Module):
    """PeleeNet with the paper's stages (3, 4, 8, 6 layers; growth 32; bottleneck widths 1, 2, 4, 4)."""

    def __init__(self, *, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [StemBlock(32, **dd)]
        channels = 32
        for index, (depth, width) in enumerate(zip((3, 4, 8, 6), (1, 2, 4, 4), strict=True)):
            for _ in range(depth):
                layers.append(TwoWayDenseLayer(channels, 32, width, **dd))
                channels += 32
            layers.append(ConvBnAct(channels, channels, 1, **dd))
            if index < 3:
                layers.append(nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("peleenet", "peleenet", PeleeNet, 224, 2.8, "Wang et al. arXiv:1804.06882 Sec. 2.1, Table 1"),
)
