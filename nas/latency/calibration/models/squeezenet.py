"""SqueezeNet 1.0 and 1.1.

F. Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size",
arXiv:1602.07360, Table 1 (SqueezeNet 1.0: 7x7/2 conv of 96, eight Fire modules with squeeze / expand-1x1
/ expand-3x3 widths, 3x3/2 max pools after conv1, fire4 and fire8, a 1x1 conv to 1000 classes, global
average pooling; 1.25M parameters). SqueezeNet 1.1 (the authors' repository, SqueezeNet_v1.1/README.md:
a 3x3/2 conv of 64 and the pools moved after conv1, fire3 and fire5; 2.4x fewer MACs, 1.24M parameters).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["Fire", "SqueezeNet", "MODELS"]

# (squeeze, expand 1x1, expand 3x3) of fire2..fire9, Table 1.
_FIRES: tuple[tuple[int, int, int], ...] = (
    (16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128), (48, 192, 192), (48, 192, 192), (64, 256, 256),
    (64, 256, 256),
)


class Fire(nn.Module):
    """1x1 squeeze conv, then 1x1 and 3x3 expand convs concatenated, all with ReLU."""

    def __init__(self, in_channels: int, squeeze: int, expand1: int, expand3: int, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.squeeze = nn.Sequential(nn.Conv2d(in_channels, squeeze, 1, **dd), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand1, 1, **dd), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand3, 3, padding=1, **dd), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.squeeze(x)
        return torch.cat((self.expand1(squeezed), self.expand3(squeezed)), dim=1)


class SqueezeNet(nn.Module):
    """SqueezeNet ``1.0`` or ``1.1``."""

    def __init__(self, *, version: str, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        stem = nn.Conv2d(3, 96, 7, 2, **dd) if version == "1.0" else nn.Conv2d(3, 64, 3, 2, **dd)
        pools_before = (0, 3, 7) if version == "1.0" else (0, 2, 4)  # max pools before these fire modules
        layers: list[nn.Module] = [stem, nn.ReLU()]
        channels = stem.out_channels
        for index, (squeeze, expand1, expand3) in enumerate(_FIRES):
            if index in pools_before:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            layers.append(Fire(channels, squeeze, expand1, expand3, **dd))
            channels = expand1 + expand3
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Conv2d(channels, num_classes, 1, **dd), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).mean((2, 3))


MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("squeezenet1_0", "squeezenet", partial(SqueezeNet, version="1.0"), 224, 1.25,
                   "Iandola et al. arXiv:1602.07360 Table 1"),
    ReferenceModel("squeezenet1_1", "squeezenet", partial(SqueezeNet, version="1.1"), 224, 1.24,
                   "Iandola et al. arXiv:1602.07360; forresti/SqueezeNet SqueezeNet_v1.1/README.md"),
)
