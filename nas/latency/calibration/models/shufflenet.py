"""ShuffleNetV2 at widths 0.25 to 2.0, and PaddleClas's swish variant.

N. Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design",
arXiv:1807.11164: Figure 3(c)/(d) (the basic unit: channel split, 1x1 conv, 3x3 depthwise conv, 1x1 conv
on one half, concatenation, channel shuffle; the stride-2 unit: both branches convolve, the left one a
3x3 depthwise + 1x1 conv) and Table 5 (stem 3x3/2 conv of 24 and 3x3/2 max pool; stages of 4, 8, 4
units; 1x1 conv to 1024 (2048 at 2.0x); pooling; FC; output channels 48/96/192 at 0.5x,
116/232/464 at 1.0x, 176/352/704 at 1.5x, 244/488/976 at 2.0x).

PaddleClas's 0.25x and 0.33x models (stage widths 24/48/96 and 32/64/128, a 512-wide last conv) and its
2.0x model (224/488/976) follow ppcls/arch/backbone/model_zoo/shufflenet_v2.py; the swish variant
replaces every ReLU by swish. Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/ShuffleNetV2.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel

__all__ = ["ShuffleUnit", "ShuffleNetV2", "MODELS"]


def _shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: split (stride 1) or two convolving branches (stride 2), concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, act: str = "relu",
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        half = out_channels // 2
        branch_in = in_channels if stride > 1 else in_channels // 2
        self.stride = stride
        self.branch = nn.Sequential(
            ConvBnAct(branch_in, half, 1, act=act, **dd),
            ConvBnAct(half, half, 3, stride, groups=half, act="none", **dd),
            ConvBnAct(half, half, 1, act=act, **dd))
        self.left: nn.Module = nn.Identity()
        if stride > 1:
            self.left = nn.Sequential(
                ConvBnAct(in_channels, in_channels, 3, stride, groups=in_channels, act="none", **dd),
                ConvBnAct(in_channels, half, 1, act=act, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            left, right = x, x
        else:
            left, right = x.chunk(2, dim=1)
        return _shuffle(torch.cat((self.left(left), self.branch(right)), dim=1))


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with stage widths ``widths`` (3 stages) and last conv ``last``."""

    def __init__(self, *, widths: tuple[int, int, int], last: int = 1024, act: str = "relu",
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, 24, 3, 2, act=act, **dd), nn.MaxPool2d(3, 2, 1)]
        channels = 24
        for width, repeats in zip(widths, (4, 8, 4), strict=True):
            for index in range(repeats):
                layers.append(ShuffleUnit(channels, width, 2 if index == 0 else 1, act=act, **dd))
                channels = width
        layers.append(ConvBnAct(channels, last, 1, act=act, **dd))
        self.features = nn.Sequential(*layers)
        self.head = Classifier(last, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Ma et al. arXiv:1807.11164 Fig. 3, Table 5; PaddleClas docs/zh_CN/models/ImageNet1k/ShuffleNetV2.md"


def _entry(name: str, widths: tuple[int, int, int], params_m: float | None, last: int = 1024,
           act: str = "relu") -> ReferenceModel:
    return ReferenceModel(name, "shufflenetv2", partial(ShuffleNetV2, widths=widths, last=last, act=act), 224,
                          params_m, _SOURCE)


MODELS: tuple[ReferenceModel, ...] = (
    _entry("shufflenetv2_025", (24, 48, 96), 0.60, last=512),
    _entry("shufflenetv2_033", (32, 64, 128), 0.64, last=512),
    _entry("shufflenetv2_050", (48, 96, 192), 1.36),
    _entry("shufflenetv2_100", (116, 232, 464), 2.26),
    _entry("shufflenetv2_150", (176, 352, 704), 3.47),
    _entry("shufflenetv2_200", (224, 488, 976), 7.32, last=2048),
    _entry("shufflenetv2_100_swish", (116, 232, 464), 2.26, act="silu"),
)
