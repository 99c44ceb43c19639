"""ResNeXt and SE-ResNeXt: ResNet bottlenecks with grouped 3x3 convolutions.

* S. Xie et al., "Aggregated Residual Transformations for Deep Neural Networks", arXiv:1611.05431,
  Table 1 (ResNeXt-50 32x4d: cardinality 32, 4 channels per group in the first stage, doubling per stage).
* The weakly supervised 32x8d..32x48d models: D. Mahajan et al., "Exploring the Limits of Weakly
  Supervised Pretraining", arXiv:1805.00932 (ResNeXt-101 32xCd, Table 1 / Section 4).
* SE-ResNeXt: J. Hu et al., "Squeeze-and-Excitation Networks", arXiv:1709.01507, Table 1 (reduction 16).
* vd: T. He et al., arXiv:1812.01187, Figure 2 (deep stem, average-pool shortcut).

Parameter counts: torchvision's weights meta (ResNeXt50_32X4D 25,028,904; ResNeXt101_32X8D 88,791,336)
and the WSL-Images README (32x16d 193M, 32x32d 466M, 32x48d 829M). PaddleClas's figures
(docs/en/models/SEResNext_and_Res2Net_en.md, copied into predictors/calibration/v100.csv) omit the
grouped convolutions' weights (see ``select.PARAMS_EXCEPTIONS``), so they are not used as published
figures here; where no other source gives a figure the entry has none.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from nas.latency.calibration.models.base import ReferenceModel
from nas.latency.calibration.models.resnet import ResNet

__all__ = ["MODELS"]

_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_PADDLE = "Xie et al. arXiv:1611.05431 Table 1 (structure as PaddleClas builds its ResNeXt rows)"
_VD: dict[str, Any] = {"stem": "deep", "shortcut": "avgpool_conv"}


def _entry(name: str, depth: int, groups: int, width: int, params_m: float | None, source: str = _PADDLE,
           **options: Any) -> ReferenceModel:
    factory = partial(ResNet, block="bottleneck", depths=_DEPTHS[depth], groups=groups, width_per_group=width,
                      **options)
    return ReferenceModel(name, "resnext", factory, 224, params_m, source)


_WSL = "Mahajan et al. arXiv:1805.00932"
_TORCHVISION = "Xie et al. arXiv:1611.05431 Table 1; torchvision ResNeXt*_Weights meta (num_params)"
_SE = "Hu et al. arXiv:1709.01507 Table 1 (SE-ResNeXt-50/101, reduction 16)"

MODELS: tuple[ReferenceModel, ...] = (
    _entry("resnext50_32x4d", 50, 32, 4, 25.03, _TORCHVISION),
    _entry("resnext50_vd_32x4d", 50, 32, 4, None, **_VD),
    _entry("resnext50_64x4d", 50, 64, 4, None),
    _entry("resnext50_vd_64x4d", 50, 64, 4, None, **_VD),
    _entry("resnext101_32x4d", 101, 32, 4, None),
    _entry("resnext101_vd_32x4d", 101, 32, 4, None, **_VD),
    _entry("resnext101_64x4d", 101, 64, 4, 83.46, f"{_PADDLE}; timm resnext101_64x4d (83.46M)"),
    _entry("resnext101_vd_64x4d", 101, 64, 4, None, **_VD),
    _entry("resnext152_32x4d", 152, 32, 4, None),
    _entry("resnext152_vd_32x4d", 152, 32, 4, None, **_VD),
    _entry("resnext152_64x4d", 152, 64, 4, None),
    _entry("resnext152_vd_64x4d", 152, 64, 4, None, **_VD),
    _entry("resnext101_32x8d", 101, 32, 8, 88.79, _TORCHVISION),
    _entry("resnext101_32x16d", 101, 32, 16, 193.0, f"{_WSL}; facebookresearch/WSL-Images README (193M)"),
    _entry("resnext101_32x32d", 101, 32, 32, 466.0, f"{_WSL}; facebookresearch/WSL-Images README (466M)"),
    _entry("resnext101_32x48d", 101, 32, 48, 829.0, f"{_WSL}; facebookresearch/WSL-Images README (829M)"),
    _entry("se_resnext50_32x4d", 50, 32, 4, None, _SE, se_reduction=16),
    _entry("se_resnext50_vd_32x4d", 50, 32, 4, None, _SE, se_reduction=16, **_VD),
    _entry("se_resnext101_32x4d", 101, 32, 4, None, _SE, se_reduction=16),
)
