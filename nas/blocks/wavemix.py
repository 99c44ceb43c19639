"""WaveMix: token mixing by a multi-level 2-D Haar wavelet transform, conv MLPs and transposed-conv upsampling.

Paper: "WaveMix: A Resource-efficient Neural Network for Image Analysis",
Jeevan, Viswanathan, Anandu and Sethi, arXiv:2205.14375 (and "WaveMix:
Resource-efficient Token Mixing for Images", arXiv:2203.03689). A one-level
2-D discrete wavelet transform splits a map into four half-size maps (the
average, and horizontal, vertical and diagonal details) without loss and
without parameters: a fixed, invertible reorganisation that halves the map
while keeping every value. WaveMix applies it ``levels`` times to a
channel-reduced map (``dim / 4`` channels, so each level's four bands make
``dim`` channels again), then works back up from the coarsest level: a 1x1
conv MLP on the level's bands (concatenated with what came up from below),
a 4x4/2 transposed convolution to the next finer size, BatchNorm. The
receptive field covers ``2**levels`` pixels per block at the cost of a few
strided adds. The block is ``x + mix(x)``, with no norm in front: as a
MetaFormer mixer it is :class:`WaveMixer` with ``norm: none`` and ``ffn: none``.

The Haar transform is written in plain torch (:func:`haar_dwt`,
:func:`haar_idwt`): strided slices, adds and subtractions, so it traces as
views and element-wise ops that every target prices, and no wavelet library
is needed. On even sides it gives the bands of PyWavelets' ``db1`` (Haar), which
WaveMix uses through pytorch_wavelets; the order of the three detail bands does
not matter to WaveMix, whose next layer is a 1x1 convolution over all of them.

Figures: WaveMix's ImageNet model is WaveMix-192/16 with three levels
(``Saved_weights/ImageNet/wavemix_imagenet_75.06.py`` in pranavphoenix/WaveMix:
width 192, 16 blocks, ``mult`` 2, ``ff_channel`` 192, a 4x4 patchifying stem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import create_act, factory_kwargs
from nas.blocks.contract import Chunks, Prefix
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["WaveMixerCfg", "WaveMixStemCfg", "WaveMixer", "WaveMixStem", "haar_dwt", "haar_idwt"]


def haar_dwt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One level of the orthonormal 2-D Haar transform of ``(..., H, W)`` (even sides).

    Returns:
        the approximation ``(..., H/2, W/2)`` and the details ``(..., 3, H/2, W/2)``, ordered as
        pytorch_wavelets orders them (LH, HL, HH).
    """
    top_left, top_right = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    bottom_left, bottom_right = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    low = (top_left + top_right + bottom_left + bottom_right) / 2
    details = torch.stack([(top_left + top_right - bottom_left - bottom_right) / 2,
                           (top_left - top_right + bottom_left - bottom_right) / 2,
                           (top_left - top_right - bottom_left + bottom_right) / 2], dim=-3)
    return low, details


def haar_idwt(low: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`haar_dwt`: the ``(..., H, W)`` map its approximation and details came from."""
    rows_detail, columns_detail, diagonal = details.unbind(-3)
    top_left = (low + rows_detail + columns_detail + diagonal) / 2
    top_right = (low + rows_detail - columns_detail - diagonal) / 2
    bottom_left = (low - rows_detail + columns_detail - diagonal) / 2
    bottom_right = (low - rows_detail - columns_detail + diagonal) / 2
    top = torch.stack([top_left, top_right], dim=-1).flatten(-2)  # interleave the columns
    bottom = torch.stack([bottom_left, bottom_right], dim=-1).flatten(-2)
    return torch.stack([top, bottom], dim=-2).flatten(-3, -2)  # interleave the rows


@dataclass(frozen=True)
class WaveMixerCfg(Component):
    """A WaveMix block's mixing: reduce to ``dim / 4``, ``levels`` Haar levels, conv MLPs and upsampling back.

    Attributes:
        levels: wavelet levels (WaveMix: 1 to 4); ``2**levels`` must divide both sides of the map.
        mult: hidden width of each conv MLP, as a multiple of the width.
        ff_ratio: the MLP's output (WaveMix's ``ff_channel``), as a multiple of the width.
    """

    sharing = {"levels.*.expand": Prefix(), "levels.*.reduce": Prefix(), "levels.*.up": Prefix(),
               "levels.*.expand.weight": Chunks(2, axis=1)}  # a finer level reads [its bands; what came up]

    levels: int = 3
    mult: float = 2.0
    ff_ratio: float = 1.0

    def check(self, site: Site) -> None:
        if not 1 <= self.levels <= 6:
            raise ConfigError(f"must be in [1, 6], got {self.levels}", path="levels")
        for name in ("mult", "ff_ratio"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)}", path=name)
        if site.dim % 4:
            raise ConfigError(f"the width {site.dim} must be a multiple of 4 (the reduced map has a quarter)",
                              path="kind")
        side = 2 ** self.levels
        if site.height % side or site.width % side:
            raise ConfigError(f"{self.levels} wavelet levels need sides divisible by {side}, got "
                              f"{site.height}x{site.width}", path="levels")
        if site.prefix_tokens:
            raise ConfigError("a wavelet transform runs on a feature map, not on tokens that carry a class token",
                              path="kind")


@dataclass(frozen=True)
class WaveMixStemCfg(Component):
    """WaveMix's patchifying stem: 3x3 convs to ``dim / 4`` and ``dim / 2``, a ``patch`` square conv, GELU, BN."""

    dim: int | None = None
    patch: int = 4

    def check(self, site: Site) -> None:
        if self.patch < 1:
            raise ConfigError(f"must be >= 1, got {self.patch}", path="patch")
        if self.dim is not None and self.dim % 4:
            raise ConfigError(f"must be a multiple of 4, got {self.dim}", path="dim")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_out(height, self.patch, self.patch, 0), conv_out(width, self.patch, self.patch, 0)


class _LevelMlp(nn.Module):
    """``norm(up(reduce(gelu(expand(x)))))``: a 1x1 conv MLP, then a 4x4/2 transposed conv to the finer size."""

    def __init__(self, in_dim: int, hidden: int, ff_dim: int, out_dim: int, dd: dict[str, Any]):
        super().__init__()
        self.expand = nn.Conv2d(in_dim, hidden, 1, **dd)
        self.act = create_act("gelu", **dd)
        self.reduce = nn.Conv2d(hidden, ff_dim, 1, **dd)
        self.up = nn.ConvTranspose2d(ff_dim, out_dim, 4, stride=2, padding=1, **dd)
        self.norm = nn.BatchNorm2d(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.up(self.reduce(self.act(self.expand(x)))))


@register("mixer", "wavemix", WaveMixerCfg)
class WaveMixer(TokenMixer):
    """The bands of each level, finest first, go up from the coarsest: ``levels[j]`` works at level ``j + 1``.

    The coarsest level's MLP reads its ``dim`` channels of bands; every finer one reads its bands and the
    ``dim / 2`` channels that came up; the finest puts out ``dim`` channels at the input's size, the others
    ``dim / 2``.
    """

    def __init__(self, cfg: WaveMixerCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden, ff_dim, half = round(dim * cfg.mult), round(dim * cfg.ff_ratio), dim // 2
        self.reduction = nn.Conv2d(dim, dim // 4, 1, **dd)
        self.levels = nn.ModuleList(
            _LevelMlp(dim if level == cfg.levels - 1 else dim + half, hidden, ff_dim, dim if level == 0 else half,
                      dd)
            for level in range(cfg.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.reduction(x)
        bands = []
        for _ in self.levels:
            low, details = haar_dwt(low)
            bands.append(torch.cat([low, details.flatten(1, 2)], dim=1))
        out = self.levels[-1](bands[-1])
        for level in range(len(self.levels) - 2, -1, -1):
            out = self.levels[level](torch.cat([bands[level], out], dim=1))
        return out


@register("stem", "wavemix", WaveMixStemCfg)
class WaveMixStem(Stem):
    def __init__(self, cfg: WaveMixStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        dim = cfg.dim
        self.layers = nn.Sequential(
            nn.Conv2d(in_dim, dim // 4, 3, 1, 1, **dd), nn.Conv2d(dim // 4, dim // 2, 3, 1, 1, **dd),
            nn.Conv2d(dim // 2, dim, cfg.patch, cfg.patch, **dd), create_act("gelu", **dd), nn.BatchNorm2d(dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
