"""ResNet and its variants: v1/v1.5, the "Bag of Tricks" vc/vd stems and shortcuts, SE, pre-activation v2.

* ResNet: K. He et al., "Deep Residual Learning for Image Recognition", arXiv:1512.03385, Table 1
  (stage depths 18/34/50/101/152; basic and bottleneck blocks; 7x7 stem, 3x3 max pool). Stride in the
  3x3 conv of the bottleneck ("v1.5", as torchvision and PaddleClas build it) or in its first 1x1 ("v1",
  the paper's Caffe model). Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/ResNet_and_vd.md
  (the figures copied into predictors/calibration/v100.csv).
* vc / vd: T. He et al., "Bag of Tricks for Image Classification with CNNs", arXiv:1812.01187, Figure 2:
  ResNet-C replaces the 7x7 stem by three 3x3 convs (32, 32, 64); ResNet-D adds a 2x2 average pool
  before the strided projection shortcut. ResNet200_vd depths (3, 12, 48, 3) as PaddleClas builds it.
* SE: J. Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507, Table 1 (reduction 16, the
  gate on the residual branch before the addition).
* Pre-activation ResNet v2: K. He et al., "Identity Mappings in Deep Residual Networks",
  arXiv:1603.05027, Figure 4(e); as TF-slim's resnet_v2 builds it (the input size of the Vitis AI
  zoo's tf_resnetv2_*_299 models): the stride sits in the *last* unit of stages 1-3, a final
  batchnorm + ReLU follows the last stage. TF-slim's resnet_v1 uses the same last-unit stride.

The ResNeXt and SE-ResNeXt variants (same module, grouped 3x3 convs) are listed in ``resnext.py``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel, SqueezeExcite

__all__ = ["BasicBlock", "Bottleneck", "PreActBottleneck", "ResNet", "Shortcut", "make_shortcut", "MODELS"]

Stem = Literal["7x7", "deep"]
Shortcut = Literal["conv", "avgpool_conv"]


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: Shortcut, dd: dict[str, Any]) -> nn.Module:
    """The shortcut of a residual block: identity, 1x1 max-pool subsample, strided 1x1 projection, or ResNet-D."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if in_channels == out_channels:
        return nn.MaxPool2d(1, stride)  # TF-slim's subsample: a strided unit without projection
    if kind == "avgpool_conv" and stride > 1:
        return nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True),
                             ConvBnAct(in_channels, out_channels, 1, act="none", **dd))
    return ConvBnAct(in_channels, out_channels, 1, stride, act="none", **dd)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, *, shortcut: Shortcut = "conv",
                 se_reduction: int = 0, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.conv1 = ConvBnAct(in_channels, planes, 3, stride, **dd)
        self.conv2 = ConvBnAct(planes, planes, 3, act="none", **dd)
        self.se = SqueezeExcite(planes, planes // se_reduction, **dd) if se_reduction else nn.Identity()
        self.shortcut = make_shortcut(in_channels, planes, stride, shortcut, dd)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.conv2(self.conv1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (optionally grouped), 1x1 expand by 4; stride in the 3x3 or in the first 1x1."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, *, groups: int = 1, width: int | None = None,
                 shortcut: Shortcut = "conv", se_reduction: int = 0, stride_in_1x1: bool = False,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        width = planes if width is None else width
        out_channels = planes * self.expansion
        first, middle = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvBnAct(in_channels, width, 1, first, **dd)
        self.conv2 = ConvBnAct(width, width, 3, middle, groups=groups, **dd)
        self.conv3 = ConvBnAct(width, out_channels, 1, act="none", **dd)
        self.se = (SqueezeExcite(out_channels, out_channels // se_reduction, **dd) if se_reduction
                   else nn.Identity())
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut, dd)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.se(self.conv3(self.conv2(self.conv1(x)))) + self.shortcut(x))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (ResNet v2): BN-ReLU before each conv, identity addition after.

    As TF-slim builds it: the projection shortcut (first unit of a stage) reads the pre-activated input;
    a strided unit without projection subsamples the shortcut with a 1x1 max pool.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        out_channels = planes * self.expansion
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels, **dd), nn.ReLU())
        self.project = in_channels != out_channels
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, bias=True, **dd) if self.project
                         else nn.MaxPool2d(1, stride) if stride > 1 else nn.Identity())
        self.conv1 = ConvBnAct(in_channels, planes, 1, **dd)
        self.conv2 = ConvBnAct(planes, planes, 3, stride, **dd)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        shortcut = self.shortcut(pre if self.project else x)
        return shortcut + self.conv3(self.conv2(self.conv1(pre)))


class ResNet(nn.Module):
    """A ResNet of four stages (widths 64, 128, 256, 512 x expansion) on a stem that reduces 4x.

    Args:
        block: ``basic``, ``bottleneck`` or ``preact`` (pre-activation bottleneck, ResNet v2).
        depths: blocks per stage.
        stem: ``7x7`` (one 7x7/2 conv) or ``deep`` (three 3x3 convs, ResNet-C); both then max-pool 3x3/2.
        shortcut: ``conv`` (strided 1x1 projection) or ``avgpool_conv`` (2x2 average pool, then 1x1; ResNet-D).
        groups: groups of the bottleneck's 3x3 conv (ResNeXt cardinality).
        width_per_group: channels per group of the first stage's 3x3 conv (ResNeXt "d"); 64 for ResNet.
        se_reduction: squeeze-and-excitation reduction ratio; 0 for none.
        stride_in_1x1: put a bottleneck's stride in its first 1x1 conv (ResNet v1) instead of the 3x3.
        stride_last: put each stage's stride in its last unit (TF-slim) instead of its first; stage 4 keeps
            stride 1 and the stride of stage 1 moves into its last unit.
    """

    def __init__(self, *, block: Literal["basic", "bottleneck", "preact"], depths: tuple[int, ...],
                 stem: Stem = "7x7", shortcut: Shortcut = "conv", groups: int = 1, width_per_group: int = 64,
                 se_reduction: int = 0, stride_in_1x1: bool = False, stride_last: bool = False,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if stem == "deep":
            self.stem = nn.Sequential(ConvBnAct(3, 32, 3, 2, **dd), ConvBnAct(32, 32, 3, **dd),
                                      ConvBnAct(32, 64, 3, **dd), nn.MaxPool2d(3, 2, 1))
        elif block == "preact":
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=True, **dd), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(ConvBnAct(3, 64, 7, 2, **dd), nn.MaxPool2d(3, 2, 1))
        expansion = 1 if block == "basic" else 4
        layers: list[nn.Module] = []
        in_channels = 64
        for index, depth in enumerate(depths):
            planes = 64 * 2 ** index
            for unit in range(depth):
                if stride_last:
                    stride = 2 if unit == depth - 1 and index < len(depths) - 1 else 1
                else:
                    stride = 2 if unit == 0 and index > 0 else 1
                if block == "basic":
                    layers.append(BasicBlock(in_channels, planes, stride, shortcut=shortcut,
                                             se_reduction=se_reduction, **dd))
                elif block == "preact":
                    layers.append(PreActBottleneck(in_channels, planes, stride, **dd))
                else:
                    width = planes * width_per_group // 64 * groups
                    layers.append(Bottleneck(in_channels, planes, stride, groups=groups, width=width,
                                             shortcut=shortcut, se_reduction=se_reduction,
                                             stride_in_1x1=stride_in_1x1, **dd))
                in_channels = planes * expansion
        self.stages = nn.Sequential(*layers)
        self.post = (nn.Sequential(nn.BatchNorm2d(in_channels, **dd), nn.ReLU()) if block == "preact"
                     else nn.Identity())
        self.head = Classifier(in_channels, num_classes, **dd)
        self.num_features = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.post(self.stages(self.stem(x))))


_PADDLE = "PaddleClas docs/zh_CN/models/ImageNet1k/ResNet_and_vd.md (params)"
_PAPER = "He et al. arXiv:1512.03385 Table 1"
_VD = "He et al. arXiv:1812.01187 Fig. 2 (ResNet-C/D)"
_SE = "Hu et al. arXiv:1709.01507 Table 1; PaddleClas docs/en/models/SEResNext_and_Res2Net_en.md (params)"
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3),
           200: (3, 12, 48, 3)}


def _resnet(depth: int, **options: Any) -> partial[ResNet]:
    return partial(ResNet, block="basic" if depth < 50 else "bottleneck", depths=_DEPTHS[depth], **options)


def _entry(name: str, depth: int, params_m: float | None, source: str, resolution: int = 224,
           **options: Any) -> ReferenceModel:
    return ReferenceModel(name, "resnet", _resnet(depth, **options), resolution, params_m, source)


_VD_OPTIONS: dict[str, Any] = {"stem": "deep", "shortcut": "avgpool_conv"}

MODELS: tuple[ReferenceModel, ...] = (
    _entry("resnet18", 18, 11.69, f"{_PAPER}; {_PADDLE}"),
    _entry("resnet34", 34, 21.80, f"{_PAPER}; {_PADDLE}"),
    _entry("resnet50_v1", 50, 25.56, f"{_PAPER} (stride in the first 1x1, Caffe ResNet-50)", stride_in_1x1=True),
    _entry("resnet101", 101, 44.55, f"{_PAPER}; {_PADDLE}"),
    _entry("resnet101_v1", 101, 44.55, f"{_PAPER} (stride in the first 1x1, as Keras applications build it)",
           stride_in_1x1=True),
    _entry("resnet152", 152, 60.19, f"{_PAPER}; {_PADDLE}"),
    _entry("resnet18_vd", 18, 11.71, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("resnet34_vd", 34, 21.82, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("resnet50_vc", 50, 25.58, f"{_VD}; {_PADDLE}", stem="deep"),
    _entry("resnet50_vd", 50, 25.58, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("resnet101_vd", 101, 44.57, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("resnet152_vd", 152, 60.21, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("resnet200_vd", 200, 74.74, f"{_VD}; {_PADDLE}", **_VD_OPTIONS),
    _entry("se_resnet18_vd", 18, 11.80, f"{_VD}; {_SE}",
           se_reduction=16, **_VD_OPTIONS),
    _entry("se_resnet34_vd", 34, 21.98, f"{_VD}; {_SE}",
           se_reduction=16, **_VD_OPTIONS),
    _entry("se_resnet50_vd", 50, 28.09, f"{_VD}; {_SE}",
           se_reduction=16, **_VD_OPTIONS),
    _entry("resnet50_slim", 50, 25.56, "TF-slim nets/resnet_v1.py (stride in the last unit); "
           f"{_PAPER}", stride_last=True),
    _entry("resnet101_slim", 101, 44.55, f"TF-slim nets/resnet_v1.py; {_PAPER}", stride_last=True),
    _entry("resnet152_slim", 152, 60.19, f"TF-slim nets/resnet_v1.py; {_PAPER}", stride_last=True),
    ReferenceModel("resnetv2_50", "resnet", partial(ResNet, block="preact", depths=_DEPTHS[50], stride_last=True),
                   299, 25.57, "He et al. arXiv:1603.05027 Fig. 4(e); TF-slim nets/resnet_v2.py (25.6M)"),
    ReferenceModel("resnetv2_101", "resnet", partial(ResNet, block="preact", depths=_DEPTHS[101], stride_last=True),
                   299, 44.57, "He et al. arXiv:1603.05027; TF-slim nets/resnet_v2.py (44.6M)"),
    ReferenceModel("resnetv2_152", "resnet", partial(ResNet, block="preact", depths=_DEPTHS[152], stride_last=True),
                   299, 60.24, "He et al. arXiv:1603.05027; TF-slim nets/resnet_v2.py (60.2M)"),
)
