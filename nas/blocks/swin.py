"""Shifted-window attention and patch merging (Swin Transformer).

Paper: "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
Liu et al., ICCV 2021, arXiv:2103.14030. Attention runs inside non-overlapping
``window x window`` windows with a learned relative position bias; every other
block cyclically shifts the map by ``window // 2`` first, so information crosses
window borders, and masks attention between tokens that the shift made neighbours
across the wrapped border (Sec. 3.2, Fig. 4). Stages are joined by patch merging:
concatenate each 2x2 neighbourhood (4C channels), LayerNorm, linear to the new width.

Published figures used by the zoo: Swin-T/S/B 4.5 / 8.7 / 15.4 GFLOPs (really MACs,
attention matmuls included, as ``nas.cost`` counts) at 224 px from the paper's Table 1
and the official README, which round the parameters to 28M / 50M / 88M; the exact
28.29M / 49.61M / 87.77M come from open-mmlab/mmpretrain, configs/swin_transformer/README.md.

Small maps: when the feature map is no larger than the window (``min(H, W) <= window``),
the window is clamped to ``min(H, W)`` and the block does not shift, exactly as
the official implementation does; Swin-T's 7x7 last stage therefore runs plain
window attention in both blocks of its ``[shift 0, shift 3]`` pattern. After
clamping, the window must divide both sides of the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads
from nas.blocks.common import factory_kwargs
from nas.blocks.contract import Chunks, FitsMap, RelativeTable
from nas.blocks.downsample import Downsample
from nas.blocks.qkr import QueryKeyMergeable, create_qkv, qkv_heads
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.template import TokenMixer
from nas.errors import ConfigError

__all__ = [
    "WindowAttentionCfg",
    "PatchMergingCfg",
    "WindowAttention",
    "PatchMerging",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]


@dataclass(frozen=True)
class WindowAttentionCfg(QueryKeyMergeable, QuantizableAttention, Component):
    """Multi-head attention inside ``window x window`` windows, optionally cyclically shifted by ``shift``.

    Attributes:
        heads: number of heads; must divide the stage width.
        window: window side in tokens (Swin: 7).
        shift: cyclic shift in tokens before partitioning; 0, or ``window // 2`` as in Swin
            (any value in ``[0, window)`` is accepted).
        qkv_bias: bias on the fused query/key/value projection.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
        qk_merged: QKR under integer weights (:class:`~nas.blocks.qkr.QueryKeyMergeable`); the bias and shift
            mask add to the merged logits as they do to the plain ones.
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3), "relative_position_bias": RelativeTable()}
    resolution_fields = {"window": FitsMap(halved=("shift",))}

    heads: int = 3
    window: int = 7
    shift: int = 0
    qkv_bias: bool = True

    def effective(self, height: int, width: int) -> tuple[int, int]:
        """``(window, shift)`` used on a ``height x width`` map: clamped, unshifted when the map is small."""
        side = min(height, width)
        if side <= self.window:
            return side, 0
        return self.window, self.shift

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.window < 1:
            raise ConfigError(f"must be >= 1, got {self.window}", path="window")
        if not 0 <= self.shift < self.window:
            raise ConfigError(f"must be in [0, window={self.window}), got {self.shift}", path="shift")
        if site.prefix_tokens:
            raise ConfigError("window attention cannot run on tokens that carry a class token", path="kind")
        window, _ = self.effective(site.height, site.width)
        if site.height % window or site.width % window:
            raise ConfigError(f"window {window} does not divide the {site.height}x{site.width} feature map",
                              path="window")


@dataclass(frozen=True)
class PatchMergingCfg(Component):
    """Concatenate each 2x2 neighbourhood (4x the channels), LayerNorm, linear (no bias) to the stage width."""

    layout = "nlc"
    # [top-left | bottom-left | top-right | bottom-right] neighbours, each in_dim wide: a prefix of the whole
    # would hand one neighbour's weights to another whenever the stage before is narrower than its widest.
    sharing = {"norm": Chunks(4), "reduction.weight": Chunks(4, axis=1)}

    def check(self, site: Site) -> None:
        if site.height % 2 or site.width % 2:
            raise ConfigError(f"needs an even feature map, got {site.height}x{site.width}", path="kind")
        if site.prefix_tokens:
            raise ConfigError("cannot merge patches of tokens that carry a class token", path="kind")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height // 2, width // 2


def relative_position_index(window: int) -> torch.Tensor:
    """``(window**2, window**2)`` long tensor: row of the bias table for each (query, key) pair.

    Offsets ``(dy, dx)`` in ``[-(window - 1), window - 1]`` map to
    ``(dy + window - 1) * (2 * window - 1) + dx + window - 1``.
    """
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    delta_rows = rows[:, None] - rows[None, :] + window - 1
    delta_cols = cols[:, None] - cols[None, :] + window - 1
    return delta_rows * (2 * window - 1) + delta_cols


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B, windows, window**2, C)``, windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, window * window, channels)


def window_reverse(x: torch.Tensor, window: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B, windows, window**2, C) -> (B, H, W, C)``."""
    height, width = size
    batch, channels = x.shape[0], x.shape[-1]
    x = x.reshape(batch, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def shifted_window_mask(size: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """Additive mask ``(windows, 1, window**2, window**2)``: ``-inf`` between tokens of different regions.

    After a cyclic shift by ``shift``, the last window row/column holds tokens from
    the far side of the map. Each axis splits into three regions,
    ``[0, L - window)``, ``[L - window, L - shift)`` and ``[L - shift, L)``; two
    tokens of one window may attend to each other only if they share a region on
    both axes. With ``shift == 0`` every window is one region and the mask is zero.
    """
    height, width = size

    def regions(length: int) -> torch.Tensor:
        position = torch.arange(length)
        return (position >= length - window).long() + (position >= length - shift).long()

    label = regions(height)[:, None] * 3 + regions(width)[None, :]
    label = window_partition(label[None, :, :, None], window).squeeze(-1).squeeze(0)
    blocked = label[:, :, None] != label[:, None, :]
    mask = torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))
    return mask.unsqueeze(1)


@register("mixer", "window_attention", WindowAttentionCfg)
class WindowAttention(TokenMixer):
    """Shifted-window multi-head attention with a relative position bias.

    The map size is fixed at build time, so the shift mask and the bias index are
    computed once and kept as non-persistent buffers (derived data, not state).
    The cyclic shift is applied inside the mixer, after the block's norm; a
    per-token norm commutes with the shift, so this equals Swin's order.
    """

    def __init__(self, cfg: WindowAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.window, self.shift = cfg.effective(*size)
        self.heads = cfg.heads
        self.qkv = create_qkv(dim, cfg.heads, bias=cfg.qkv_bias, merged=cfg.qk_merged, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.relative_position_bias = nn.Parameter(torch.zeros((2 * self.window - 1) ** 2, cfg.heads, **dd))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window).to(device),
                             persistent=False)
        self.register_buffer("shift_mask", shifted_window_mask(size, self.window, self.shift).to(**dd),
                             persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """``(windows, heads, window**2, window**2)``: relative position bias plus the shift mask."""
        tokens = self.window * self.window
        bias = self.relative_position_bias[self.relative_position_index.flatten()]
        bias = bias.view(tokens, tokens, self.heads).permute(2, 0, 1)
        return bias + self.shift_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.reshape(batch, *self.size, channels)
        x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.window)
        query, key, value, scale = qkv_heads(self.qkv, windows, self.heads)
        out = self.attend(windows, query, key, value, attn_mask=self.attention_bias().to(query.dtype), scale=scale)
        x = window_reverse(self.proj(out), self.window, self.size)
        x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x.reshape(batch, -1, channels)


@register("downsample", "patch_merging", PatchMergingCfg)
class PatchMerging(Downsample):
    """Swin's downsampler on tokens: ``(B, H*W, C) -> (B, H/2 * W/2, dim)``.

    The four neighbours are concatenated in Swin's order (top-left, bottom-left,
    top-right, bottom-right), so weights are interchangeable with the reference.
    """

    def __init__(self, cfg: PatchMergingCfg, *, in_dim: int, dim: int, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.norm = nn.LayerNorm(4 * in_dim, **dd)
        self.reduction = nn.Linear(4 * in_dim, dim, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        height, width = self.size
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
        x = x.permute(0, 1, 3, 4, 2, 5).reshape(batch, (height // 2) * (width // 2), 4 * channels)
        return self.reduction(self.norm(x))
