"""Downsamplers between stages: a strided convolution with an optional norm and position embedding.

Covers PoolFormer (3x3/2, no norm), ConvNeXt (LayerNorm then 2x2/2,
arXiv:2201.03545), EfficientFormer and VAN (3x3/2 then BatchNorm) and PVT
(2x2/2 then LayerNorm, plus a learned position embedding per stage,
arXiv:2102.12122). Swin's patch merging lives with the window attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import NormKind, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.stems import conv_out
from nas.blocks.template import create_norm
from nas.errors import ConfigError

__all__ = ["ConvDownsampleCfg", "ConvDownsample", "Downsample", "StridedConvRules"]


class StridedConvRules:
    """The rules of a downsampler that is one strided convolution over a feature map, for configs with
    ``kernel``, ``stride`` and a ``pad`` property: positive kernel and stride, a pad >= 0, no class tokens
    coming in, and the convolution's output size."""

    kernel: int
    stride: int

    @property
    def pad(self) -> int:
        raise NotImplementedError

    def check(self, site: Site) -> None:
        for name in ("kernel", "stride"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", path=name)
        if self.pad < 0:
            raise ConfigError(f"must be >= 0, got {self.pad}", path="padding")
        if site.prefix_tokens:
            raise ConfigError("cannot downsample a feature map that carries class tokens", path="kind")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return (conv_out(height, self.kernel, self.stride, self.pad),
                conv_out(width, self.kernel, self.stride, self.pad))


@dataclass(frozen=True)
class ConvDownsampleCfg(StridedConvRules, Component):
    """A ``kernel x kernel`` convolution of ``stride``; ``padding`` null means ``(kernel - stride + 1) // 2``."""

    kernel: int = 3
    stride: int = 2
    padding: int | None = None
    norm: NormKind = "none"
    norm_first: bool = False
    pos_embed: bool = False

    @property
    def pad(self) -> int:
        return (self.kernel - self.stride + 1) // 2 if self.padding is None else self.padding


class Downsample(nn.Module):
    """Base: ``(cfg, *, in_dim, dim, size, device, dtype)``, working in ``cfg.layout``."""


@register("downsample", "conv", ConvDownsampleCfg)
class ConvDownsample(Downsample):
    def __init__(self, cfg: ConvDownsampleCfg, *, in_dim: int, dim: int, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.pre_norm = create_norm(cfg.norm if cfg.norm_first else "none", in_dim, "nchw", **dd)
        self.conv = nn.Conv2d(in_dim, dim, cfg.kernel, cfg.stride, cfg.pad, **dd)
        self.post_norm = create_norm("none" if cfg.norm_first else cfg.norm, dim, "nchw", **dd)
        height, width = cfg.output_size(*size)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, height, width, **dd)) if cfg.pos_embed else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.post_norm(self.conv(self.pre_norm(x)))  # norm before the position embedding, as in PVT
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return x
