"""Global context attention, its fused-MBConv query generator, downsampler and stem (GC ViT).

Paper: "Global Context Vision Transformers", Hatamizadeh, Yin, Heinrich, Kautz and
Molchanov, ICML 2023, arXiv:2206.09959. A GC ViT stage alternates *local* window
attention (queries, keys and values from the same window) with *global* window
attention, whose keys and values come from the window but whose queries are one
``window x window`` set of *global query tokens* for the whole image. Those tokens
are made once per stage, from the stage input, by repeating a modified fused-MBConv
(depthwise 3x3, GELU, squeeze-excitation, pointwise, added to its input) each
followed by a 3x3/2 max-pool, until the map is one window large (Sec. 3.2-3.3). The
same fused-MBConv, then a 3x3/2 convolution, is the downsampler between stages, and
a 3x3/2 convolution followed by it (at constant width) is the stem.

Why the whole stage body is one block of the Arch (the ``global_context`` mixer):
the global queries are shared stage state, made once and read by every global
block, while the blocks of an Arch pass one tensor between them. Giving each global
block a generator of its own would add a generator per block pair (about 4% more
parameters and MACs for GC ViT-T). The body's ``depth`` counts its layers (local
first, then global, alternating); the supernet shares layers as prefixes (a
3-layer body uses the first three layers of the widest body), each layer's tensors
declared through ``layers.*`` patterns.

The global queries are the generator's map read as ``window**2`` tokens of the stage
width in row-major order, split into heads like keys; every window of an image
attends with that image's queries.

Published figures (``spaces/zoo/gcvit_*.yaml``): GC ViT-XXT 12M parameters and
2.1 GFLOPs, GC ViT-T 28M and 4.7 GFLOPs at 224 px (the paper's ImageNet-1K table and
the NVlabs/GCVit README); configurations from NVlabs/GCVit ``models/gc_vit.py``
(``gc_vit_xxtiny``, ``gc_vit_tiny``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import DropPath, LayerNorm2d, SqueezeExcite, create_layer_scale, factory_kwargs
from nas.blocks.contract import Chunks, FitsMap, RelativeTable
from nas.blocks.downsample import Downsample
from nas.blocks.quantizable import OPTIONS_OFF, QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.swin import (
    WindowAttention,
    WindowAttentionCfg,
    relative_position_index,
    window_partition,
    window_reverse,
)
from nas.blocks.template import BlockContext, FusedBlock, create_norm, ffn_residual
from nas.errors import ConfigError

__all__ = [
    "GlobalContextCfg",
    "GcvitDownsampleCfg",
    "GcvitStemCfg",
    "FusedMBConv",
    "GlobalQueryGenerator",
    "GlobalQueryAttention",
    "GlobalContext",
    "GcvitDownsample",
    "GcvitStem",
    "query_levels",
]

_SE_RATIO = 0.25  # squeeze-excitation width relative to the channels (GC ViT's SE)


def query_levels(height: int, width: int, window: int) -> int:
    """Max-pooling levels (3x3/2, padding 1) that bring a ``height x width`` map to ``window x window``.

    0 means the map already is one window; the generator then runs one level without pooling.

    Raises:
        ConfigError: repeated halving never lands on the window (path ``window``).
    """
    levels, sides = 0, (height, width)
    while max(sides) > window:
        sides = tuple(conv_out(side, 3, 2, 1) for side in sides)
        levels += 1
    if sides != (window, window):
        raise ConfigError(f"halving the {height}x{width} feature map never gives a {window}x{window} map of global "
                          "queries", path="window")
    return levels


@dataclass(frozen=True)
class GlobalContextCfg(QuantizableAttention, Component):
    """A GC ViT stage body: global queries made once, then ``depth`` layers, local and global in turn.

    The block's ``norm``, ``ffn`` and ``layer_scale`` apply to every layer.

    Attributes:
        depth: layers; even ones (from 0) attend locally, odd ones with the global queries.
        heads: heads of both attentions; must divide the stage width.
        window: window side in tokens; clamped to the map when the map is no larger (GC ViT's
            14x14 third stage at window 14 attends globally in every layer).
        qkv_bias: bias on the query/key/value projections.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`),
            for both attentions.
    """

    layout = "nlc"
    sharing = {"layers.*.attn.qkv": Chunks(3), "layers.*.attn.kv": Chunks(2),
               "layers.*.attn.relative_position_bias": RelativeTable()}
    resolution_fields = {"window": FitsMap()}
    holds_layers = True  # a stage body: its tensors are allocated only where the supernet's scan met it

    depth: int = 2
    heads: int = 2
    window: int = 7
    qkv_bias: bool = True

    def effective_window(self, height: int, width: int) -> int:
        return min(self.window, height, width)

    def check(self, site: Site) -> None:
        if self.depth < 1:
            raise ConfigError(f"must be >= 1, got {self.depth}", path="depth")
        check_heads(self.heads, site.dim)
        if self.window < 1:
            raise ConfigError(f"must be >= 1, got {self.window}", path="window")
        if site.prefix_tokens:
            raise ConfigError("global context attention cannot run on tokens that carry a class token", path="kind")
        window = self.effective_window(site.height, site.width)
        if site.height % window or site.width % window:
            raise ConfigError(f"window {window} does not divide the {site.height}x{site.width} feature map",
                              path="window")
        query_levels(site.height, site.width, window)


@dataclass(frozen=True)
class GcvitDownsampleCfg(Component):
    """LayerNorm, fused-MBConv, 3x3/2 convolution (no bias) to the stage width, LayerNorm (GC ViT's downsampler)."""

    def check(self, site: Site) -> None:
        if site.prefix_tokens:
            raise ConfigError("cannot downsample a feature map that carries class tokens", path="kind")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)


@dataclass(frozen=True)
class GcvitStemCfg(Component):
    """A 3x3/2 convolution to ``dim``, then the downsampler at constant width: 4x smaller (GC ViT's stem)."""

    dim: int | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        for _ in range(2):
            height, width = conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)
        return height, width


class FusedMBConv(nn.Module):
    """``x + pointwise(se(gelu(depthwise3x3(x))))`` on NCHW, without biases (GC ViT's modified fused-MBConv)."""

    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.body = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False, **dd),
            nn.GELU(),
            SqueezeExcite(dim, int(dim * _SE_RATIO), "gelu", bias=False, **dd),
            nn.Conv2d(dim, dim, 1, bias=False, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalQueryGenerator(nn.Module):
    """Fused-MBConv levels, each but a lone one followed by a 3x3/2 max-pool: ``(B, C, H, W) -> (B, w*w, C)``."""

    def __init__(self, dim: int, levels: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        pooled = levels > 0
        self.levels = nn.Sequential(*(
            nn.Sequential(FusedMBConv(dim, device=device, dtype=dtype),
                          nn.MaxPool2d(3, 2, 1) if pooled else nn.Identity())
            for _ in range(max(levels, 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.levels(x).flatten(2).transpose(1, 2)


class GlobalQueryAttention(nn.Module):
    """Window attention whose queries are the image's global query tokens; keys and values from the window."""

    def __init__(self, dim: int, heads: int, window: int, size: tuple[int, int], qkv_bias: bool, *,
                 options: QuantizableAttention = OPTIONS_OFF, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.window = window
        self.heads = heads
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.attend = SoftmaxAttention(options, dim=dim, heads=heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.relative_position_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads, **dd))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window).to(device),
                             persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """``(heads, window**2, window**2)`` relative position bias."""
        tokens = self.window * self.window
        bias = self.relative_position_bias[self.relative_position_index.flatten()]
        return bias.view(tokens, tokens, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        windows = window_partition(x.reshape(batch, *self.size, channels), self.window)
        key, value = (split_heads(part, self.heads) for part in self.kv(windows).chunk(2, dim=-1))
        query = split_heads(query, self.heads).unsqueeze(1).expand_as(key)
        out = self.attend(windows, query, key, value, attn_mask=self.attention_bias().to(query.dtype))
        return window_reverse(self.proj(out), self.window, self.size).reshape(batch, -1, channels)


class _LocalAttention(WindowAttention):
    """Swin's window attention, unshifted, taking (and ignoring) the global queries like its global sibling."""

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class _ContextLayer(nn.Module):
    """``x + ls(attn(norm(x), queries))``, then the block's FFN residual (none when the FFN is ``none``)."""

    def __init__(self, attn: nn.Module, block: Block, context: BlockContext, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        dim = context.dim
        self.norm = create_norm(block.norm, dim, "nlc", **dd)
        self.attn = attn
        self.scale = create_layer_scale(dim, block.layer_scale, "nlc", **dd)
        self.drop_path = DropPath(context.drop_path) if context.drop_path > 0 else nn.Identity()
        self.ffn = ffn_residual(block, context, "nlc", **dd)

    def forward(self, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.scale(self.attn(self.norm(x), query)))
        return self.ffn(x)


@register("mixer", "global_context", GlobalContextCfg)
class GlobalContext(FusedBlock):
    """A GC ViT stage body: ``queries = generator(x)``, then the layers, each reading the same queries.

    Every layer gets the block's drop-path rate (the builder's ramp is per block of the Arch).
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: GlobalContextCfg = block.mixer  # type: ignore[assignment]
        dim, size = context.dim, context.size
        window = cfg.effective_window(*size)
        self.size = size
        self.queries = GlobalQueryGenerator(dim, query_levels(*size, window), **dd)
        local = WindowAttentionCfg(heads=cfg.heads, window=window, shift=0, qkv_bias=cfg.qkv_bias,
                                   clip_zeta=cfg.clip_zeta, clip_gamma=cfg.clip_gamma, gated=cfg.gated)
        self.layers = nn.ModuleList(
            _ContextLayer(_LocalAttention(local, dim=dim, size=size, **dd) if index % 2 == 0
                          else GlobalQueryAttention(dim, cfg.heads, window, size, cfg.qkv_bias, options=cfg, **dd),
                          block, context, **dd)
            for index in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        query = self.queries(x.transpose(1, 2).reshape(batch, channels, *self.size))
        for layer in self.layers:
            x = layer(x, query)
        return x


class _Reduce(nn.Module):
    """LayerNorm, fused-MBConv, 3x3/2 convolution without bias, LayerNorm; NCHW throughout."""

    def __init__(self, in_dim: int, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.pre_norm = LayerNorm2d(in_dim, **dd)
        self.conv = FusedMBConv(in_dim, **dd)
        self.reduction = nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False, **dd)
        self.post_norm = LayerNorm2d(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_norm(self.reduction(self.conv(self.pre_norm(x))))


@register("downsample", "gcvit_downsample", GcvitDownsampleCfg)
class GcvitDownsample(Downsample):
    def __init__(self, cfg: GcvitDownsampleCfg, *, in_dim: int, dim: int, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.reduce = _Reduce(in_dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(x)


@register("stem", "gcvit", GcvitStemCfg)
class GcvitStem(Stem):
    def __init__(self, cfg: GcvitStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        dim: int = cfg.dim  # type: ignore[assignment]
        self.proj = nn.Conv2d(in_dim, dim, 3, 2, 1, **dd)
        self.reduce = _Reduce(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.proj(x))
