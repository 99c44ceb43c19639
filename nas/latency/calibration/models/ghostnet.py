"""GhostNet at widths 0.5, 1.0 and 1.3.

K. Han et al., "GhostNet: More Features from Cheap Operations", arXiv:1911.11907: Table 1 (stem 3x3/2
conv of 16; sixteen Ghost bottlenecks with kernel, expansion size, output channels, SE and stride; 1x1
conv to 960, pooling, 1x1 conv to 1280 without BN, FC), Section 3.1 (Ghost module: a primary 1x1 conv
to half the output channels and a cheap 3x3 depthwise conv making the other half, ratio s = 2) and
Figure 3 (Ghost bottleneck: Ghost module with ReLU, depthwise conv for stride 2, optional SE, Ghost module
without ReLU; shortcut is identity or a depthwise + pointwise conv pair). Widths scale by the multiplier,
rounded to a multiple of 4; SE reduces to a quarter (rounded to 4) and gates with hard sigmoid.

Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/GhostNet.md (2.6M, 5.2M, 7.3M; the paper's
Table 7 gives 5.2M and 7.3M for 1.0x and 1.3x).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel, SqueezeExcite, make_divisible

__all__ = ["GhostModule", "GhostBottleneck", "GhostNet", "MODELS"]

# (kernel, expansion size, output channels, SE, stride), Table 1.
_ROWS: tuple[tuple[int, int, int, bool, int], ...] = (
    (3, 16, 16, False, 1), (3, 48, 24, False, 2), (3, 72, 24, False, 1), (5, 72, 40, True, 2),
    (5, 120, 40, True, 1), (3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
    (3, 184, 80, False, 1), (3, 480, 112, True, 1), (3, 672, 112, True, 1), (5, 672, 160, True, 2),
    (5, 960, 160, False, 1), (5, 960, 160, True, 1), (5, 960, 160, False, 1), (5, 960, 160, True, 1),
)


class GhostModule(nn.Module):
    """Primary 1x1 conv to ``ceil(out / 2)`` channels, cheap 3x3 depthwise conv to the rest, concatenated."""

    def __init__(self, in_channels: int, out_channels: int, *, relu: bool, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        act = "relu" if relu else "none"
        primary = (out_channels + 1) // 2
        self.out_channels = out_channels
        self.primary = ConvBnAct(in_channels, primary, 1, act=act, **dd)
        self.cheap = ConvBnAct(primary, primary, 3, groups=primary, act=act, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary(x)
        return torch.cat((primary, self.cheap(primary)), dim=1)[:, : self.out_channels]


class GhostBottleneck(nn.Module):
    """Ghost module (ReLU), depthwise conv if strided, optional SE, Ghost module (linear), shortcut."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel: int, stride: int, *,
                 se: bool, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.expand = GhostModule(in_channels, hidden, relu=True, **dd)
        self.depthwise = (ConvBnAct(hidden, hidden, kernel, stride, groups=hidden, act="none", **dd) if stride > 1
                          else nn.Identity())
        self.se = (SqueezeExcite(hidden, make_divisible(hidden / 4, 4), gate="hardsigmoid", **dd) if se
                   else nn.Identity())
        self.project = GhostModule(hidden, out_channels, relu=False, **dd)
        self.shortcut: nn.Module = nn.Identity()
        if stride > 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                ConvBnAct(in_channels, in_channels, kernel, stride, groups=in_channels, act="none", **dd),
                ConvBnAct(in_channels, out_channels, 1, act="none", **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.depthwise(self.expand(x)))) + self.shortcut(x)


class GhostNet(nn.Module):
    """GhostNet with width multiplier ``width``."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        channels = make_divisible(16 * width, 4)
        layers: list[nn.Module] = [ConvBnAct(3, channels, 3, 2, **dd)]
        for kernel, expansion, out, se, stride in _ROWS:
            hidden, out = make_divisible(expansion * width, 4), make_divisible(out * width, 4)
            layers.append(GhostBottleneck(channels, hidden, out, kernel, stride, se=se, **dd))
            channels = out
        last = make_divisible(960 * width, 4)
        layers.append(ConvBnAct(channels, last, 1, **dd))
        self.features = nn.Sequential(*layers)
        self.pool_conv = nn.Conv2d(last, 1280, 1, **dd)
        self.act = nn.ReLU()
        self.fc = nn.Linear(1280, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3), keepdim=True)
        return self.fc(self.act(self.pool_conv(pooled)).flatten(1))


_SOURCE = "Han et al. arXiv:1911.11907 Table 1, Fig. 3; PaddleClas docs/zh_CN/models/ImageNet1k/GhostNet.md (params)"

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("ghostnet_050", "ghostnet", partial(GhostNet, width=0.5), 224, 2.6, _SOURCE),
    ReferenceModel("ghostnet_100", "ghostnet", partial(GhostNet, width=1.0), 224, 5.2, _SOURCE),
    ReferenceModel("ghostnet_130", "ghostnet", partial(GhostNet, width=1.3), 224, 7.3, _SOURCE),
)
