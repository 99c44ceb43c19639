"""Multi-head self-attention over all tokens (ViT / DeiT).

Papers:
    "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
    Dosovitskiy et al., ICLR 2021, arXiv:2010.11929 (the block);
    "Training data-efficient image transformers & distillation through attention",
    Touvron et al., ICML 2021, arXiv:2012.12877 (DeiT-Ti/S/B, the zoo's ``deit_*``).

Published figures used by the zoo: DeiT-Ti/S/B 5.72M / 22.05M / 86.57M parameters and
1.26 / 4.61 / 17.58 GMACs at 224 px (open-mmlab/mmpretrain, configs/deit/README.md; the
DeiT paper, Table 1, and the official README round them to 5M / 22M / 86M). These
MACs count the two attention matmuls, as ``nas.cost`` does.

With ``qk_merged`` (OFQ's query-key reparameterisation, :mod:`nas.blocks.qkr`) and integer weights, each
head's logits come from its merged, quantised query-key matrix instead of quantised ``q`` and ``k`` rows.

The attention core (:func:`split_heads`, :func:`merge_heads`, and
:class:`~nas.blocks.quantizable.SoftmaxAttention` with the clipped-softmax and
gate options) is shared with the windowed (Swin) and spatial-reduction (PVT)
mixers of this family; with the options off every variant calls
:func:`torch.nn.functional.scaled_dot_product_attention`, so fused kernels are
used where the device has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import factory_kwargs, merge_heads, split_heads
from nas.blocks.contract import Chunks
from nas.blocks.qkr import QueryKeyMergeable, create_qkv, qkv_heads
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["AttentionCfg", "Attention", "check_heads", "split_heads", "merge_heads"]


def check_heads(heads: int, dim: int) -> None:
    """Raise ``ConfigError(path='heads')`` unless ``heads >= 1`` divides ``dim``."""
    if heads < 1:
        raise ConfigError(f"must be >= 1, got {heads}", path="heads")
    if dim % heads:
        raise ConfigError(f"{heads} does not divide dim {dim}", path="heads")


@dataclass(frozen=True)
class AttentionCfg(QueryKeyMergeable, QuantizableAttention, Component):
    """Global multi-head self-attention; ``head_dim = dim // heads``.

    Attributes:
        heads: number of heads; must divide the stage width.
        qkv_bias: bias on the fused query/key/value projection (ViT and DeiT use one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
        qk_merged: QKR under integer weights (:class:`~nas.blocks.qkr.QueryKeyMergeable`).
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3)}  # rows [q; k; v]

    heads: int = 8
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)


@register("mixer", "attention", AttentionCfg)
class Attention(TokenMixer):
    """Fused ``qkv`` linear, scaled dot-product attention over every token, output projection.

    Class tokens (``prefix_tokens``) take part like any other token, so the
    mixer needs no knowledge of them.
    """

    def __init__(self, cfg: AttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.head_dim = dim // cfg.heads
        self.qkv = create_qkv(dim, cfg.heads, bias=cfg.qkv_bias, merged=cfg.qk_merged, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value, scale = qkv_heads(self.qkv, x, self.heads)
        return self.proj(self.attend(x, query, key, value, scale=scale))
