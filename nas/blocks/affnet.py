"""AFFNet: the adaptive frequency filtering (AFF) token mixer and AFFNet's block.

Paper: "Adaptive Frequency Filters As Efficient Global Token Mixers", Huang,
Zhang, Lan, Zha, Lu and Guo, ICCV 2023, arXiv:2307.14008. The mixer takes the
map's 2-D spectrum (:mod:`nas.blocks.fourier`), computes a mask *from that
spectrum* with a small complex network (a block-diagonal two-layer complex MLP
over channels, one per group of channels, then a soft threshold), multiplies
the spectrum by it and transforms back. By the convolution theorem this is a
depthwise circular convolution whose kernel is as large as the map and is
inferred from the input itself: a dynamic global kernel at ``O(HW log HW)``,
where a spatial dynamic kernel that large would cost ``O((HW)^2)``. The mask
network is AFNO's (Guibas et al., arXiv:2111.13587), shared by every frequency,
so its size does not follow the map. The soft threshold (``softshrink``) zeroes
small mask entries, which the paper reads as a learned sparsity in frequency.

AFFNet is a MobileViT-shaped network (arXiv:2110.02178): MobileNetV2 blocks at
1/2 and 1/4, then at 1/8, 1/16 and 1/32 a strided MobileNetV2 block followed by
an AFF block. An AFF block (``aff_block``, a block-owning kind) is ``depth``
layers of ``x + aff(norm(ir(norm(x))))``, where ``ir`` is an inverted residual
(expand ``ratio``, depthwise 3x3, project, with its own shortcut) and the AFF
filter also adds its input back; then a norm, a 1x1 conv-BN projection and a
1x1 conv-BN-act fusion of the block's input with the result (MobileViT's
fusion). The ``adaptive_frequency`` mixer is the filter alone, for the
MetaFormer template.

Published figures (``spaces/zoo/affnet.yaml``): AFFNet has 5.5M parameters and
1.5 GFLOPs (cvnets' MACs) at 256x256 (microsoft/TokenMixers, "Adaptive Frequency
Filters/README.md", ImageNet-1K table); widths and depths from that repo's
``affnet/models/classification/config/affnet.py`` (mode ``small``). The zoo point
is the official code layer for layer; the README rounds its exact counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import Activation, ConvNorm, create_act, factory_kwargs
from nas.blocks.contract import Chunks, Prefix
from nas.blocks.fourier import from_spectrum, spectrum
from nas.blocks.registry import register
from nas.blocks.template import BlockContext, FusedBlock, TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = ["AdaptiveFrequencyCfg", "AffBlockCfg", "AdaptiveFrequencyFilter", "AdaptiveFrequency", "AffBlock"]

_FFT_OPS = {"aten._fft_r2c": "fft", "aten._fft_c2r": "fft"}


def _check_filter(groups: int, shrink: float, dim: int, prefix_tokens: int) -> None:
    if groups < 1 or dim % groups:
        raise ConfigError(f"{groups} groups do not divide the width {dim}", path="groups")
    if shrink < 0:
        raise ConfigError(f"must be >= 0, got {shrink}", path="shrink")
    if prefix_tokens:
        raise ConfigError("a frequency filter runs on a feature map, not on tokens that carry a class token",
                          path="kind")


@dataclass(frozen=True)
class AdaptiveFrequencyCfg(Component):
    """The AFF filter: ``x -> irfft2(mask(X) * X)``, ``X = rfft2(x)``, the mask from ``X`` by a complex grouped MLP.

    Attributes:
        groups: diagonal blocks of the mask network's weights (AFFNet: 8); must divide the width.
        shrink: the soft threshold on the mask (AFFNet: 0.01).
        act: activation of the mask network's hidden layer, on real and imaginary parts.
    """

    ops = _FFT_OPS

    groups: int = 8
    shrink: float = 0.01
    act: Activation = "relu"

    def check(self, site: Site) -> None:
        _check_filter(self.groups, self.shrink, site.dim, site.prefix_tokens)


@dataclass(frozen=True)
class AffBlockCfg(Component):
    """AFFNet's block: ``depth`` layers of inverted residual then AFF filter, a 1x1 projection, a 1x1 fusion.

    Attributes:
        depth: layers; the block's ``norm`` is their norm (AFFNet: cvnets' ``layer_norm_2d``, a GroupNorm
            with one group, ``groupnorm1``).
        ratio: expansion of each layer's inverted residual (AFFNet: 2).
        groups: diagonal blocks of the filter's mask network; must divide the width.
        shrink: the soft threshold on the mask.
        act: activation of the inverted residuals, the mask network and the fusion (AFFNet: SiLU).
    """

    reads_block = True  # its norm is the block's; it has no separate FFN
    sharing = {"layers.*.ir": Prefix(), "fusion.0.weight": Chunks(2, axis=1)}  # expanded channels; [x; y] columns

    depth: int = 2
    ratio: float = 2.0
    groups: int = 8
    shrink: float = 0.01
    act: Activation = "silu"

    def check(self, site: Site) -> None:
        if self.depth < 1:
            raise ConfigError(f"must be >= 1, got {self.depth}", path="depth")
        if self.ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.ratio}", path="ratio")
        _check_filter(self.groups, self.shrink, site.dim, site.prefix_tokens)
        if site.block is not None and site.block.ffn.kind != "none":
            raise ConfigError("an AFF block holds its own inverted residuals; its ffn must be none", path="kind")


class AdaptiveFrequencyFilter(nn.Module):
    """The mask network and the filtering, on ``nchw`` maps.

    Weights are ``(2, groups, in, out)``: index 0 the real part, 1 the imaginary part, so one complex
    product ``(a + ib)(w + iv)`` is four real ones.
    """

    def __init__(self, dim: int, groups: int, shrink: float, act: Activation, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.groups = groups
        self.shrink = shrink
        width = dim // groups
        self.w1 = nn.Parameter(torch.randn(2, groups, width, width, **dd) * 0.02)
        self.b1 = nn.Parameter(torch.randn(2, groups, width, **dd) * 0.02)
        self.w2 = nn.Parameter(torch.randn(2, groups, width, width, **dd) * 0.02)
        self.b2 = nn.Parameter(torch.randn(2, groups, width, **dd) * 0.02)
        self.act = create_act(act, **dd)

    @staticmethod
    def _complex_linear(real: torch.Tensor, imag: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def mix(part: torch.Tensor, index: int) -> torch.Tensor:  # (batch, groups, in, h, w) -> out channels
            return torch.einsum("bgihw,gio->bgohw", part, weight[index])

        out_real = mix(real, 0) - mix(imag, 1) + bias[0, :, :, None, None]
        out_imag = mix(imag, 0) + mix(real, 1) + bias[1, :, :, None, None]
        return out_real, out_imag

    def mask(self, z: torch.Tensor) -> torch.Tensor:
        """The complex mask for spectrum ``z`` (``batch x channels x height x width // 2 + 1``)."""
        batch, channels, height, width = z.shape
        grouped = z.reshape(batch, self.groups, channels // self.groups, height, width)
        real, imag = self._complex_linear(grouped.real, grouped.imag, self.w1, self.b1)
        real, imag = self._complex_linear(self.act(real), self.act(imag), self.w2, self.b2)
        parts = F.softshrink(torch.stack([real, imag], dim=-1), self.shrink)
        return torch.view_as_complex(parts).reshape(batch, channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = spectrum(x)
        return from_spectrum(self.mask(z) * z, (x.shape[-2], x.shape[-1]))


@register("mixer", "adaptive_frequency", AdaptiveFrequencyCfg)
class AdaptiveFrequency(TokenMixer):
    """The AFF filter as a MetaFormer token mixer (the template adds the residual)."""

    def __init__(self, cfg: AdaptiveFrequencyCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.filter = AdaptiveFrequencyFilter(dim, cfg.groups, cfg.shrink, cfg.act, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.filter(x)


class _InvertedResidual(nn.Module):
    """``x + project(dwconv3x3(expand(x)))``, each conv with BatchNorm, the first two with ``act``."""

    def __init__(self, dim: int, hidden: int, act: Activation, dd: dict[str, Any]):
        super().__init__()
        self.expand = ConvNorm(dim, hidden, 1, act=act, **dd)
        self.dwconv = ConvNorm(hidden, hidden, 3, groups=hidden, act=act, **dd)
        self.project = ConvNorm(hidden, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.dwconv(self.expand(x)))


class _AffLayer(nn.Module):
    """``x + (f + aff(f))`` with ``f = norm(ir(norm(x)))``: AFFNet adds the filter's input to its output."""

    def __init__(self, block: Block, cfg: AffBlockCfg, dim: int, dd: dict[str, Any]):
        super().__init__()
        self.ir_norm = create_norm(block.norm, dim, "nchw", **dd)
        self.ir = _InvertedResidual(dim, max(round(dim * cfg.ratio), 1), cfg.act, dd)
        self.filter_norm = create_norm(block.norm, dim, "nchw", **dd)
        self.filter = AdaptiveFrequencyFilter(dim, cfg.groups, cfg.shrink, cfg.act, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        filtered = self.filter_norm(self.ir(self.ir_norm(x)))
        return x + filtered + self.filter(filtered)


@register("mixer", "aff_block", AffBlockCfg)
class AffBlock(FusedBlock):
    """``fusion([x; proj(norm(layers(x)))])``: the layers, then MobileViT's projection and fusion."""

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: AffBlockCfg = block.mixer  # type: ignore[assignment]
        dim = context.dim
        self.layers = nn.Sequential(*(_AffLayer(block, cfg, dim, dd) for _ in range(cfg.depth)))
        self.norm = create_norm(block.norm, dim, "nchw", **dd)
        self.proj = ConvNorm(dim, dim, 1, **dd)
        self.fusion = ConvNorm(2 * dim, dim, 1, act=cfg.act, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(torch.cat([x, self.proj(self.norm(self.layers(x)))], dim=1))
