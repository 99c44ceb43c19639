"""MobileOne in its inference form: a plain stack of depthwise 3x3 and pointwise 1x1 convolutions with ReLU.

P. K. A. Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone", arXiv:2206.04040, CVPR 2023:
Section 3.1 (at inference each block's over-parameterised branches -- k conv-BN branches, a 1x1 scale branch and
a BN skip -- are one convolution with bias, so a "block" is a depthwise 3x3 conv + ReLU followed by a pointwise
1x1 conv + ReLU), Table 7 (a 3x3 stride-2 stem conv to min(64, 64 a1) channels; stages of 2, 8, 10 and 1
blocks at widths 64 a1, 128 a2, 256 a3, 512 a4, each stage's first block strided; global pool and a linear
head; width multipliers S0 0.75/1/1/2, S1 1.5/1.5/2/2.5, S2 1.5/2/2.5/4, S3 2/2.5/3/4, S4 3/3.5/3.5/4) and
Section 3.2 (S4 gates the last 5 blocks of the 10-block stage and the last stage with squeeze-excite, reduction
1/16, after both convolutions of a block). The layout matches the authors' implementation (apple/ml-mobileone,
``mobileone.py``, ``MobileOne._make_stage``). Parameter counts (inference form): the paper's Table 8 and the
repository README (2.1, 4.8, 7.8, 10.1, 14.8 M).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ReferenceModel, SqueezeExcite

__all__ = ["MobileOne", "MODELS"]


_SE_BLOCKS = (0, 0, 5, 1)
"""Blocks per stage, counted from the stage's end, that S4 gates with squeeze-excite."""


class _RepConv(nn.Module):
    """One re-parameterised MobileOne layer: conv with bias, optional squeeze-excite, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *, groups: int, se: bool,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=True, **dd)
        self.se = SqueezeExcite(out_channels, int(out_channels * 0.0625), **dd) if se else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.conv(x)))


class MobileOne(nn.Module):
    """Inference-form MobileOne with stage ``widths`` multipliers; ``se`` gates the blocks Section 3.2 names."""

    def __init__(self, *, widths: tuple[float, float, float, float], se: bool = False, num_classes: int = 1000,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        channels = min(64, int(64 * widths[0]))
        layers: list[nn.Module] = [_RepConv(3, channels, 3, 2, groups=1, se=False, **dd)]
        for depth, base, multiplier, se_blocks in zip((2, 8, 10, 1), (64, 128, 256, 512), widths, _SE_BLOCKS,
                                                      strict=True):
            width = int(base * multiplier)
            for index in range(depth):
                use_se = se and index >= depth - se_blocks
                stride = 2 if index == 0 else 1
                layers.append(_RepConv(channels, channels, 3, stride, groups=channels, se=use_se, **dd))
                layers.append(_RepConv(channels, width, 1, 1, groups=1, se=use_se, **dd))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Vasu et al. arXiv:2206.04040 Table 7, Sec. 3.1-3.2; Table 8 / apple/ml-mobileone README (params)"
_VARIANTS: dict[str, tuple[tuple[float, float, float, float], bool, float]] = {
    "s0": ((0.75, 1.0, 1.0, 2.0), False, 2.1),
    "s1": ((1.5, 1.5, 2.0, 2.5), False, 4.8),
    "s2": ((1.5, 2.0, 2.5, 4.0), False, 7.8),
    "s3": ((2.0, 2.5, 3.0, 4.0), False, 10.1),
    "s4": ((3.0, 3.5, 3.5, 4.0), True, 14.8),
}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"mobileone_{name}", "mobileone", partial(MobileOne, widths=widths, se=se), 224, params_m, _SOURCE)
    for name, (widths, se, params_m) in _VARIANTS.items()
)
