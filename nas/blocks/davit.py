"""Channel group attention (DaViT's "channel tokens").

Paper: "DaViT: Dual Attention Vision Transformers", Ding et al., ECCV 2022,
arXiv:2204.03645. Spatial attention treats positions as tokens and channels as
their features; channel attention swaps the two: each channel is a token whose
feature is the whole map, so every score is taken over all positions and the
mixer sees the image globally. To keep the cost linear in the number of
positions, channels are split into groups and attend only within their group
(Sec. 3.2, the channel group attention equation): per group ``g`` of ``C_g``
channels, ``softmax(Q_g^T K_g / sqrt(C_g)) V_g^T``, a ``C_g x C_g`` attention map.
DaViT alternates a windowed spatial block with a channel block; the spatial
block is this package's ``window_attention`` (without a shift).

Published figures (for the seed-design zoo entries): DaViT-Tiny / Small / Base
have 28.3M / 49.7M / 87.9M parameters (the paper's abstract).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import factory_kwargs
from nas.blocks.contract import Chunks
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer

__all__ = ["ChannelAttentionCfg", "ChannelAttention"]


@dataclass(frozen=True)
class ChannelAttentionCfg(Component):
    """Attention among the channels of each of ``groups`` channel groups, over every position.

    Attributes:
        groups: channel groups (DaViT calls them heads); must divide the stage width.
        qkv_bias: bias on the fused query/key/value projection (DaViT uses one).
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3)}  # rows [q; k; v]

    groups: int = 8
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.groups, site.dim)


@register("mixer", "channel_attention", ChannelAttentionCfg)
class ChannelAttention(TokenMixer):
    """Fused ``qkv`` linear, attention between the channels of a group, output projection.

    The channel tokens of a group are the columns of its ``tokens x C_g`` slice, so
    the scaled dot-product attention runs on the transposed slices with the
    paper's ``1 / sqrt(C_g)`` scale (the default would divide by the token count).
    """

    def __init__(self, cfg: ChannelAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.groups = cfg.groups
        self.scale = (dim // cfg.groups) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, groups, C_g, tokens): each channel of a group is one token of the attention
        query, key, value = (split_heads(part, self.groups).transpose(-1, -2)
                             for part in self.qkv(x).chunk(3, dim=-1))
        mixed = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        return self.proj(mixed.permute(0, 3, 1, 2).flatten(-2))
