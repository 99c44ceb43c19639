"""The Inception family: GoogLeNet (v1), BN-Inception (v2), Inception-v3, Inception-v4, Inception-ResNet-v2.

* GoogLeNet: C. Szegedy et al., "Going Deeper with Convolutions", arXiv:1409.4842, Table 1 (per module the
  #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5 and pool-proj widths; 7x7/2 stem, LRN, 3x3 max pools,
  average pool, FC; 6.8M parameters without the auxiliary heads, which inference drops). As the BVLC Caffe
  model (``googlenet``: biases, no BN, LRN) and as TF-slim's ``inception_v1`` (``inception_v1``: BN instead
  of LRN and biases, a 3x3 conv in the "5x5" branch, a 2x2 max pool before stage 5; 6.6M parameters).
* BN-Inception / Inception-v2: S. Ioffe, C. Szegedy, "Batch Normalization", arXiv:1502.03167, Figure 5
  (the module widths; the 5x5 convs are two 3x3 convs), as TF-slim's ``inception_v2`` builds it: the stem's
  7x7 conv is depthwise-separable (depth multiplier 8), pooling branches average except in Mixed_5c (11.2M).
* Inception-v3: C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
  arXiv:1512.00567, Table 1 with Figures 5-7 (factorised 7x7 and 3x3 convolutions, grid reductions), as the
  TF release builds it (Mixed_5b..7c); 23.8M parameters without the auxiliary head.
* Inception-v4 and Inception-ResNet-v2: C. Szegedy et al., "Inception-v4, Inception-ResNet and the Impact
  of Residual Connections on Learning", arXiv:1602.07261, Figures 3-9 (v4: stem, 4 x Inception-A,
  Reduction-A with k, l, m, n = 192, 224, 256, 384, 7 x Inception-B, Reduction-B, 3 x Inception-C; 42.7M)
  and Figures 15-18 (Inception-ResNet-v2 blocks, scaled residuals), the latter as TF-slim's
  ``inception_resnet_v2`` builds it (a v3-like stem with Mixed_5b; 10 / 20 / 10 blocks; 55.8M).

All convolutions are followed by BN and ReLU unless noted (BN folds into the convolution at inference).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["Concat", "GoogLeNet", "InceptionV2", "InceptionV3", "InceptionV4", "InceptionResNetV2", "MODELS"]

Kernel = int | tuple[int, int]


def _conv(in_channels: int, out_channels: int, kernel: Kernel, stride: int = 1, *, valid: bool = False,
          norm: bool = True, dd: dict[str, Any]) -> nn.Sequential:
    """Conv (``same`` padding unless ``valid``), then BN and ReLU (``norm``) or bias and ReLU."""
    height, width = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (0, 0) if valid else (height // 2, width // 2)
    conv = nn.Conv2d(in_channels, out_channels, (height, width), stride, padding, bias=not norm, **dd)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels, eps=1e-3, **dd) if norm else nn.Identity(), nn.ReLU())


class Concat(nn.Module):
    """Runs every branch on the same input and concatenates the outputs along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _seq(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


# -- GoogLeNet ----------------------------------------------------------------------------------

# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) of 3a..5b, Table 1; None marks a max pool.
_GOOGLENET: tuple[tuple[int, int, int, int, int, int] | None, ...] = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), None,
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), None,
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)


class GoogLeNet(nn.Module):
    """GoogLeNet; ``slim`` selects TF-slim's variant (BN, 3x3 "5x5" branch, 2x2 last pool) over BVLC's."""

    def __init__(self, *, slim: bool, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        conv = partial(_conv, norm=slim, dd=dd)
        lrn: list[nn.Module] = [] if slim else [nn.LocalResponseNorm(5, 1e-4, 0.75)]
        layers: list[nn.Module] = [conv(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1), *lrn, conv(64, 64, 1), conv(64, 192, 3),
                                   *lrn, nn.MaxPool2d(3, 2, 1)]
        channels, pools = 192, 0
        for row in _GOOGLENET:
            if row is None:
                pools += 1
                layers.append(nn.MaxPool2d(2, 2) if slim and pools == 2 else nn.MaxPool2d(3, 2, 1))
                continue
            one, reduce3, three, reduce5, five, proj = row
            layers.append(Concat(
                conv(channels, one, 1),
                _seq(conv(channels, reduce3, 1), conv(reduce3, three, 3)),
                _seq(conv(channels, reduce5, 1), conv(reduce5, five, 3 if slim else 5)),
                _seq(nn.MaxPool2d(3, 1, 1), conv(channels, proj, 1))))
            channels = one + three + five + proj
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# -- BN-Inception (Inception-v2) ------------------------------------------------------------------

# (#1x1, #3x3 reduce, #3x3, #double-3x3 reduce, #double-3x3, pool proj, pool kind) per module, Figure 5;
# a stride-2 module has #1x1 = 0 and no pool proj (its pool branch is a strided max pool).
_V2: tuple[tuple[int, int, int, int, int, int, str], ...] = (
    (64, 64, 64, 64, 96, 32, "avg"), (64, 64, 96, 64, 96, 64, "avg"), (0, 128, 160, 64, 96, 0, "max"),
    (224, 64, 96, 96, 128, 128, "avg"), (192, 96, 128, 96, 128, 128, "avg"), (160, 128, 160, 128, 160, 96, "avg"),
    (96, 128, 192, 160, 192, 96, "avg"), (0, 128, 192, 192, 256, 0, "max"),
    (352, 192, 320, 160, 224, 128, "avg"), (352, 192, 320, 192, 224, 128, "max"),
)


class InceptionV2(nn.Module):
    """BN-Inception as TF-slim's ``inception_v2`` (separable 7x7 stem conv)."""

    def __init__(self, *, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        conv = partial(_conv, dd=dd)
        stem_depthwise = _seq(nn.Conv2d(3, 24, 7, 2, 3, groups=3, bias=False, **dd), conv(24, 64, 1))
        layers: list[nn.Module] = [stem_depthwise, nn.MaxPool2d(3, 2, 1), conv(64, 64, 1), conv(64, 192, 3),
                                   nn.MaxPool2d(3, 2, 1)]
        channels = 192
        for one, reduce3, three, reduce_d, double, proj, pool in _V2:
            stride = 2 if one == 0 else 1
            branches: list[nn.Module] = [] if one == 0 else [conv(channels, one, 1)]
            branches += [_seq(conv(channels, reduce3, 1), conv(reduce3, three, 3, stride)),
                         _seq(conv(channels, reduce_d, 1), conv(reduce_d, double, 3), conv(double, double, 3, stride))]
            pooling = nn.AvgPool2d(3, 1, 1, count_include_pad=False) if pool == "avg" else nn.MaxPool2d(3, stride, 1)
            branches.append(_seq(pooling, conv(channels, proj, 1)) if proj else pooling)
            layers.append(Concat(*branches))
            channels = one + three + double + (proj or channels)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# -- Inception-v3 ---------------------------------------------------------------------------------


def _v3_a(channels: int, pool: int, dd: dict[str, Any]) -> Concat:
    conv = partial(_conv, dd=dd)
    return Concat(conv(channels, 64, 1), _seq(conv(channels, 48, 1), conv(48, 64, 5)),
                  _seq(conv(channels, 64, 1), conv(64, 96, 3), conv(96, 96, 3)),
                  _seq(nn.AvgPool2d(3, 1, 1), conv(channels, pool, 1)))


def _v3_c(c7: int, dd: dict[str, Any]) -> Concat:
    conv = partial(_conv, dd=dd)
    return Concat(conv(768, 192, 1), _seq(conv(768, c7, 1), conv(c7, c7, (1, 7)), conv(c7, 192, (7, 1))),
                  _seq(conv(768, c7, 1), conv(c7, c7, (7, 1)), conv(c7, c7, (1, 7)), conv(c7, c7, (7, 1)),
                       conv(c7, 192, (1, 7))),
                  _seq(nn.AvgPool2d(3, 1, 1), conv(768, 192, 1)))


def _v3_e(channels: int, dd: dict[str, Any]) -> Concat:
    conv = partial(_conv, dd=dd)
    return Concat(conv(channels, 320, 1),
                  _seq(conv(channels, 384, 1), Concat(conv(384, 384, (1, 3)), conv(384, 384, (3, 1)))),
                  _seq(conv(channels, 448, 1), conv(448, 384, 3),
                       Concat(conv(384, 384, (1, 3)), conv(384, 384, (3, 1)))),
                  _seq(nn.AvgPool2d(3, 1, 1), conv(channels, 192, 1)))


class InceptionV3(nn.Module):
    """Inception-v3 (Mixed_5b..Mixed_7c), without the auxiliary head."""

    def __init__(self, *, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        conv = partial(_conv, dd=dd)
        self.features = nn.Sequential(
            conv(3, 32, 3, 2, valid=True), conv(32, 32, 3, valid=True), conv(32, 64, 3), nn.MaxPool2d(3, 2),
            conv(64, 80, 1), conv(80, 192, 3, valid=True), nn.MaxPool2d(3, 2),
            _v3_a(192, 32, dd), _v3_a(256, 64, dd), _v3_a(288, 64, dd),
            Concat(conv(288, 384, 3, 2, valid=True),
                   _seq(conv(288, 64, 1), conv(64, 96, 3), conv(96, 96, 3, 2, valid=True)), nn.MaxPool2d(3, 2)),
            _v3_c(128, dd), _v3_c(160, dd), _v3_c(160, dd), _v3_c(192, dd),
            Concat(_seq(conv(768, 192, 1), conv(192, 320, 3, 2, valid=True)),
                   _seq(conv(768, 192, 1), conv(192, 192, (1, 7)), conv(192, 192, (7, 1)),
                        conv(192, 192, 3, 2, valid=True)), nn.MaxPool2d(3, 2)),
            _v3_e(1280, dd), _v3_e(2048, dd),
        )
        self.fc = nn.Linear(2048, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# -- Inception-v4 ---------------------------------------------------------------------------------


def _v4_stem(dd: dict[str, Any]) -> nn.Sequential:
    conv = partial(_conv, dd=dd)
    return nn.Sequential(
        conv(3, 32, 3, 2, valid=True), conv(32, 32, 3, valid=True), conv(32, 64, 3),
        Concat(nn.MaxPool2d(3, 2), conv(64, 96, 3, 2, valid=True)),
        Concat(_seq(conv(160, 64, 1), conv(64, 96, 3, valid=True)),
               _seq(conv(160, 64, 1), conv(64, 64, (1, 7)), conv(64, 64, (7, 1)), conv(64, 96, 3, valid=True))),
        Concat(conv(192, 192, 3, 2, valid=True), nn.MaxPool2d(3, 2)),
    )


class InceptionV4(nn.Module):
    """Inception-v4 (Figures 3-9)."""

    def __init__(self, *, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        conv = partial(_conv, dd=dd)
        block_a = [Concat(_seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(384, 96, 1)), conv(384, 96, 1),
                          _seq(conv(384, 64, 1), conv(64, 96, 3)),
                          _seq(conv(384, 64, 1), conv(64, 96, 3), conv(96, 96, 3))) for _ in range(4)]
        reduction_a = Concat(nn.MaxPool2d(3, 2), conv(384, 384, 3, 2, valid=True),
                             _seq(conv(384, 192, 1), conv(192, 224, 3), conv(224, 256, 3, 2, valid=True)))
        block_b = [Concat(_seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(1024, 128, 1)),
                          conv(1024, 384, 1),
                          _seq(conv(1024, 192, 1), conv(192, 224, (1, 7)), conv(224, 256, (7, 1))),
                          _seq(conv(1024, 192, 1), conv(192, 192, (7, 1)), conv(192, 224, (1, 7)),
                               conv(224, 224, (7, 1)), conv(224, 256, (1, 7)))) for _ in range(7)]
        reduction_b = Concat(nn.MaxPool2d(3, 2), _seq(conv(1024, 192, 1), conv(192, 192, 3, 2, valid=True)),
                             _seq(conv(1024, 256, 1), conv(256, 256, (1, 7)), conv(256, 320, (7, 1)),
                                  conv(320, 320, 3, 2, valid=True)))
        block_c = [Concat(_seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(1536, 256, 1)),
                          conv(1536, 256, 1),
                          _seq(conv(1536, 384, 1), Concat(conv(384, 256, (1, 3)), conv(384, 256, (3, 1)))),
                          _seq(conv(1536, 384, 1), conv(384, 448, (3, 1)), conv(448, 512, (1, 3)),
                               Concat(conv(512, 256, (1, 3)), conv(512, 256, (3, 1))))) for _ in range(3)]
        self.features = nn.Sequential(_v4_stem(dd), *block_a, reduction_a, *block_b, reduction_b, *block_c)
        self.fc = nn.Linear(1536, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


# -- Inception-ResNet-v2 ----------------------------------------------------------------------------


class ScaledResidual(nn.Module):
    """``relu(x + scale * up(concat(branches(x))))``: an Inception-ResNet block (ReLU optional on the last)."""

    def __init__(self, branches: Concat, concat_channels: int, channels: int, scale: float, *, relu: bool = True,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.branches = branches
        self.up = nn.Conv2d(concat_channels, channels, 1, **factory_kwargs(device, dtype))
        self.scale = scale
        self.act = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.scale * self.up(self.branches(x)))


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 as TF-slim builds it (block35 x 10, block17 x 20, block8 x 10)."""

    def __init__(self, *, num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        conv = partial(_conv, dd=dd)
        stem = [conv(3, 32, 3, 2, valid=True), conv(32, 32, 3, valid=True), conv(32, 64, 3), nn.MaxPool2d(3, 2),
                conv(64, 80, 1, valid=True), conv(80, 192, 3, valid=True), nn.MaxPool2d(3, 2),
                Concat(conv(192, 96, 1), _seq(conv(192, 48, 1), conv(48, 64, 5)),
                       _seq(conv(192, 64, 1), conv(64, 96, 3), conv(96, 96, 3)),
                       _seq(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv(192, 64, 1)))]
        block35 = [ScaledResidual(Concat(conv(320, 32, 1), _seq(conv(320, 32, 1), conv(32, 32, 3)),
                                         _seq(conv(320, 32, 1), conv(32, 48, 3), conv(48, 64, 3))),
                                  128, 320, 0.17, **dd) for _ in range(10)]
        mixed_6a = Concat(conv(320, 384, 3, 2, valid=True),
                          _seq(conv(320, 256, 1), conv(256, 256, 3), conv(256, 384, 3, 2, valid=True)),
                          nn.MaxPool2d(3, 2))
        block17 = [ScaledResidual(Concat(conv(1088, 192, 1),
                                         _seq(conv(1088, 128, 1), conv(128, 160, (1, 7)), conv(160, 192, (7, 1)))),
                                  384, 1088, 0.1, **dd) for _ in range(20)]
        mixed_7a = Concat(_seq(conv(1088, 256, 1), conv(256, 384, 3, 2, valid=True)),
                          _seq(conv(1088, 256, 1), conv(256, 288, 3, 2, valid=True)),
                          _seq(conv(1088, 256, 1), conv(256, 288, 3), conv(288, 320, 3, 2, valid=True)),
                          nn.MaxPool2d(3, 2))
        block8 = [ScaledResidual(Concat(conv(2080, 192, 1),
                                        _seq(conv(2080, 192, 1), conv(192, 224, (1, 3)), conv(224, 256, (3, 1)))),
                                 448, 2080, 0.2, relu=index < 9, **dd) for index in range(10)]
        self.features = nn.Sequential(*stem, *block35, mixed_6a, *block17, mixed_7a, *block8, conv(2080, 1536, 1))
        self.fc = nn.Linear(1536, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("googlenet", "inception", partial(GoogLeNet, slim=False), 224, 7.0,
                   "Szegedy et al. arXiv:1409.4842 Table 1; BVLC Caffe bvlc_googlenet (6,998,552 parameters)"),
    ReferenceModel("inception_v1", "inception", partial(GoogLeNet, slim=True), 224, 6.6,
                   "Szegedy et al. arXiv:1409.4842 Table 1; TF-slim nets/inception_v1.py (6.6M, slim README)"),
    ReferenceModel("inception_v2", "inception", InceptionV2, 224, 11.2,
                   "Ioffe & Szegedy arXiv:1502.03167 Fig. 5; TF-slim nets/inception_v2.py (11.2M, slim README)"),
    ReferenceModel("inception_v3", "inception", InceptionV3, 299, 23.83,
                   "Szegedy et al. arXiv:1512.00567 Table 1, Figs. 5-7; PaddleClas docs Inception.md (23.83M)"),
    ReferenceModel("inception_v4", "inception", InceptionV4, 299, 42.68,
                   "Szegedy et al. arXiv:1602.07261 Figs. 3-9; PaddleClas docs Inception.md (42.68M)"),
    ReferenceModel("inception_resnet_v2", "inception", InceptionResNetV2, 299, 55.8,
                   "Szegedy et al. arXiv:1602.07261 Figs. 15-18; TF-slim nets/inception_resnet_v2.py (55.8M)"),
)
