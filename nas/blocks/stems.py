"""Stems: patch (ViT, Swin), overlap (PoolFormer, VAN), conv (ResNet, MobileNetV2, EfficientFormer, EfficientViT),
image (CrossViT).

A stem takes the image (NCHW) to the first feature map with ``dim`` channels.
The ``patch`` stem with ``class_token`` prepends DeiT's class token and so
puts out tokens (``nlc``) rather than a map. The ``image`` stem hands the image
on unchanged, for a first block that embeds the image itself (CrossViT's two
branches embed it at two patch sizes, which no single stem output can serve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Activation, ConvNorm, Layout, NormKind, ToNLC, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.template import create_norm
from nas.errors import ConfigError

__all__ = ["PatchStemCfg", "OverlapStemCfg", "ConvStemCfg", "ImageStemCfg", "PatchStem", "OverlapStem", "ConvStem",
           "ImageStem", "conv_out"]


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"must be >= 1, got {value}", path=name)


@dataclass(frozen=True)
class PatchStemCfg(Component):
    """Non-overlapping ``patch x patch`` patches, linearly embedded."""

    patch: int = 16
    dim: int | None = None
    norm: NormKind = "none"
    class_token: bool = False
    pos_embed: bool = False

    @property
    def prefix_tokens(self) -> int:  # type: ignore[override]
        return 1 if self.class_token else 0

    @property
    def layout(self) -> Layout:  # type: ignore[override]
        """Tokens (nlc) with a class token, else a map."""
        return "nlc" if self.class_token else "nchw"

    def check(self, site: Site) -> None:
        _check_positive(patch=self.patch)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch, width // self.patch


@dataclass(frozen=True)
class OverlapStemCfg(Component):
    """One strided convolution whose kernel overlaps its neighbours."""

    kernel: int = 7
    stride: int = 4
    padding: int | None = None
    dim: int | None = None
    norm: NormKind = "none"

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding

    def check(self, site: Site) -> None:
        _check_positive(kernel=self.kernel, stride=self.stride)
        if self.pad < 0:
            raise ConfigError(f"must be >= 0, got {self.pad}", path="padding")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return (conv_out(height, self.kernel, self.stride, self.pad),
                conv_out(width, self.kernel, self.stride, self.pad))


@dataclass(frozen=True)
class ConvStemCfg(Component):
    """A stack of conv-BN-act layers, each of ``stride``, widths ``hidden`` then ``dim``."""

    width_fields = ("hidden",)

    dim: int | None = None
    hidden: tuple[int, ...] = ()
    kernel: int = 3
    stride: int = 2
    act: Activation = "relu"
    last_act: bool = True
    maxpool: bool = False

    def check(self, site: Site) -> None:
        _check_positive(kernel=self.kernel, stride=self.stride)
        for index, width in enumerate(self.hidden):
            if width < 1:
                raise ConfigError(f"must be >= 1, got {width}", path=f"hidden[{index}]")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(len(self.hidden) + 1):
            height = conv_out(height, self.kernel, self.stride, self.kernel // 2)
            width = conv_out(width, self.kernel, self.stride, self.kernel // 2)
        if self.maxpool:
            height, width = conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)
        return height, width


@dataclass(frozen=True)
class ImageStemCfg(Component):
    """The image itself: ``dim`` must be the input's channels (written out: ``{kind: image, dim: 3}``)."""

    keeps_channels = True

    dim: int | None = None

    def check(self, site: Site) -> None:
        if self.dim != site.in_dim:
            raise ConfigError(f"the image stem hands the {site.in_dim}-channel image on unchanged, so its dim must be "
                              f"{site.in_dim}, got {self.dim}", path="dim")


class Stem(nn.Module):
    """Base: ``(cfg, *, in_dim, size, device, dtype)``, putting out ``cfg.layout``."""


@register("stem", "patch", PatchStemCfg)
class PatchStem(Stem):
    def __init__(self, cfg: PatchStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        dim = cfg.dim
        assert dim is not None  # Arch fills the stem width in
        layout = cfg.layout
        height, width = cfg.output_size(*size)
        self.proj = nn.Conv2d(in_dim, dim, cfg.patch, cfg.patch, **dd)
        self.to_tokens = ToNLC() if layout == "nlc" else nn.Identity()
        self.norm = create_norm(cfg.norm, dim, layout, **dd)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim, **dd)) if cfg.class_token else None
        shape = (1, cfg.prefix_tokens + height * width, dim) if layout == "nlc" else (1, dim, height, width)
        self.pos_embed = nn.Parameter(torch.zeros(shape, **dd)) if cfg.pos_embed else None
        for parameter in (self.class_token, self.pos_embed):
            if parameter is not None:
                nn.init.trunc_normal_(parameter, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.to_tokens(self.proj(x)))  # norm before the position embedding, as in ViT and PVT
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return x


@register("stem", "overlap", OverlapStemCfg)
class OverlapStem(Stem):
    def __init__(self, cfg: OverlapStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        self.proj = nn.Conv2d(in_dim, cfg.dim, cfg.kernel, cfg.stride, cfg.pad, **dd)
        self.norm = create_norm(cfg.norm, cfg.dim, "nchw", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


@register("stem", "conv", ConvStemCfg)
class ConvStem(Stem):
    def __init__(self, cfg: ConvStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        widths = (*cfg.hidden, cfg.dim)
        layers: list[nn.Module] = []
        for index, width in enumerate(widths):
            last = index == len(widths) - 1
            act = cfg.act if cfg.last_act or not last else None
            layers.append(ConvNorm(in_dim, width, cfg.kernel, cfg.stride, act=act, **dd))
            in_dim = width
        if cfg.maxpool:
            layers.append(nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@register("stem", "image", ImageStemCfg)
class ImageStem(Stem):
    def __init__(self, cfg: ImageStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
