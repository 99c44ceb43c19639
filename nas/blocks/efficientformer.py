"""EfficientFormer's attention: the token mixer of its Meta3D blocks.

Paper: "EfficientFormer: Vision Transformers at MobileNet Speed", Li et al., NeurIPS 2022,
arXiv:2206.01191. Structure read from the official code (snap-research/EfficientFormer,
``models/efficientformer.py``) and timm's ``efficientformer.py``.

An EfficientFormer is written with registered kinds only, plus the mixer below:

* Meta4D block: mixer ``pooling`` (pool 3), norm ``none``, ffn ``mlp`` with
  ``batchnorm: true`` (1x1 conv-BN, GELU, 1x1 conv-BN; ratio 4), layer scale 1e-5;
* Meta3D block: norm ``layernorm``, mixer ``efficientformer_attention``, ffn
  ``mlp`` (linear, ratio 4), layer scale 1e-5; the build flattens the map
  before the first one (layout conversion), as the paper's ``Flat`` does.

The attention is LeViT's (arXiv:2104.01136) without its activation: ``heads``
heads with ``key_dim``-wide queries and keys and ``attn_ratio * key_dim``-wide
values, and a learned bias per head for every pair of positions, shared by
pairs at the same offset ``(|dy|, |dx|)``. The bias table is built for the
feature-map size the block is built for (7x7 at 224 px), so the mixer is tied
to that size, as in the paper.

Published parameters and MACs (spaces/zoo/efficientformer_*.yaml): the paper, Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import factory_kwargs
from nas.blocks.quantizable import QuantizableAttention, create_gate, create_product
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["AttentionBias", "EfficientFormerAttention", "EfficientFormerAttentionCfg"]


@dataclass(frozen=True)
class EfficientFormerAttentionCfg(QuantizableAttention, Component):
    """Multi-head self-attention with a learned bias per head and relative offset.

    Attributes:
        key_dim: width of each head's queries and keys.
        heads: number of heads; they need not divide the width (qkv is a projection).
        attn_ratio: each head's value width is ``int(attn_ratio * key_dim)``.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`);
            the per-head gate reads each head's slice of the input, so ``gated`` needs heads that divide the width.
    """

    layout = "nlc"
    width_fields = ("key_dim",)
    key_fields = ("key_dim",)  # qkv rows are [q k v] per head, each key_dim wide

    key_dim: int = 32
    heads: int = 8
    attn_ratio: float = 4.0

    @property
    def value_dim(self) -> int:
        return int(self.attn_ratio * self.key_dim)

    def check(self, site: Site) -> None:
        for name in ("key_dim", "heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", path=name)
        if self.value_dim < 1:
            raise ConfigError(f"attn_ratio * key_dim must be >= 1, got {self.attn_ratio} * {self.key_dim}",
                              path="attn_ratio")
        if self.gated and site.dim % self.heads:
            raise ConfigError(f"the per-head gate reads each head's slice of the input, but {self.heads} heads do "
                              f"not divide dim {site.dim}", path="gated")
        if site.prefix_tokens:
            raise ConfigError("the attention biases cover feature-map positions only; "
                              "a class token (stem.class_token) is not supported", path="kind")


class AttentionBias(nn.Module):
    """A learned attention bias per head for every pair of positions of a ``height x width`` map.

    Pairs at the same offset ``(|dy|, |dx|)`` share one entry, so the table is
    ``heads x (height * width)``; an index buffer (``N x N`` with ``N = height * width``)
    spreads it over the pairs (LeViT arXiv:2104.01136, EfficientFormer, EfficientViT).
    """

    index: torch.Tensor

    def __init__(self, heads: int, size: tuple[int, int], *, device: Any = None, dtype: Any = None):
        super().__init__()
        height, width = size
        self.table = nn.Parameter(torch.zeros(heads, height * width, **factory_kwargs(device, dtype)))
        rows = torch.arange(height, device=device).repeat_interleave(width)
        cols = torch.arange(width, device=device).repeat(height)
        index = (rows[:, None] - rows[None, :]).abs() * width + (cols[:, None] - cols[None, :]).abs()
        self.register_buffer("index", index, persistent=False)

    def forward(self) -> torch.Tensor:
        """The bias, ``heads x N x N``."""
        return self.table[:, self.index]


@register("mixer", "efficientformer_attention", EfficientFormerAttentionCfg)
class EfficientFormerAttention(TokenMixer):
    """``proj(softmax(q k^T / sqrt(key_dim) + bias) v)`` over all positions, per head.

    Works on tokens (``nlc``): ``(B, H*W, C)`` in and out.
    """

    def __init__(self, cfg: EfficientFormerAttentionCfg, *, dim: int, size: tuple[int, int],
                 prefix_tokens: int = 0, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.split = (cfg.key_dim, cfg.key_dim, cfg.value_dim)
        self.scale = cfg.key_dim ** -0.5
        self.qkv = nn.Linear(dim, cfg.heads * sum(self.split), **dd)
        self.bias = AttentionBias(cfg.heads, size, **dd)
        self.product = create_product(cfg)
        self.gate = create_gate(cfg, dim, cfg.heads, **dd)
        self.proj = nn.Linear(cfg.heads * cfg.value_dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, self.heads, -1).transpose(1, 2)
        query, key, value = qkv.split(self.split, dim=-1)
        mixed = self.product(query, key, value, attn_mask=self.bias().to(query.dtype), scale=self.scale)
        return self.proj(self.gate(x, mixed.transpose(1, 2).reshape(batch, tokens, -1)))
