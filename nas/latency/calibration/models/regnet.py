"""RegNetX-200MF, -4.0GF and -32GF.

I. Radosavovic et al., "Designing Network Design Spaces", arXiv:2003.13678: Section 3 / Figure 3 (the
AnyNetX body: a 3x3/2 stem conv of 32, four stages of X blocks, each a 1x1 conv, a 3x3 group conv (stride
2 in the first block of a stage) and a 1x1 conv with BN and ReLU, a projection shortcut where the shape
changes; bottleneck ratio 1) and the per-model depths, widths and group widths of its Appendix / the
authors' pycls model zoo (configs/dds_baselines/regnetx/RegNetX-*.yaml, as quantised from w0, wa, wm):
200MF depths 1/1/4/7, widths 24/56/152/368, group width 8; 4.0GF 2/5/14/2, 80/240/560/1360, 40;
32GF 2/7/13/1, 336/672/1344/2520, 168. Parameter counts: pycls MODEL_ZOO.md (2.7M, 22.1M, 107.8M).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel

__all__ = ["XBlock", "RegNetX", "MODELS"]


class XBlock(nn.Module):
    """1x1 conv, 3x3 group conv (``width // group_width`` groups), 1x1 conv; residual with projection if needed."""

    def __init__(self, in_channels: int, width: int, stride: int, group_width: int, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.conv1 = ConvBnAct(in_channels, width, 1, **dd)
        self.conv2 = ConvBnAct(width, width, 3, stride, groups=width // group_width, **dd)
        self.conv3 = ConvBnAct(width, width, 1, act="none", **dd)
        self.shortcut = (ConvBnAct(in_channels, width, 1, stride, act="none", **dd)
                         if stride > 1 or in_channels != width else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class RegNetX(nn.Module):
    """RegNetX with per-stage ``depths`` and ``widths`` and one ``group_width``."""

    def __init__(self, *, depths: tuple[int, ...], widths: tuple[int, ...], group_width: int,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, 32, 3, 2, **dd)]
        channels = 32
        for depth, width in zip(depths, widths, strict=True):
            for index in range(depth):
                layers.append(XBlock(channels, width, 2 if index == 0 else 1, group_width, **dd))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Radosavovic et al. arXiv:2003.13678 Sec. 3; facebookresearch/pycls MODEL_ZOO.md (params) and configs"

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("regnetx_200mf", "regnet",
                   partial(RegNetX, depths=(1, 1, 4, 7), widths=(24, 56, 152, 368), group_width=8), 224, 2.7,
                   _SOURCE),
    ReferenceModel("regnetx_4gf", "regnet",
                   partial(RegNetX, depths=(2, 5, 14, 2), widths=(80, 240, 560, 1360), group_width=40), 224, 22.1,
                   _SOURCE),
    ReferenceModel("regnetx_32gf", "regnet",
                   partial(RegNetX, depths=(2, 7, 13, 1), widths=(336, 672, 1344, 2520), group_width=168), 224,
                   107.8, _SOURCE),
)
