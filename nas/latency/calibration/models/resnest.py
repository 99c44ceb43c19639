"""ResNeSt: ResNet-D bottlenecks whose 3x3 conv is a split-attention conv.

H. Zhang et al., "ResNeSt: Split-Attention Networks", arXiv:2004.08955: Figure 2 / Section 3 (the
split-attention conv: a grouped 3x3 conv making ``radix`` splits of ``width`` channels, BN, ReLU; the splits
summed, globally pooled, a 1x1 conv to ``max(radix * width / 4, 32)`` with BN and ReLU, a 1x1 conv back to
``radix * width``, a softmax over the splits (a sigmoid when radix is 1), and the attention-weighted sum)
and Section 5.1 (deep stem of three 3x3 convs, average-pool "down" shortcuts, a 3x3/2 average pool for the
strided blocks instead of a strided conv: after the split-attention conv, or before it in the "fast"
models). ResNeSt-50: radix 2, stem width 32; ResNeSt-101: stem width 64, 256 px input; ResNeSt-50-fast
1s1x64d: radix 1, pooling first. Parameter counts: the authors' zhanghang1989/ResNeSt README (27.5M, 48.3M)
and PaddleClas docs/zh_CN/models/ImageNet1k/ResNeSt.md (26.3M for the fast model).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel
from nas.latency.calibration.models.resnet import make_shortcut

__all__ = ["SplitAttentionConv", "ResNeStBottleneck", "ResNeSt", "MODELS"]


class SplitAttentionConv(nn.Module):
    """Grouped 3x3 conv into ``radix`` splits, then attention over the splits (softmax, or sigmoid for radix 1)."""

    def __init__(self, channels: int, width: int, *, radix: int, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        inner = max(width * radix // 4, 32)
        self.radix, self.width = radix, width
        self.conv = ConvBnAct(channels, width * radix, 3, groups=radix, **dd)
        self.fc1 = ConvBnAct(width, inner, 1, bias=True, **dd)
        self.fc2 = nn.Conv2d(inner, width * radix, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        batch = x.shape[0]
        splits = x.view(batch, self.radix, self.width, *x.shape[2:])
        gate = self.fc2(self.fc1(splits.sum(1).mean((2, 3), keepdim=True)))
        if self.radix == 1:
            return x * gate.sigmoid()
        weights = gate.view(batch, self.radix, self.width, 1, 1).softmax(dim=1)
        return (splits * weights).sum(1)


class ResNeStBottleneck(nn.Module):
    """1x1 conv, split-attention 3x3 conv (with a 3x3/2 average pool for strided blocks), 1x1 conv to 4 x planes."""

    def __init__(self, in_channels: int, planes: int, stride: int, *, radix: int, pool_first: bool,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        out_channels = planes * 4
        pool: nn.Module = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.reduce = ConvBnAct(in_channels, planes, 1, **dd)
        self.pool_before = pool if pool_first else nn.Identity()
        self.split_attention = SplitAttentionConv(planes, planes, radix=radix, **dd)
        self.pool_after = nn.Identity() if pool_first else pool
        self.expand = ConvBnAct(planes, out_channels, 1, act="none", **dd)
        self.shortcut = make_shortcut(in_channels, out_channels, stride, "avgpool_conv", dd)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool_after(self.split_attention(self.pool_before(self.reduce(x))))
        return self.act(self.expand(out) + self.shortcut(x))


class ResNeSt(nn.Module):
    """ResNeSt with per-stage ``depths``, ``radix``, deep-stem width ``stem_width``."""

    def __init__(self, *, depths: tuple[int, ...], radix: int, stem_width: int, pool_first: bool = False,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, stem_width, 3, 2, **dd), ConvBnAct(stem_width, stem_width, 3, **dd),
                                   ConvBnAct(stem_width, 2 * stem_width, 3, **dd), nn.MaxPool2d(3, 2, 1)]
        channels = 2 * stem_width
        for index, depth in enumerate(depths):
            planes = 64 * 2 ** index
            for unit in range(depth):
                layers.append(ResNeStBottleneck(channels, planes, 2 if unit == 0 and index > 0 else 1, radix=radix,
                                                pool_first=pool_first, **dd))
                channels = planes * 4
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Zhang et al. arXiv:2004.08955 Fig. 2, Sec. 5.1; zhanghang1989/ResNeSt README (params)"

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("resnest50", "resnest", partial(ResNeSt, depths=(3, 4, 6, 3), radix=2, stem_width=32), 224, 27.5,
                   _SOURCE),
    ReferenceModel("resnest50_fast_1s1x64d", "resnest",
                   partial(ResNeSt, depths=(3, 4, 6, 3), radix=1, stem_width=32, pool_first=True), 224, 26.3,
                   f"{_SOURCE}; PaddleClas docs/zh_CN/models/ImageNet1k/ResNeSt.md (26.3M)"),
    ReferenceModel("resnest101", "resnest", partial(ResNeSt, depths=(3, 4, 23, 3), radix=2, stem_width=64), 256,
                   48.3, _SOURCE),
)
