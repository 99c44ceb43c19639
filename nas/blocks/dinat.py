"""Neighbourhood attention with dilation, and NAT's convolutional tokenizer (DiNAT).

Papers: "Dilated Neighborhood Attention Transformer", Hassani and Shi, 2022,
arXiv:2209.15001 (DiNA and the DiNAT models); "Neighborhood Attention
Transformer", Hassani et al., CVPR 2023, arXiv:2204.07143 (NA, the tokenizer).

Neighbourhood attention (NA) lets every query attend to the ``kernel x kernel``
keys nearest to it. Unlike a Swin window, the neighbourhood follows the query,
and at the borders it is *shifted inward* rather than cut off, so every query
sees exactly ``kernel**2`` keys. Dilated NA (DiNA) takes the neighbours ``dilation``
apart: the map splits into ``dilation**2`` interleaved groups (positions equal
modulo ``dilation`` on each axis), and each query attends within its group,
with the same inward shift at the group's borders. A learned relative position
bias is indexed by the key-query offset counted in dilated steps, so NA and
DiNA blocks share the ``(2 kernel - 1)**2`` table layout of Swin.

DiNAT alternates NA (dilation 1) and DiNA blocks; the dilation of a stage is
about ``map side / kernel`` (8, 4, 2, 1 at 224 px with kernel 7), so a DiNA
block sees its whole group: a sparse global view.

This is plain torch: each axis gets a ``(length, kernel)`` table of key
positions (:func:`neighbourhood`), their product indexes the keys and values
of every query (a gather, ``kernel**2`` times the activation, never an
``N x N`` map), and a batched matmul scores them. The ``natten`` package has
fused kernels for this; it is not needed here.

Small maps: a map side shorter than ``kernel * dilation`` leaves some group
with fewer than ``kernel`` positions, which NA cannot fill (``natten`` pads the
input with zeros). Here, as Swin clamps its window, the kernel is clamped to
the shorter side and the dilation to ``side // kernel`` (DiNAT's own rule for
choosing it); DiNAT-Mini at 224 px needs neither.

Published figures (for the zoo's ``dinat_mini``): DiNAT-Mini has 20M parameters
and 2.7 GFLOPs at 224 px (the paper's ImageNet-1K table and SHI-Labs/Neighborhood-Attention-Transformer,
DiNAT.md); its depths, widths, heads and dilations are that repository's
``classification/dinat.py`` (``dinat_mini``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, merge_heads, split_heads
from nas.blocks.common import factory_kwargs
from nas.blocks.contract import Chunks, RelativeTable
from nas.blocks.quantizable import QuantizableAttention, create_gate, create_softmax
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = [
    "NeighbourhoodAttentionCfg",
    "ConvTokenizerCfg",
    "NeighbourhoodAttention",
    "ConvTokenizer",
    "neighbourhood",
    "neighbourhood_2d",
]


@dataclass(frozen=True)
class NeighbourhoodAttentionCfg(QuantizableAttention, Component):
    """Multi-head attention over each query's ``kernel x kernel`` neighbours, ``dilation`` apart.

    Attributes:
        heads: number of heads; must divide the stage width.
        kernel: neighbourhood side in tokens (DiNAT: 7); odd, so the neighbourhood is centred.
        dilation: distance between neighbours; 1 is NA, more is DiNA.
        qkv_bias: bias on the fused query/key/value projection (DiNAT uses one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3), "relative_position_bias": RelativeTable()}  # rows [q; k; v]

    heads: int = 2
    kernel: int = 7
    dilation: int = 1
    qkv_bias: bool = True

    def effective(self, height: int, width: int) -> tuple[int, int]:
        """``(kernel, dilation)`` used on a ``height x width`` map: clamped so every group holds a neighbourhood."""
        side = min(height, width)
        kernel = min(self.kernel, side)
        return kernel, max(1, min(self.dilation, side // kernel))

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be odd and >= 1, got {self.kernel}", path="kernel")
        if self.dilation < 1:
            raise ConfigError(f"must be >= 1, got {self.dilation}", path="dilation")
        if site.prefix_tokens:
            raise ConfigError("neighbourhood attention cannot run on tokens that carry a class token", path="kind")


@dataclass(frozen=True)
class ConvTokenizerCfg(Component):
    """NAT's stem: two 3x3 stride-2 convolutions (to ``dim // 2``, then ``dim``; no activation), then LayerNorm."""

    dim: int | None = None

    def check(self, site: Site) -> None:
        if self.dim is not None and self.dim < 2:
            raise ConfigError(f"must be >= 2 (the first convolution has dim // 2 channels), got {self.dim}",
                              path="dim")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(2):
            height, width = conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)
        return height, width


def neighbourhood(length: int, kernel: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: each position's ``kernel`` neighbours and their offsets in dilated steps.

    Position ``p`` belongs to group ``p % dilation`` and is its ``p // dilation``-th member. Its
    neighbours are the ``kernel`` consecutive members of its group centred on it, the run shifted
    inward where it would leave the group. Needs every group to hold ``kernel`` members
    (``length >= kernel * dilation``).

    Returns:
        ``(keys, offsets)``, both ``length x kernel`` long tensors: the neighbours' positions, and
        ``neighbour index - own index`` within the group plus ``kernel - 1`` (in ``[0, 2 kernel - 2]``).
    """
    position = torch.arange(length)
    group, index = position % dilation, position // dilation
    members = (length - group + dilation - 1) // dilation
    start = torch.minimum((index - (kernel - 1) // 2).clamp(min=0), members - kernel)
    member = start[:, None] + torch.arange(kernel)
    return group[:, None] + dilation * member, member - index[:, None] + kernel - 1


def neighbourhood_2d(size: tuple[int, int], kernel: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, kernel**2)`` key indices into the flattened map and relative-bias rows, row-major.

    The bias row of offset ``(dy, dx)`` is ``dy * (2 kernel - 1) + dx``, as in Swin's table.
    """
    height, width = size
    rows, row_offsets = neighbourhood(height, kernel, dilation)
    cols, col_offsets = neighbourhood(width, kernel, dilation)
    keys = rows[:, None, :, None] * width + cols[None, :, None, :]
    bias = row_offsets[:, None, :, None] * (2 * kernel - 1) + col_offsets[None, :, None, :]
    return keys.reshape(height * width, kernel * kernel), bias.reshape(height * width, kernel * kernel)


@register("mixer", "neighbourhood_attention", NeighbourhoodAttentionCfg)
class NeighbourhoodAttention(TokenMixer):
    """Fused ``qkv`` linear, attention over each query's gathered neighbours with a relative bias, projection.

    The map size is fixed at build time, so the neighbour and bias indices are
    computed once and kept as non-persistent buffers (derived data, not state).
    Scores are a ``1 x head_dim`` by ``head_dim x kernel**2`` matmul per query, so
    the cost model counts ``tokens * dim * kernel**2`` MACs for each of the two
    attention products; DiNAT's published FLOPs include them too.
    """

    def __init__(self, cfg: NeighbourhoodAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        kernel, dilation = cfg.effective(*size)
        self.heads = cfg.heads
        self.scale = (dim // cfg.heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias, **dd)
        self.softmax = create_softmax(cfg)
        self.gate = create_gate(cfg, dim, cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.relative_position_bias = nn.Parameter(torch.zeros((2 * kernel - 1) ** 2, cfg.heads, **dd))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        keys, bias_rows = neighbourhood_2d(size, kernel, dilation)
        self.register_buffer("neighbours", keys.to(device), persistent=False)
        self.register_buffer("bias_rows", bias_rows.to(device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = (split_heads(part, self.heads) for part in self.qkv(x).chunk(3, dim=-1))
        keys, values = key[:, :, self.neighbours], value[:, :, self.neighbours]  # (B, heads, tokens, k*k, head_dim)
        scores = ((query * self.scale).unsqueeze(-2) @ keys.transpose(-1, -2)).squeeze(-2)
        scores = scores + self.relative_position_bias[self.bias_rows].permute(2, 0, 1)
        mixed = (self.softmax(scores).unsqueeze(-2) @ values).squeeze(-2)
        return self.proj(self.gate(x, merge_heads(mixed)))


@register("stem", "conv_tokenizer", ConvTokenizerCfg)
class ConvTokenizer(Stem):
    """Two overlapping 3x3 stride-2 convolutions with biases, then LayerNorm over channels (NAT, DiNAT)."""

    def __init__(self, cfg: ConvTokenizerCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        self.proj = nn.Sequential(nn.Conv2d(in_dim, cfg.dim // 2, 3, 2, 1, **dd),
                                  nn.Conv2d(cfg.dim // 2, cfg.dim, 3, 2, 1, **dd))
        self.norm = create_norm("layernorm", cfg.dim, "nchw", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))
