"""Res2Net: ResNet bottlenecks whose 3x3 conv is a hierarchy of ``scale`` smaller 3x3 convs.

S. Gao et al., "Res2Net: A New Multi-scale Backbone Architecture", arXiv:1904.01169, Figure 2 and
Section 3.1: the 1x1 conv's output (``scale`` groups of ``width`` channels, ``width = planes * base_width /
64``) is split; group 1 passes through, group i > 1 is convolved after adding the previous group's output;
the groups are concatenated and projected by a 1x1 conv. In the first block of a stage the groups are
convolved independently (with the stage's stride) and the pass-through group is average-pooled. Depths
as ResNet-50/101 and PaddleClas's ResNet-200 (3, 12, 48, 3); the ``vd`` variants use the deep stem and
average-pool shortcut of T. He et al., arXiv:1812.01187, Figure 2. Parameter counts: PaddleClas
docs/en/models/SEResNext_and_Res2Net_en.md (25.70M for 26w_4s, the authors' figure too). That table swaps
the parameters and FLOPs of Res2Net50_14w_8s and Res2Net50_vd_26w_4s: the built 14w_8s has 25.06M
parameters and 8.36 GFLOPs (the figures it gives the vd model), the built vd 25.72M and 8.99 GFLOPs (the
figures it gives 14w_8s); both differ from the swapped figures by 2.6%, inside the 3% check.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel
from nas.latency.calibration.models.resnet import Shortcut, make_shortcut

__all__ = ["Res2Bottleneck", "Res2Net", "MODELS"]


class Res2Bottleneck(nn.Module):
    """1x1 conv to ``scale x width``, hierarchical 3x3 convs over the groups, 1x1 conv to ``4 x planes``."""

    def __init__(self, in_channels: int, planes: int, stride: int, *, base_width: int, scale: int, first: bool,
                 shortcut: Shortcut = "conv", device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        width = planes * base_width // 64
        out_channels = planes * 4
        self.width, self.first = width, first
        self.reduce = ConvBnAct(in_channels, width * scale, 1, **dd)
        self.convs = nn.ModuleList(ConvBnAct(width, width, 3, stride, **dd) for _ in range(scale - 1))
        self.pool = nn.AvgPool2d(3, stride, 1) if first else nn.Identity()
        self.expand = ConvBnAct(width * scale, out_channels, 1, act="none", **dd)
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut, dd)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.reduce(x).split(self.width, dim=1)
        outputs: list[torch.Tensor] = []
        previous: torch.Tensor | None = None
        for group, conv in zip(groups, self.convs, strict=False):  # the last group passes through
            previous = conv(group if self.first or previous is None else group + previous)
            outputs.append(previous)
        outputs.append(self.pool(groups[-1]))
        return self.act(self.expand(torch.cat(outputs, dim=1)) + self.shortcut(x))


class Res2Net(nn.Module):
    """Res2Net with per-stage ``depths``, ``base_width`` and ``scale``; ``vd`` for the deep stem and shortcut."""

    def __init__(self, *, depths: tuple[int, ...], base_width: int, scale: int, vd: bool = False,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if vd:
            stem: list[nn.Module] = [ConvBnAct(3, 32, 3, 2, **dd), ConvBnAct(32, 32, 3, **dd),
                                     ConvBnAct(32, 64, 3, **dd)]
        else:
            stem = [ConvBnAct(3, 64, 7, 2, **dd)]
        layers: list[nn.Module] = [*stem, nn.MaxPool2d(3, 2, 1)]
        channels = 64
        for index, depth in enumerate(depths):
            planes = 64 * 2 ** index
            for unit in range(depth):
                layers.append(Res2Bottleneck(channels, planes, 2 if unit == 0 and index > 0 else 1,
                                             base_width=base_width, scale=scale, first=unit == 0,
                                             shortcut="avgpool_conv" if vd else "conv", **dd))
                channels = planes * 4
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Gao et al. arXiv:1904.01169 Fig. 2; PaddleClas docs/en/models/SEResNext_and_Res2Net_en.md (params)"
_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 200: (3, 12, 48, 3)}


def _entry(name: str, depth: int, base_width: int, scale: int, vd: bool, params_m: float | None) -> ReferenceModel:
    factory = partial(Res2Net, depths=_DEPTHS[depth], base_width=base_width, scale=scale, vd=vd)
    return ReferenceModel(name, "res2net", factory, 224, params_m, _SOURCE)


MODELS: tuple[ReferenceModel, ...] = (
    _entry("res2net50_26w_4s", 50, 26, 4, False, 25.70),
    _entry("res2net50_14w_8s", 50, 14, 8, False, 25.06),
    _entry("res2net50_vd_26w_4s", 50, 26, 4, True, None),
    _entry("res2net101_vd_26w_4s", 101, 26, 4, True, 45.22),
    _entry("res2net200_vd_26w_4s", 200, 26, 4, True, 76.21),
)
