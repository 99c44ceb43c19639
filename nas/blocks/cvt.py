"""Attention with convolutional projections (CvT).

Paper: "CvT: Introducing Convolutions to Vision Transformers", Wu et al., ICCV 2021,
arXiv:2103.15808. CvT brings convolutions into a ViT at two places:

* the *convolutional token embedding* that starts each stage: an overlapping
  strided convolution followed by LayerNorm (Sec. 3.1). On the image it is the
  ``overlap`` stem (7x7, stride 4, padding 2, ``norm: layernorm``); between
  stages it is the ``conv_embedding`` downsampler (3x3, stride 2, padding 1),
  which works on tokens, so attention stages need no layout conversion, and
  can put a class token in front, as CvT-13 does in its last stage only;
* the *convolutional projection* (Sec. 3.2, Fig. 3): queries, keys and values
  are each a depthwise convolution and BatchNorm of the token map before their
  linear projection, so attention sees a local neighbourhood per token. Keys and
  values use stride 2 ("squeezed" projection), which cuts the attention cost by 4.

Details read from the official code (``microsoft/CvT``, ``lib/models/cls_cvt.py``):
the depthwise convolutions have no bias, the padding is ``kernel // 2``, and the
attention logits are scaled by ``dim ** -0.5`` (the whole width, not the head
width). A class token, when the map carries one, skips the convolutions and is
put back in front of the projected queries, keys and values.

Published figures used by the zoo (``spaces/zoo/cvt_13.yaml``): CvT-13 has 20M
parameters and 4.5 GFLOPs at 224 px (the official README's ImageNet-1k table; the
paper reports the same). The official counter (``Attention.compute_macs``) counts one
multiply-add as one FLOP and adds the attention matmuls, as ``nas.cost`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import ConvNorm, NormKind, ToNCHW, ToNLC, factory_kwargs
from nas.blocks.downsample import Downsample, StridedConvRules
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = ["ConvEmbeddingCfg", "ConvProjectionAttentionCfg", "ConvEmbedding", "ConvProjection",
           "ConvProjectionAttention"]


@dataclass(frozen=True)
class ConvEmbeddingCfg(StridedConvRules, Component):
    """Tokens folded into a map, a ``kernel x kernel`` convolution of ``stride``, a norm; optionally a class token.

    Attributes:
        kernel: the convolution's kernel (CvT: 3 between stages).
        stride: its stride (CvT: 2).
        padding: null means ``kernel // 2``.
        norm: the norm of the embedded tokens (CvT: LayerNorm).
        class_token: put a learned class token in front of the stage's tokens (CvT-13's last stage).
    """

    layout = "nlc"

    kernel: int = 3
    stride: int = 2
    padding: int | None = None
    norm: NormKind = "layernorm"
    class_token: bool = False

    @property
    def pad(self) -> int:
        return self.kernel // 2 if self.padding is None else self.padding

    @property
    def prefix_tokens(self) -> int:  # type: ignore[override]
        return 1 if self.class_token else 0



@dataclass(frozen=True)
class ConvProjectionAttentionCfg(QuantizableAttention, Component):
    """Multi-head attention whose q, k, v are a depthwise conv + BatchNorm of the map, then a linear layer.

    Attributes:
        heads: number of heads; must divide the stage width.
        kernel: kernel of the depthwise projections (odd, padded to keep the size at stride 1).
        kv_stride: stride of the key and value projections (CvT uses 2; 1 keeps every position).
        qkv_bias: bias on the query, key and value linear layers (CvT uses one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"

    heads: int = 1
    kernel: int = 3
    kv_stride: int = 2
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be an odd number >= 1, got {self.kernel}", path="kernel")
        if self.kv_stride < 1:
            raise ConfigError(f"must be >= 1, got {self.kv_stride}", path="kv_stride")


class ConvProjection(nn.Module):
    """Tokens ``(B, prefix + H*W, C)`` -> depthwise conv + BN over the map -> tokens, prefix tokens put back first.

    The prefix (class) tokens are not part of the map, so they pass unchanged,
    as in CvT's last stage.
    """

    def __init__(self, dim: int, kernel: int, stride: int, *, size: tuple[int, int], prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.to_map = ToNCHW(size)
        self.conv = ConvNorm(dim, dim, kernel, stride, groups=dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(self.to_map(x[:, self.prefix_tokens:])).flatten(2).transpose(1, 2)
        if self.prefix_tokens:
            tokens = torch.cat([x[:, :self.prefix_tokens], tokens], dim=1)
        return tokens


@register("downsample", "conv_embedding", ConvEmbeddingCfg)
class ConvEmbedding(Downsample):
    """CvT's convolutional token embedding between stages: ``norm(conv(map))`` as tokens, class token first."""

    def __init__(self, cfg: ConvEmbeddingCfg, *, in_dim: int, dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.to_map = ToNCHW(size)
        self.conv = nn.Conv2d(in_dim, dim, cfg.kernel, cfg.stride, cfg.pad, **dd)
        self.to_tokens = ToNLC()
        self.norm = create_norm(cfg.norm, dim, "nlc", **dd)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim, **dd)) if cfg.class_token else None
        if self.class_token is not None:
            nn.init.trunc_normal_(self.class_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.to_tokens(self.conv(self.to_map(x))))
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x


@register("mixer", "conv_projection_attention", ConvProjectionAttentionCfg)
class ConvProjectionAttention(TokenMixer):
    """``q, k, v = linear(conv_projection(x))``; scaled dot-product attention; output projection.

    Queries keep every position (stride 1); keys and values come from the map
    reduced by ``kv_stride`` per side, so each query attends to
    ``prefix + ceil(H / s) * ceil(W / s)`` tokens.
    """

    def __init__(self, cfg: ConvProjectionAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.scale = dim ** -0.5  # the official code's scale: the whole width
        self.q_conv = ConvProjection(dim, cfg.kernel, 1, size=size, prefix_tokens=prefix_tokens, **dd)
        self.k_conv = ConvProjection(dim, cfg.kernel, cfg.kv_stride, size=size, prefix_tokens=prefix_tokens, **dd)
        self.v_conv = ConvProjection(dim, cfg.kernel, cfg.kv_stride, size=size, prefix_tokens=prefix_tokens, **dd)
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.k = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.v = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = split_heads(self.q(self.q_conv(x)), self.heads)
        key = split_heads(self.k(self.k_conv(x)), self.heads)
        value = split_heads(self.v(self.v_conv(x)), self.heads)
        return self.proj(self.attend(x, query, key, value, scale=self.scale))
