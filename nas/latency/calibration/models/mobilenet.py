"""MobileNetV1 and MobileNetV2 at any width multiplier.

* MobileNetV1: A. Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications", arXiv:1704.04861, Table 1 (3x3/2 conv of 32, thirteen depthwise-separable layers,
  1024 channels, average pool, FC). The width multiplier scales every layer, ``int(channels * width)``
  (Section 3.3), as TF-slim and PaddleClas build it.
* MobileNetV2: M. Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
  arXiv:1801.04381, Table 2 (stem 32; inverted residuals t/c/n/s; 1x1 conv to 1280; pool; FC) and
  Section 6.1 (for multipliers above 1 the last 1x1 conv widens too, below 1 it keeps 1280).
  Channel rounding: ``round8`` to a multiple of 8 (the paper's TF code, ``make_divisible``);
  ``floor`` is ``int(channels * width)`` as PaddleClas's MobileNetV2 builds it (its table's rows).

Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/MobileNetV1.md and MobileNetV2.md (the
figures in predictors/calibration/v100.csv); TF-slim mobilenet_v2 README for the 1.4 model (6.06M).
Width 1.0 MobileNetV2 is the zoo point ``mobilenetv2_100``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel, make_divisible

__all__ = ["MobileNetV1", "InvertedResidual", "MobileNetV2", "MODELS"]

# (output channels, stride) of MobileNetV1's depthwise-separable layers, Table 1.
_V1_LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2, Table 2.
_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier ``width``."""

    def __init__(self, *, width: float = 1.0, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        channels = int(32 * width)
        layers: list[nn.Module] = [ConvBnAct(3, channels, 3, 2, **dd)]
        for out, stride in _V1_LAYERS:
            out = int(out * width)
            layers += [ConvBnAct(channels, channels, 3, stride, groups=channels, **dd),
                       ConvBnAct(channels, out, 1, **dd)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear project; identity shortcut when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, *,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = in_channels * expansion
        self.expand = ConvBnAct(in_channels, hidden, 1, act="relu6", **dd) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act="relu6", **dd)
        self.project = ConvBnAct(hidden, out_channels, 1, act="none", **dd)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier ``width`` and channel ``rounding`` (``round8`` or ``floor``)."""

    def __init__(self, *, width: float = 1.0, rounding: Literal["round8", "floor"] = "round8",
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)

        def scale(channels: int) -> int:
            return make_divisible(channels * width, 8) if rounding == "round8" else int(channels * width)

        channels = scale(32)
        layers: list[nn.Module] = [ConvBnAct(3, channels, 3, 2, act="relu6", **dd)]
        for expansion, out, repeats, stride in _V2_STAGES:
            out = scale(out)
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if index == 0 else 1, expansion, **dd))
                channels = out
        last = scale(1280) if width > 1.0 else 1280
        layers.append(ConvBnAct(channels, last, 1, act="relu6", **dd))
        self.features = nn.Sequential(*layers)
        self.head = Classifier(last, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_V1_SOURCE = "Howard et al. arXiv:1704.04861 Table 1; PaddleClas docs/zh_CN/models/ImageNet1k/MobileNetV1.md (params)"
_V2_SOURCE = "Sandler et al. arXiv:1801.04381 Table 2; PaddleClas docs/zh_CN/models/ImageNet1k/MobileNetV2.md (params)"


def _v1(name: str, width: float, params_m: float | None) -> ReferenceModel:
    return ReferenceModel(name, "mobilenetv1", partial(MobileNetV1, width=width), 224, params_m, _V1_SOURCE)


def _v2(name: str, width: float, params_m: float | None, rounding: Literal["round8", "floor"] = "floor",
        source: str = _V2_SOURCE) -> ReferenceModel:
    return ReferenceModel(name, "mobilenetv2", partial(MobileNetV2, width=width, rounding=rounding), 224, params_m,
                          source)


MODELS: tuple[ReferenceModel, ...] = (
    _v1("mobilenetv1_025", 0.25, 0.46),
    _v1("mobilenetv1_050", 0.5, 1.31),
    _v1("mobilenetv1_075", 0.75, 2.55),
    _v1("mobilenetv1_100", 1.0, 4.19),
    _v2("mobilenetv2_025", 0.25, 1.50),
    _v2("mobilenetv2_050", 0.5, 1.93),
    _v2("mobilenetv2_075", 0.75, 2.58),
    _v2("mobilenetv2_150", 1.5, 6.76),
    _v2("mobilenetv2_200", 2.0, 11.13),
    _v2("mobilenetv2_140", 1.4, 6.06, "round8",
        "Sandler et al. arXiv:1801.04381 Table 2 and Table 6 (1.4 multiplier: 6.9M incl. the 1001-class FC of TF); "
        "TF-slim mobilenet_v2_1.4_224"),
)
