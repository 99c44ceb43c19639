"""EfficientNet-B0 to B7.

M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
arXiv:1905.11946: Table 1 (the B0 baseline: stem 3x3/2 conv of 32; seven MBConv stages with expansion,
kernel, channels, layers, stride; 1x1 conv to 1280, pooling, FC) and Section 3.3 / the official
``efficientnet_builder.py`` coefficients (width, depth, resolution): B0 (1.0, 1.0, 224), B1 (1.0, 1.1, 240),
B2 (1.1, 1.2, 260), B3 (1.2, 1.4, 300), B4 (1.4, 1.8, 380), B5 (1.6, 2.2, 456), B6 (1.8, 2.6, 528),
B7 (2.0, 3.1, 600). Channels scale by the width coefficient rounded to a multiple of 8 (never below
90%), layers by ``ceil(depth * n)``. MBConv blocks use SiLU (swish) and squeeze-and-excite reducing
to a quarter of the block's *input* channels with a sigmoid gate.

Parameter counts: the paper's Table 2 (5.3M, 7.8M, 9.2M, 12M, 19M, 30M, 43M, 66M).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel, make_divisible
from nas.latency.calibration.models.mobilenetv3 import MBConv

__all__ = ["EfficientNet", "MODELS"]

# (expansion, kernel, output channels, layers, stride) of the B0 stages, Table 1.
_B0: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
    (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1),
)


class EfficientNet(nn.Module):
    """EfficientNet at width coefficient ``width`` and depth coefficient ``depth``."""

    def __init__(self, *, width: float, depth: float, num_classes: int = 1000, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        channels = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBnAct(3, channels, 3, 2, act="silu", **dd)]
        for expansion, kernel, out, repeats, stride in _B0:
            out = make_divisible(out * width)
            for index in range(math.ceil(depth * repeats)):
                se = max(1, int(channels * 0.25))
                layers.append(MBConv(channels, channels * expansion, out, kernel, stride if index == 0 else 1,
                                     act="silu", se_channels=se, se_act="silu", se_gate="sigmoid", **dd))
                channels = out
        last = make_divisible(1280 * width)
        layers.append(ConvBnAct(channels, last, 1, act="silu", **dd))
        self.features = nn.Sequential(*layers)
        self.head = Classifier(last, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Tan & Le arXiv:1905.11946 Table 1 (B0), compound coefficients, Table 2 (params)"
_VARIANTS: tuple[tuple[float, float, int, float], ...] = (
    (1.0, 1.0, 224, 5.3), (1.0, 1.1, 240, 7.8), (1.1, 1.2, 260, 9.2), (1.2, 1.4, 300, 12.0),
    (1.4, 1.8, 380, 19.0), (1.6, 2.2, 456, 30.0), (1.8, 2.6, 528, 43.0), (2.0, 3.1, 600, 66.0),
)

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"efficientnet_b{index}", "efficientnet", partial(EfficientNet, width=width, depth=depth),
                   resolution, params_m, _SOURCE)
    for index, (width, depth, resolution, params_m) in enumerate(_VARIANTS)
)
