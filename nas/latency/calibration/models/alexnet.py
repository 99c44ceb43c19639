"""AlexNet in its three published forms: single-tower, two-tower (BVLC) and CaffeNet.

* A. Krizhevsky, I. Sutskever, G. Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks" (NeurIPS 2012), Section 3 and Figure 2: five convs (96 11x11/4, 256 5x5, 384, 384, 256 3x3),
  conv 2, 4 and 5 split over two GPUs (groups of 2), local response normalisation after conv 1 and 2,
  overlapping 3x3/2 max pools, FC-4096, FC-4096, FC-1000 (about 60M parameters). The BVLC Caffe model
  (the ONNX model zoo's ``bvlc_alexnet``) keeps the groups; CaffeNet (``bvlc_reference_caffenet``) pools
  before normalising.
* Single-tower: A. Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
  arXiv:1404.5997, Section 4 (64, 192, 384, 256, 256 channels, no groups, no LRN), as PaddleClas and
  torchvision build AlexNet (61.1M parameters, PaddleClas docs model_list.md / Others).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["AlexNet", "MODELS"]


class AlexNet(nn.Module):
    """AlexNet with conv ``widths``; ``two_tower`` adds the groups of 2 and LRN (``lrn_first``: LRN then pool)."""

    def __init__(self, *, widths: tuple[int, int, int, int, int], two_tower: bool = False, lrn_first: bool = True,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        groups = 2 if two_tower else 1
        c1, c2, c3, c4, c5 = widths

        def norm_pool() -> list[nn.Module]:
            if not two_tower:
                return [nn.MaxPool2d(3, 2)]
            lrn = nn.LocalResponseNorm(5, 1e-4, 0.75)
            return [lrn, nn.MaxPool2d(3, 2)] if lrn_first else [nn.MaxPool2d(3, 2), lrn]

        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, 4, 0 if two_tower else 2, **dd), nn.ReLU(), *norm_pool(),
            nn.Conv2d(c1, c2, 5, padding=2, groups=groups, **dd), nn.ReLU(), *norm_pool(),
            nn.Conv2d(c2, c3, 3, padding=1, **dd), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1, groups=groups, **dd), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1, groups=groups, **dd), nn.ReLU(), nn.MaxPool2d(3, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(nn.Linear(c5 * 36, 4096, **dd), nn.ReLU(), nn.Linear(4096, 4096, **dd),
                                        nn.ReLU(), nn.Linear(4096, num_classes, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


_TWO_TOWER = (96, 256, 384, 384, 256)
_PAPER = "Krizhevsky et al. NeurIPS 2012 Sec. 3, Fig. 2"

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("alexnet", "alexnet", partial(AlexNet, widths=(64, 192, 384, 256, 256)), 224, 61.10,
                   "Krizhevsky arXiv:1404.5997 Sec. 4; PaddleClas docs (61.09M)"),
    ReferenceModel("alexnet_grouped", "alexnet", partial(AlexNet, widths=_TWO_TOWER, two_tower=True), 227, 60.97,
                   f"{_PAPER}; BVLC Caffe bvlc_alexnet (60,965,224 parameters)"),
    ReferenceModel("caffenet", "alexnet", partial(AlexNet, widths=_TWO_TOWER, two_tower=True, lrn_first=False), 227,
                   60.97, f"{_PAPER}; BVLC Caffe bvlc_reference_caffenet (pool before LRN)"),
)
