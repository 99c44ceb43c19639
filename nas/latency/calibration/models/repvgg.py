"""RepVGG in its deploy (inference) form: plain stacks of 3x3 convolutions with bias and ReLU.

X. Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", arXiv:2101.03697: Section 3.3 (after
structural re-parameterisation each training-time block -- 3x3 conv-BN, 1x1 conv-BN and identity-BN
branches -- is one 3x3 conv with bias), Table 2 (five stages of 1, 2/4, 4/6, 14/16, 1 layers for the A/B
series, widths min(64, 64a), 64a, 128a, 256a, 512b, the first layer of each stage strided) and Section 4.1
(the g2/g4 variants use 2 or 4 groups in layers 2, 4, ..., 26, counting from the first layer of stage 2 as
layer 1; a, b: A0 0.75/2.5, A1 1/2.5, A2 1.5/2.75, B0 1/2.5, B1 2/4, B2 2.5/5, B3 3/5).
Parameter counts (inference-time): the paper's Table 4.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel

__all__ = ["RepVGG", "MODELS"]


class RepVGG(nn.Module):
    """Deploy-form RepVGG with stage ``depths``, multipliers ``a`` and ``b``, and ``groups`` in the even layers."""

    def __init__(self, *, depths: tuple[int, ...], a: float, b: float, groups: int = 1, num_classes: int = 1000,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        widths = (min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b))
        layers: list[nn.Module] = []
        channels, index = 3, 0
        for depth, width in zip(depths, widths, strict=True):
            for unit in range(depth):
                grouped = index > 0 and index % 2 == 0 and index <= 26
                layers.append(ConvBnAct(channels, width, 3, 2 if unit == 0 else 1, groups=groups if grouped else 1,
                                        bias=True, norm=False, **dd))
                channels, index = width, index + 1
        self.features = nn.Sequential(*layers)
        self.head = Classifier(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = "Ding et al. arXiv:2101.03697 Table 2, Sec. 4.1; Table 4 (inference-time params)"
_A, _B = (1, 2, 4, 14, 1), (1, 4, 6, 16, 1)
_VARIANTS: dict[str, tuple[tuple[int, ...], float, float, int, float]] = {
    "a0": (_A, 0.75, 2.5, 1, 8.30), "a1": (_A, 1.0, 2.5, 1, 12.78), "a2": (_A, 1.5, 2.75, 1, 25.49),
    "b0": (_B, 1.0, 2.5, 1, 14.33), "b1": (_B, 2.0, 4.0, 1, 51.82), "b1g2": (_B, 2.0, 4.0, 2, 41.36),
    "b1g4": (_B, 2.0, 4.0, 4, 36.12), "b2": (_B, 2.5, 5.0, 1, 80.31), "b2g4": (_B, 2.5, 5.0, 4, 55.77),
    "b3": (_B, 3.0, 5.0, 1, 110.96), "b3g4": (_B, 3.0, 5.0, 4, 75.62),
}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"repvgg_{name}", "repvgg", partial(RepVGG, depths=depths, a=a, b=b, groups=groups), 224,
                   params_m, _SOURCE)
    for name, (depths, a, b, groups, params_m) in _VARIANTS.items()
)
