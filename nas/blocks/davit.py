"""DaViT: channel group attention ("channel tokens"), the conv positional encoding and the dual blocks.

Paper: "DaViT: Dual Attention Vision Transformers", Ding et al., ECCV 2022,
arXiv:2204.03645. Spatial attention treats positions as tokens and channels as
their features; channel attention swaps the two: each channel is a token whose
feature is the whole map, so every score is taken over all positions and the
mixer sees the image globally. To keep the cost linear in the number of
positions, channels are split into groups and attend only within their group
(Sec. 3.2, the channel group attention equation): per group ``g`` of ``C_g``
channels, ``softmax(Q_g^T K_g / sqrt(C_g)) V_g^T``, a ``C_g x C_g`` attention map.
DaViT alternates a windowed spatial block with a channel block. Each of
its blocks starts both halves with a conv positional encoding, the *CPE*: a
depthwise 3x3 convolution added to its input, outside the norm and the residual
branch (``x = cpe(x); x = x + attn(norm(x)); x = cpe(x); x = x + ffn(norm(x))``).
The CPE is DaViT's only position information, so its window attention has no
relative position bias. DaViT pads a map that its window does not divide; here
the window must divide the map (every DaViT-T map at 224 px is a multiple of 7).
The block-owning kinds ``davit_spatial`` and
``davit_channel`` are those blocks; the plain ``channel_attention`` mixer is the
channel half in the MetaFormer template.

Published figures (``spaces/zoo/davit_tiny.yaml``): DaViT-Tiny / Small / Base
have 28.3M / 49.7M / 87.9M parameters and 4.5 / 8.8 / 15.5 GFLOPs at 224 px (the
paper's ImageNet-1K table and the official dingmyu/davit README). DaViT-T has widths
96, 192, 384, 768, heads (channel groups) 3, 6, 12, 24, one spatial-channel pair in
stages 1, 2, 4 and three in stage 3, window 7, MLP ratio 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import ToNCHW, ToNLC, create_layer_scale, factory_kwargs
from nas.blocks.contract import Chunks, FitsMap
from nas.blocks.quantizable import OPTIONS_OFF, QuantizableAttention, SoftmaxAttention, create_gate, create_product
from nas.blocks.registry import register
from nas.blocks.swin import window_partition, window_reverse
from nas.blocks.template import BlockContext, FusedBlock, Residual, TokenMixer, create_ffn, create_norm
from nas.errors import ConfigError

__all__ = ["ChannelAttentionCfg", "ChannelAttention", "DualSpatialCfg", "DualChannelCfg", "ConvPosEnc",
           "PlainWindowAttention", "DualAttentionBlock"]


@dataclass(frozen=True)
class ChannelAttentionCfg(QuantizableAttention, Component):
    """Attention among the channels of each of ``groups`` channel groups, over every position.

    Attributes:
        groups: channel groups (DaViT calls them heads); must divide the stage width.
        qkv_bias: bias on the fused query/key/value projection (DaViT uses one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`);
            the gate is per group and position.
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3)}  # rows [q; k; v]

    groups: int = 8
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.groups, site.dim)


@dataclass(frozen=True)
class DualSpatialCfg(QuantizableAttention, Component):
    """DaViT's spatial block: CPE, window attention without position bias, CPE, the block's FFN.

    Attributes:
        heads: heads; must divide the stage width.
        window: window side in tokens (DaViT: 7); must divide both sides of the map.
        qkv_bias: bias on the fused query/key/value projection.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"
    sharing = {"attn.fn.qkv": Chunks(3)}  # rows [q; k; v]
    resolution_fields = {"window": FitsMap()}

    heads: int = 3
    window: int = 7
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.window < 1:
            raise ConfigError(f"must be >= 1, got {self.window}", path="window")
        if site.prefix_tokens:
            raise ConfigError("window attention cannot run on tokens that carry a class token", path="kind")
        if site.height % self.window or site.width % self.window:
            raise ConfigError(f"window {self.window} does not divide the {site.height}x{site.width} feature map",
                              path="window")

    def attention(self, dim: int, size: tuple[int, int], dd: dict[str, Any]) -> nn.Module:
        return PlainWindowAttention(dim, self.heads, self.window, size, self.qkv_bias, options=self, **dd)


@dataclass(frozen=True)
class DualChannelCfg(QuantizableAttention, Component):
    """DaViT's channel block: CPE, channel group attention, CPE, the block's FFN.

    Attributes:
        groups: channel groups (DaViT calls them heads); must divide the stage width.
        qkv_bias: bias on the fused query/key/value projection.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"
    sharing = {"attn.fn.qkv": Chunks(3)}  # rows [q; k; v]

    groups: int = 3
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.groups, site.dim)
        if site.prefix_tokens:
            raise ConfigError("the conv positional encoding cannot run on tokens that carry a class token",
                              path="kind")

    def attention(self, dim: int, size: tuple[int, int], dd: dict[str, Any]) -> nn.Module:
        channel = ChannelAttentionCfg(groups=self.groups, qkv_bias=self.qkv_bias, clip_zeta=self.clip_zeta,
                                      clip_gamma=self.clip_gamma, gated=self.gated)
        return ChannelAttention(channel, dim=dim, size=size, **dd)


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
        self.product = create_product(cfg)
        self.gate = create_gate(cfg, dim, cfg.groups, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (batch, groups, C_g, tokens): each channel of a group is one token of the attention
        query, key, value = (split_heads(part, self.groups).transpose(-1, -2)
                             for part in self.qkv(x).chunk(3, dim=-1))
        mixed = self.product(query, key, value, scale=self.scale)
        return self.proj(self.gate(x, mixed.permute(0, 3, 1, 2).flatten(-2)))


class ConvPosEnc(nn.Module):
    """DaViT's CPE on tokens: ``x + depthwise3x3(x)`` with the tokens folded into their map."""

    def __init__(self, dim: int, size: tuple[int, int], *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.to_map = ToNCHW(size)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **factory_kwargs(device, dtype))
        self.to_tokens = ToNLC()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.to_tokens(self.conv(self.to_map(x)))


class PlainWindowAttention(nn.Module):
    """Multi-head attention inside non-overlapping windows, with no position bias (the CPE gives position)."""

    def __init__(self, dim: int, heads: int, window: int, size: tuple[int, int], qkv_bias: bool, *,
                 options: QuantizableAttention = OPTIONS_OFF, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.window = window
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.attend = SoftmaxAttention(options, dim=dim, heads=heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        windows = window_partition(x.reshape(batch, *self.size, channels), self.window)
        query, key, value = (split_heads(part, self.heads) for part in self.qkv(windows).chunk(3, dim=-1))
        out = self.proj(self.attend(windows, query, key, value))
        return window_reverse(out, self.window, self.size).reshape(batch, -1, channels)


@register("mixer", "davit_channel", DualChannelCfg)
@register("mixer", "davit_spatial", DualSpatialCfg)
class DualAttentionBlock(FusedBlock):
    """``x = cpe(x); x = x + ls(attn(norm(x))); x = cpe(x); x = x + ls(ffn(norm(x)))``.

    The attention is the config's (spatial or channel); with ffn ``none`` the second
    half is left out, its CPE included.
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: DualSpatialCfg | DualChannelCfg = block.mixer  # type: ignore[assignment]
        dim, size = context.dim, context.size
        self.attn_cpe = ConvPosEnc(dim, size, **dd)
        self.attn = Residual(create_norm(block.norm, dim, "nlc", **dd), cfg.attention(dim, size, dd),
                             create_layer_scale(dim, block.layer_scale, "nlc", **dd), context.drop_path)
        self.ffn: nn.Module = nn.Identity()
        if block.ffn.kind != "none":
            self.ffn = nn.Sequential(
                ConvPosEnc(dim, size, **dd),
                Residual(create_norm(block.norm, dim, "nlc", **dd), create_ffn(block.ffn, dim, "nlc", size=size, **dd),
                         create_layer_scale(dim, block.layer_scale, "nlc", **dd), context.drop_path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.attn(self.attn_cpe(x)))
