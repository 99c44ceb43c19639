"""VGG-11/13/16/19 (configurations A, B, D, E).

K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
arXiv:1409.1556, Table 1 (3x3 convs with ReLU, no BN, five 2x2 max pools; FC-4096, FC-4096, FC-1000 on
the 7x7x512 map) and Table 2 (parameters: 133M, 133M, 138M, 144M). TF-slim's vgg_16 / vgg_19 (the Vitis AI
zoo's tf_vgg16 / tf_vgg19) run the FC layers as 7x7 and 1x1 convolutions: the same weights and MACs.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["VGG", "MODELS"]

# Convolutions per stage (widths 64, 128, 256, 512, 512), Table 1.
_CONFIGS: dict[int, tuple[int, ...]] = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
                                        19: (2, 2, 4, 4, 4)}


class VGG(nn.Module):
    """VGG with ``convs[i]`` 3x3 convolutions in stage ``i``."""

    def __init__(self, *, convs: tuple[int, ...], num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = []
        channels = 3
        for count, width in zip(convs, (64, 128, 256, 512, 512), strict=True):
            for _ in range(count):
                layers += [nn.Conv2d(channels, width, 3, padding=1, **dd), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096, **dd), nn.ReLU(),
                                        nn.Linear(4096, 4096, **dd), nn.ReLU(), nn.Linear(4096, num_classes, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


_SOURCE = "Simonyan & Zisserman arXiv:1409.1556 Tables 1-2"
_PARAMS = {11: 132.86, 13: 133.05, 16: 138.36, 19: 143.67}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"vgg{depth}", "vgg", partial(VGG, convs=convs), 224, _PARAMS[depth], _SOURCE)
    for depth, convs in _CONFIGS.items()
)
