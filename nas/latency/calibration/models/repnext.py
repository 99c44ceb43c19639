"""RepNeXt-M1 ... M5, batch norms folded.

M. Zhao, Y. Luo, Y. Ouyang, "RepNeXt: A Fast Multi-Scale CNN using Structural Reparameterization",
arXiv:2406.16004, and the authors' release suous/RepNeXt (README "Chunk Conv" / "Copy Conv" listings,
model/repnext.py): a two-conv stem (3x3/2 to half the width, GELU, 3x3/2; BN); MetaNeXt blocks
``x + mlp(bn(chunk_conv(x)))`` whose token mixer splits the channels in four (identity, 3x3, 7x7 and 11x11
depthwise convs) and concatenates them, and whose MLP is 1x1 conv (ratio 2), GELU, 1x1 conv; between stages
a downsampler ``x = bn(copy_conv(x)); x + mlp(x)`` whose mixer runs a 3x3/2 and a 7x7/2 depthwise conv on
every channel and interleaves the two (twice the width); global pooling and a linear head (the two
BN-linear heads average into one after fusion). Widths and depths (model/repnext.py ``repnext_m1`` ...):
M1 48/96/192/384 and 3/3/15/2; M2 56/112/224/448, 3/3/15/2; M3 64/128/256/512, 3/3/13/2; M4 as M3 with
5/5/25/4; M5 80/160/320/640, 7/7/35/2. Parameter counts: the README's "Models" table (4.8M, 6.5M, 7.8M,
13.3M, 21.7M; copied into predictors/calibration/iphone12.csv).

The Core ML files the latencies were measured on fuse each chunk conv into one 11x11 depthwise conv over all
channels and each copy conv into one 7x7/2 depthwise conv with two outputs per channel (README ``fuse``),
zero-padding the smaller kernels: the same tensors in and out, one launch instead of four, but 2.7x (mixer)
and 1.7x (downsampler) the depthwise MACs, and 7-9% more parameters than the published counts. This
reference keeps the chunked branches, which hold exactly the published parameters; the depthwise convs are
a small share of each block's work next to its 1x1 MLP.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel

__all__ = ["ChunkConv", "CopyConv", "RepNeXt", "MODELS"]

MLP_RATIO = 2


def _depthwise(channels: int, kernel: int, stride: int = 1, **dd: Any) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, stride, kernel // 2, groups=channels, **dd)


def _mlp(dim: int, **dd: Any) -> nn.Module:
    return nn.Sequential(nn.Conv2d(dim, dim * MLP_RATIO, 1, **dd), nn.GELU(), nn.Conv2d(dim * MLP_RATIO, dim, 1, **dd))


class ChunkConv(nn.Module):
    """Channel quarters through identity, 3x3, 7x7 and 11x11 depthwise convs, concatenated."""

    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        quarter = dim // 4
        self.convs = nn.ModuleList(_depthwise(quarter, kernel, **dd) for kernel in (3, 7, 11))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity, *parts = torch.chunk(x, 4, dim=1)
        return torch.cat((identity, *(conv(part) for conv, part in zip(self.convs, parts, strict=True))), dim=1)


class CopyConv(nn.Module):
    """A 3x3/2 and a 7x7/2 depthwise conv on every channel, interleaved to twice the width."""

    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.small = _depthwise(dim, 3, 2, **dd)
        self.large = _depthwise(dim, 7, 2, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = self.small(x)
        batch, channels, height, width = small.shape
        return torch.stack((small, self.large(x)), dim=2).reshape(batch, 2 * channels, height, width)


class _Block(nn.Module):
    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.mixer = ChunkConv(dim, **dd)
        self.mlp = _mlp(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.mixer(x))


class _Downsample(nn.Module):
    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.mixer = CopyConv(dim, **dd)
        self.mlp = _mlp(2 * dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)
        return x + self.mlp(x)


class RepNeXt(nn.Module):
    """RepNeXt with stage ``widths`` (each twice the last) and ``depths``."""

    def __init__(self, *, widths: tuple[int, ...], depths: tuple[int, ...], num_classes: int = 1000,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, widths[0] // 2, 3, 2, act="gelu", bias=True, norm=False, **dd),
                                   ConvBnAct(widths[0] // 2, widths[0], 3, 2, act="none", bias=True, norm=False,
                                             **dd)]
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if stage > 0:
                layers.append(_Downsample(widths[stage - 1], **dd))
            layers += [_Block(width, **dd) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1], num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


_SOURCE = ("Zhao et al. arXiv:2406.16004; suous/RepNeXt README (ChunkConv/CopyConv, params) and model/repnext.py "
           "(configs)")
_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "m1": ((48, 96, 192, 384), (3, 3, 15, 2), 4.8),
    "m2": ((56, 112, 224, 448), (3, 3, 15, 2), 6.5),
    "m3": ((64, 128, 256, 512), (3, 3, 13, 2), 7.8),
    "m4": ((64, 128, 256, 512), (5, 5, 25, 4), 13.3),
    "m5": ((80, 160, 320, 640), (7, 7, 35, 2), 21.7),
}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"repnext_{name}", "repnext", partial(RepNeXt, widths=widths, depths=depths), 224, params_m,
                   _SOURCE)
    for name, (widths, depths, params_m) in _VARIANTS.items()
)
