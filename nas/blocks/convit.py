"""ConViT's gated positional self-attention (GPSA).

Paper: "ConViT: Improving Vision Transformers with Soft Convolutional Inductive
Biases", d'Ascoli, Touvron, Leavitt, Morcos, Biroli and Sagun, ICML 2021,
arXiv:2103.10697. A GPSA head mixes two attention maps with a learned gate
(Sec. 3, the GPSA equation)::

    A_h = (1 - sigmoid(g_h)) softmax(Q_h K_h^T / sqrt(d)) + sigmoid(g_h) softmax(v_pos_h . r)

The positional scores read only the offset ``delta`` of key from query,
``r = (delta_x, delta_y, |delta|^2)``, through a per-head linear map ``v_pos``
(here ``pos_proj``, a ``3 -> heads`` linear layer with a bias). The *locality
initialisation* sets ``v_pos_h = alpha (2 Delta_h, -1)``, so that the score is
``-alpha |delta - Delta_h|^2`` plus a constant: head ``h`` attends around the
offset ``Delta_h``, the heads' centres lying on a ``sqrt(heads) x sqrt(heads)``
grid around the query, like the taps of a convolution; ``alpha`` (the locality
strength) sets how sharply. The gate starts at ``g_h = 1`` (sigmoid 0.73,
mostly positional) and the value projection at the identity, as in the official
code (facebookresearch/convit ``convit.py``), so a fresh GPSA layer is close to
a convolution and training decides per head how far to leave it.

ConViT puts its class token in front only after the GPSA blocks (ConViT-Ti: 10
GPSA blocks, then the class token, then 2 plain attention blocks). The ``gpsa``
kind therefore owns its block and passes any prefix (class) tokens through it
untouched, attention and FFN alike: a class token put in front by the stem
then reaches the first plain attention block exactly as ConViT's late one does,
and a learned position embedding on it only shifts that learned token.

Published figures used by the zoo (``spaces/zoo/convit_tiny.yaml``): ConViT-Ti
has 5.71M parameters and 1.26 GMACs at 224 px (timm's benchmark table,
huggingface/pytorch-image-models ``results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv``;
the paper's Table 1 rounds them to 6M and 1G).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.attention import check_heads, merge_heads, split_heads
from nas.blocks.common import create_layer_scale, factory_kwargs
from nas.blocks.contract import Chunks
from nas.blocks.quantizable import QuantizableAttention, create_gate, create_softmax
from nas.blocks.registry import register
from nas.blocks.template import BlockContext, FusedBlock, Residual, create_norm, ffn_residual
from nas.errors import ConfigError

__all__ = ["GpsaCfg", "GatedPositionalAttention", "GpsaBlock", "relative_offsets", "locality_centres"]


@dataclass(frozen=True)
class GpsaCfg(QuantizableAttention, Component):
    """ConViT's block: gated positional self-attention, then the block's FFN; class tokens pass untouched.

    Takes the quantization options of every softmax attention kind (:mod:`nas.blocks.quantizable`): the
    clipped softmax replaces the content softmax, and the per-head output gate follows the mixed map.

    Attributes:
        heads: number of heads; must divide the stage width. The first ``floor(sqrt(heads))**2`` heads get
            locality centres (ConViT uses square counts: 4, 9, 16).
        locality_strength: ``alpha`` of the locality initialisation (ConViT: 1); 0 starts every positional
            map uniform.
        qkv_bias: bias on the query/key and value projections (ConViT uses none).
    """

    layout = "nlc"
    sharing = {"attn.fn.qk": Chunks(2)}  # rows [q; k]

    heads: int = 4
    locality_strength: float = 1.0
    qkv_bias: bool = False

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.locality_strength < 0:
            raise ConfigError(f"must be >= 0, got {self.locality_strength}", path="locality_strength")


def relative_offsets(size: tuple[int, int]) -> torch.Tensor:
    """``(N, N, 3)`` with ``N = height * width``: for query ``i`` and key ``j`` (row-major positions), the key's
    column offset, row offset and squared distance from the query (ConViT's ``r_delta``)."""
    height, width = size
    rows = torch.arange(height).repeat_interleave(width)
    columns = torch.arange(width).repeat(height)
    delta_x = (columns[None, :] - columns[:, None]).float()
    delta_y = (rows[None, :] - rows[:, None]).float()
    return torch.stack([delta_x, delta_y, delta_x ** 2 + delta_y ** 2], dim=-1)


def locality_centres(heads: int) -> list[tuple[float, float]]:
    """The offset ``(Delta_x, Delta_y)`` each of the first ``k*k`` heads (``k = floor(sqrt(heads))``) is
    initialised to attend around: a ``k x k`` grid centred on the query (half-integers when ``k`` is even),
    head ``h`` at row ``h % k`` and column ``h // k`` of the grid, as the official code orders them."""
    side = math.isqrt(heads)
    centre = (side - 1) / 2
    return [(head // side - centre, head % side - centre) for head in range(side * side)]


class GatedPositionalAttention(nn.Module):
    """GPSA over the tokens of one map (no class token): content and positional maps mixed per head by a gate.

    The mixed map is formed explicitly, as the paper defines it, rather than as two fused attentions:
    one ``attn @ v`` product instead of two keeps the MACs those of plain attention.
    """

    def __init__(self, dim: int, cfg: GpsaCfg, size: tuple[int, int], *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.scale = (dim // cfg.heads) ** -0.5
        self.qk = nn.Linear(dim, 2 * dim, bias=cfg.qkv_bias, **dd)
        self.v = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.pos_proj = nn.Linear(3, cfg.heads, **dd)
        self.gate = nn.Parameter(torch.ones(cfg.heads, **dd))
        self.content_softmax = create_softmax(cfg)
        self.head_gate = create_gate(cfg, dim, cfg.heads, **dd)
        self.register_buffer("offsets", relative_offsets(size).to(**dd), persistent=False)
        self.locality_init(cfg.locality_strength)

    @torch.no_grad()
    def locality_init(self, strength: float) -> None:
        """Value projection = identity; head ``h``'s positional scores ``-strength * |delta - Delta_h|^2``."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
        weight = self.pos_proj.weight
        nn.init.trunc_normal_(weight, std=0.02)  # heads off the grid: near-uniform positional attention
        for head, (centre_x, centre_y) in enumerate(locality_centres(self.heads)):
            weight[head] = torch.tensor([2 * centre_x, 2 * centre_y, -1.0])
        weight.mul_(strength)
        nn.init.zeros_(self.pos_proj.bias)

    def positional_attention(self) -> torch.Tensor:
        """``(heads, N, N)``: softmax over keys of the positional scores; the same for every image."""
        return self.pos_proj(self.offsets).permute(2, 0, 1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key = (split_heads(part, self.heads) for part in self.qk(x).chunk(2, dim=-1))
        content = self.content_softmax(query @ key.transpose(-2, -1) * self.scale)
        gate = torch.sigmoid(self.gate).view(-1, 1, 1)
        attention = (1 - gate) * content + gate * self.positional_attention()  # rows still sum to 1
        return self.proj(self.head_gate(x, merge_heads(attention @ split_heads(self.v(x), self.heads))))


@register("mixer", "gpsa", GpsaCfg)
class GpsaBlock(FusedBlock):
    """``x = x + ls(gpsa(norm(x))); x = x + ls(ffn(norm(x)))`` on the map's tokens; prefix tokens skip both."""

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: GpsaCfg = block.mixer  # type: ignore[assignment]
        dim = context.dim
        self.prefix_tokens = context.prefix_tokens
        self.attn = Residual(create_norm(block.norm, dim, "nlc", **dd),
                             GatedPositionalAttention(dim, cfg, context.size, **dd),
                             create_layer_scale(dim, block.layer_scale, "nlc", **dd), context.drop_path)
        self.ffn = ffn_residual(block, context, "nlc", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = x[:, :self.prefix_tokens], x[:, self.prefix_tokens:]
        return torch.cat([prefix, self.ffn(self.attn(tokens))], dim=1)
