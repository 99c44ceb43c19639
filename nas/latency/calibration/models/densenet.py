"""DenseNet-121/161/169/201/264.

G. Huang et al., "Densely Connected Convolutional Networks", arXiv:1608.06993, Table 1 (DenseNet-BC:
7x7/2 conv and 3x3/2 max pool; four dense blocks of 6/12/24/16 (121), 6/12/32/32 (169), 6/12/48/32 (201),
6/12/64/48 (264) layers, each BN-ReLU-1x1 conv to 4k, BN-ReLU-3x3 conv to k channels, concatenated;
transitions BN-ReLU-1x1 conv halving the channels and 2x2 average pool; final BN-ReLU, pooling, FC),
growth rate k = 32. DenseNet-161: k = 48, 96 stem channels, blocks 6/12/36/24 (the authors' ImageNet
models, liuzhuang13/DenseNet README). Parameter counts: PaddleClas docs/zh_CN/models/ImageNet1k/DPN_DenseNet.md.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ReferenceModel

__all__ = ["DenseLayer", "DenseNet", "MODELS"]


def _bn_relu_conv(in_channels: int, out_channels: int, kernel: int, dd: dict[str, Any]) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(in_channels, **dd), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False, **dd))


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (4k), BN-ReLU-3x3 conv (k); the output is the input with the k new channels appended."""

    def __init__(self, in_channels: int, growth: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.bottleneck = _bn_relu_conv(in_channels, 4 * growth, 1, dd)
        self.conv = _bn_relu_conv(4 * growth, growth, 3, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(self.bottleneck(x))), dim=1)


class DenseNet(nn.Module):
    """DenseNet-BC with ``blocks`` layers per dense block, growth rate ``growth``, ``stem`` stem channels."""

    def __init__(self, *, blocks: tuple[int, ...], growth: int = 32, stem: int = 64, num_classes: int = 1000,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 7, 2, 3, bias=False, **dd), nn.BatchNorm2d(stem, **dd),
                                   nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        channels = stem
        for index, depth in enumerate(blocks):
            for _ in range(depth):
                layers.append(DenseLayer(channels, growth, **dd))
                channels += growth
            if index < len(blocks) - 1:
                layers += [_bn_relu_conv(channels, channels // 2, 1, dd), nn.AvgPool2d(2, 2)]
                channels //= 2
        layers += [nn.BatchNorm2d(channels, **dd), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Huang et al. arXiv:1608.06993 Table 1; PaddleClas docs/zh_CN/models/ImageNet1k/DPN_DenseNet.md (params)"

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("densenet121", "densenet", partial(DenseNet, blocks=(6, 12, 24, 16)), 224, 7.98, _SOURCE),
    ReferenceModel("densenet161", "densenet", partial(DenseNet, blocks=(6, 12, 36, 24), growth=48, stem=96), 224,
                   28.68, _SOURCE),
    ReferenceModel("densenet169", "densenet", partial(DenseNet, blocks=(6, 12, 32, 32)), 224, 14.15, _SOURCE),
    ReferenceModel("densenet201", "densenet", partial(DenseNet, blocks=(6, 12, 48, 32)), 224, 20.01, _SOURCE),
    ReferenceModel("densenet264", "densenet", partial(DenseNet, blocks=(6, 12, 64, 48)), 224, 33.37, _SOURCE),
)
