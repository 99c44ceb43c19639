"""What every reference model shares: the registry record and a few layers used by several families.

Reference models are the calibration tables' models that are not points of the
design space (ResNet, VGG, EfficientNet, ...), written as plain ``nn.Module``
trees from their papers' architecture tables so that :mod:`nas.cost` can trace
them. They are only ever traced (on ``meta``), never trained here, so they
carry no initialisation schemes, dropout or training-only branches: just the
inference graph with the published layer shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs

__all__ = ["ReferenceModel", "ConvBnAct", "SqueezeExcite", "make_divisible", "Classifier", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "hardsigmoid": nn.Hardsigmoid,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "none": nn.Identity,
}


@dataclass(frozen=True)
class ReferenceModel:
    """One named reference model.

    Attributes:
        name: registry name, e.g. ``resnet18``; distinct from every zoo name.
        family: architecture family, e.g. ``resnet`` (the unit of leave-one-family-out validation).
        factory: builds the module; takes keyword-only ``device`` and ``dtype``.
        resolution: the input resolution it is defined for (square images, 3 channels).
        params_m: published parameter count in millions, or ``None`` where no source gives one.
        source: where the structure and the parameter count come from (paper + table, or repo + file).
    """

    name: str
    family: str
    factory: Callable[..., nn.Module]
    resolution: int
    params_m: float | None
    source: str

    def build(self, *, device: Any = None, dtype: Any = None) -> nn.Module:
        """The module, on ``device`` (``"meta"`` for tracing) in ``dtype``."""
        return self.factory(device=device, dtype=dtype)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a scaled channel count to a multiple of ``divisor``, never more than 10% below ``value``.

    The rounding rule of the MobileNetV2/V3, EfficientNet, GhostNet and PP-LCNet width multipliers.
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBnAct(nn.Sequential):
    """``conv -> batchnorm -> activation``; the activation may be ``none``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, *,
                 groups: int = 1, act: str = "relu", padding: int | None = None, dilation: int = 1,
                 bias: bool = False, norm: bool = True, device: Any = None, dtype: Any = None):
        dd = factory_kwargs(device, dtype)
        pad = dilation * (kernel - 1) // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, pad, dilation=dilation, groups=groups, bias=bias,
                      **dd),
            nn.BatchNorm2d(out_channels, **dd) if norm else nn.Identity(),
            ACTIVATIONS[act](),
        )


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., arXiv:1709.01507): global pool, two 1x1 convs, channel gate."""

    def __init__(self, channels: int, reduced: int, *, act: str = "relu", gate: str = "sigmoid",
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.reduce = nn.Conv2d(channels, reduced, 1, **dd)
        self.act = ACTIVATIONS[act]()
        self.expand = nn.Conv2d(reduced, channels, 1, **dd)
        self.gate = ACTIVATIONS[gate]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(scale))))


class Classifier(nn.Module):
    """Global average pool, then a linear layer to ``num_classes`` (dropout omitted: inference graph)."""

    def __init__(self, in_features: int, num_classes: int = 1000, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes, **factory_kwargs(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))
