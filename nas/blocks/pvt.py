"""Spatial-reduction attention (PVT v1).

Paper: "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction
without Convolutions", Wang et al., ICCV 2021, arXiv:2102.12122. Queries come
from every token; keys and values from the map reduced by a ``sr_ratio x sr_ratio``
convolution of the same stride, then LayerNorm (Sec. 3.3, Fig. 4), so the cost
of attention falls by ``sr_ratio**2``. ``sr_ratio: 1`` is plain attention.

A PVT model is built from existing kinds around this mixer: the ``patch`` stem
(4x4, LayerNorm, position embedding) and ``conv`` downsamplers (2x2 stride 2,
LayerNorm, position embedding) give PVT's per-stage patch embedding.

Published figures used by the zoo: PVT-Tiny / PVT-Small 13.2M / 24.5M parameters
(official repository ``whai362/PVT``, classification/README.md) and
1.9 / 3.8 GFLOPs at 224 px (paper Table 2). The repository's ``get_flops.py``
counts multiply-accumulates (mmcv) and adds the attention matmuls, as ``nas.cost`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import ToNCHW, ToNLC, factory_kwargs
from nas.blocks.contract import Chunks, FitsMap
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = ["SpatialReductionAttentionCfg", "SpatialReductionAttention"]


@dataclass(frozen=True)
class SpatialReductionAttentionCfg(QuantizableAttention, Component):
    """Attention whose keys and values come from the map reduced ``sr_ratio`` times per side.

    Attributes:
        heads: number of heads; must divide the stage width.
        sr_ratio: kernel and stride of the reducing convolution; 1 means no reduction.
        qkv_bias: bias on the query and key/value projections (PVT uses one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"
    sharing = {"kv": Chunks(2)}  # rows [k; v]
    resolution_fields = {"sr_ratio": FitsMap()}

    heads: int = 1
    sr_ratio: int = 1
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.sr_ratio < 1:
            raise ConfigError(f"must be >= 1, got {self.sr_ratio}", path="sr_ratio")
        if self.sr_ratio > min(site.height, site.width):
            raise ConfigError(f"{self.sr_ratio} is larger than the {site.height}x{site.width} feature map",
                              path="sr_ratio")
        if self.sr_ratio > 1 and site.prefix_tokens:
            raise ConfigError("a reducing convolution cannot run on tokens that carry a class token; "
                              "use sr_ratio 1", path="sr_ratio")


@register("mixer", "spatial_reduction_attention", SpatialReductionAttentionCfg)
class SpatialReductionAttention(TokenMixer):
    """``q`` from all tokens; ``k, v`` from ``LayerNorm(conv_sr(x))``; scaled dot-product attention; projection.

    A map whose sides ``sr_ratio`` does not divide is reduced with floor, as a
    strided convolution does.
    """

    def __init__(self, cfg: SpatialReductionAttentionCfg, *, dim: int, size: tuple[int, int],
                 prefix_tokens: int = 0, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=cfg.qkv_bias, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        if cfg.sr_ratio > 1:
            self.reduce: nn.Module = nn.Sequential(
                ToNCHW(size), nn.Conv2d(dim, dim, cfg.sr_ratio, cfg.sr_ratio, **dd), ToNLC(),
                nn.LayerNorm(dim, **dd))
        else:
            self.reduce = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = split_heads(self.q(x), self.heads)
        key, value = (split_heads(part, self.heads) for part in self.kv(self.reduce(x)).chunk(2, dim=-1))
        return self.proj(self.attend(x, query, key, value))
