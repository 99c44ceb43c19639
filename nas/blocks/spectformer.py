"""SpectFormer: the spectral gating mixer (a learned global filter), its stem and class-attention head.

Paper: "SpectFormer: Frequency and Attention is what you need in a Vision
Transformer", Patro, Namboodiri and Agneeswaran, arXiv:2304.06446 (WACV 2025).
Its spectral gating layer is GFNet's global filter (Rao et al., NeurIPS 2021,
arXiv:2107.00645): the map's 2-D spectrum times a learned complex weight per
frequency and channel, then back (:mod:`nas.blocks.fourier`). That is a
depthwise circular convolution with a kernel as large as the map, learned in
the frequency domain, so one block mixes globally at ``O(HW log HW)``.
SpectFormer's finding is that such layers do best in the *early* blocks, where
maps are large and attention is dearest, with multi-head attention after them:
the hierarchical SpectFormer-H puts spectral gating in stages 1-2 and attention
in stages 3-4, which the MetaFormer template expresses as per-stage mixers.
The filter has one weight per frequency, so its size follows the feature map:
a point at another resolution has a filter of another size (the supernet cuts
the largest one, a prefix of frequencies).

SpectFormer-H's stem is a 7x7/2 conv and two 3x3 convs (each BatchNorm, ReLU)
then a 3x3/2 projection and LayerNorm; its head is one class-attention block
(CaiT, arXiv:2103.17239: a class token made from the token mean attends to the
tokens, then an FFN) with the token-labelling auxiliary classifier (LV-ViT,
arXiv:2104.10858), whose best token score is added at half weight.

Published figures (``spaces/zoo/spectformer_h_s.yaml``): SpectFormer-H-S has
22.2M parameters and 3.9 GFLOPs at 224 px (badripatro/SpectFormers,
hierarchical_architecture/README.md); widths 64, 128, 320, 448, depths 3, 4, 6,
3, heads 2, 4, 10, 14, FFN ratios 8, 8, 4, 4 (the repo's ``spectformer_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads
from nas.blocks.class_attention import ClassAttention, ClassAttentionCfg
from nas.blocks.common import Mlp, factory_kwargs
from nas.blocks.contract import Chunks, Prefix
from nas.blocks.fourier import from_spectrum, spectrum, spectrum_width
from nas.blocks.heads import Head
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = ["GlobalFilterCfg", "SpectformerStemCfg", "ClassAttentionHeadCfg", "GlobalFilter", "SpectformerStem",
           "ClassAttentionHead"]

_FFT_OPS = {"aten._fft_r2c": "fft", "aten._fft_c2r": "fft"}


@dataclass(frozen=True)
class GlobalFilterCfg(Component):
    """A learned complex weight per frequency and channel: SpectFormer's spectral gating, GFNet's global filter.

    The weight's size is the map's spectrum, so it has no fields to choose.
    """

    ops = _FFT_OPS

    def check(self, site: Site) -> None:
        if site.prefix_tokens:
            raise ConfigError("a global filter runs on a feature map, not on tokens that carry a class token",
                              path="kind")


@dataclass(frozen=True)
class SpectformerStemCfg(Component):
    """7x7/2 conv, two 3x3 convs (each BatchNorm, ReLU) at ``hidden`` channels, a 3x3/2 conv to ``dim``, LayerNorm."""

    width_fields = ("hidden",)

    dim: int | None = None
    hidden: int = 32

    def check(self, site: Site) -> None:
        if self.hidden < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden}", path="hidden")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        height, width = conv_out(height, 7, 2, 3), conv_out(width, 7, 2, 3)
        return conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)


@dataclass(frozen=True)
class ClassAttentionHeadCfg(Component):
    """A class-attention block on a class token made from the token mean, LayerNorm, linear; optionally token labels.

    Attributes:
        heads: heads of the class attention; must divide the width coming in.
        ratio: hidden width of the block's FFN, as a multiple of the width.
        token_label: add half the best per-token score of an auxiliary classifier (LV-ViT's token labelling).
    """

    sharing = {"attn.kv": Chunks(2), "mlp.fc1": Prefix(), "mlp.fc2": Prefix()}  # rows [k; v]

    num_classes: int = 1000
    heads: int = 8
    ratio: float = 4.0
    token_label: bool = True

    def check(self, site: Site) -> None:
        if self.num_classes < 0:
            raise ConfigError(f"must be >= 0 (0 means no classifier), got {self.num_classes}", path="num_classes")
        check_heads(self.heads, site.in_dim)
        if self.ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.ratio}", path="ratio")
        if site.prefix_tokens:
            raise ConfigError("the class-attention head makes its own class token; the tokens must carry none",
                              path="kind")


@register("mixer", "global_filter", GlobalFilterCfg)
class GlobalFilter(TokenMixer):
    """``irfft2(rfft2(x) * W)`` with a learned complex ``W`` of shape ``channels x height x (width // 2 + 1)``.

    The weight is stored as real and imaginary parts (a trailing 2), channels first so that a narrower
    subnet uses a prefix of them.
    """

    def __init__(self, cfg: GlobalFilterCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.size = size
        shape = (dim, size[0], spectrum_width(size[1]), 2)
        self.weight = nn.Parameter(torch.randn(shape, **factory_kwargs(device, dtype)) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_spectrum(spectrum(x) * torch.view_as_complex(self.weight), self.size)


@register("stem", "spectformer", SpectformerStemCfg)
class SpectformerStem(Stem):
    def __init__(self, cfg: SpectformerStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        hidden = cfg.hidden
        layers: list[nn.Module] = []
        for kernel, stride, width in ((7, 2, in_dim), (3, 1, hidden), (3, 1, hidden)):
            layers += [nn.Conv2d(width, hidden, kernel, stride, kernel // 2, bias=False, **dd),
                       nn.BatchNorm2d(hidden, **dd), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(hidden, cfg.dim, 3, 2, 1, **dd)
        self.norm = create_norm("layernorm", cfg.dim, "nchw", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(self.convs(x)))


@register("head", "class_attention", ClassAttentionHeadCfg)
class ClassAttentionHead(Head):
    """``cls = mean(tokens)``; ``cls += attn(norm(cls, tokens))``; ``cls += mlp(norm(cls))``; norm; classify."""

    def __init__(self, cfg: ClassAttentionHeadCfg, *, in_dim: int, layout: str, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self._dd = factory_kwargs(device, dtype)
        self.num_features = in_dim
        self.token_label = cfg.token_label
        self.attn_norm = create_norm("layernorm", in_dim, "nlc", **self._dd)
        self.attn = ClassAttention(ClassAttentionCfg(heads=cfg.heads, qkv_bias=True), in_dim, **self._dd)
        self.mlp_norm = create_norm("layernorm", in_dim, "nlc", **self._dd)
        self.mlp = Mlp(in_dim, round(in_dim * cfg.ratio), "nlc", **self._dd)
        self.norm = create_norm("layernorm", in_dim, "nlc", **self._dd)
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, **self._dd) if num_classes else nn.Identity()
        self.aux = (nn.Linear(self.num_features, num_classes, **self._dd)
                    if num_classes and self.token_label else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2) if x.dim() == 4 else x
        sequence = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        cls = sequence[:, :1] + self.attn(self.attn_norm(sequence))
        cls = cls + self.mlp(self.mlp_norm(cls))
        normed = self.norm(torch.cat([cls, tokens], dim=1))
        logits = self.fc(normed[:, 0])
        if self.aux is None:
            return logits
        return logits + 0.5 * self.aux(normed[:, 1:]).amax(1)
