"""PVTv2-B0 ... B5, and the pyramid-transformer layers Twins reuses.

W. Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", arXiv:2106.13797, Section 3
and Table 1: four stages at strides 4, 8, 16, 32, each opened by an overlapping patch embedding (a 7x7/4
conv in stage 1, 3x3/2 after, then LayerNorm) and closed by a LayerNorm; pre-norm blocks of spatial-reduction
attention (queries from every token; keys and values from the map shrunk by an ``sr x sr`` strided conv and a
LayerNorm) and a convolutional feed-forward network (linear, 3x3 depthwise conv, GELU, linear); the mean
token feeds a linear head. Configurations (whai362/PVT classification/pvt_v2.py): widths 32/64/160/256 for
B0 and 64/128/320/512 for B1-B5; heads 1/2/5/8; sr ratios 8/4/2/1; MLP ratios 8/8/4/4 (B5: 4/4/4/4); depths
B0 2/2/2/2, B1 2/2/2/2, B2 3/4/6/3, B3 3/4/18/3, B4 3/8/27/3, B5 3/6/40/3.
Parameter counts: whai362/PVT README, "Image Classification" table (3.7M, 14.0M, 25.4M, 45.2M, 62.6M,
82.0M; PaddleClas docs/zh_CN/models/ImageNet1k/PVTV2.md lists the same for B0-B4).

Attention is written out (``q @ k``, softmax, ``@ v``) rather than as one fused call, as the Paddle graphs
the calibration rows ran are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["AttentionFactory", "PatchEmbed", "SpatialReductionAttention", "TokenMlp", "Block", "StageSpec",
           "PyramidTransformer", "attend", "MODELS"]

Size = tuple[int, int]
AttentionFactory = Callable[..., nn.Module]
"""``(dim, block index, device=, dtype=) -> attention module`` taking ``(tokens, size)``."""


class PatchEmbed(nn.Module):
    """A strided conv from a ``(B, C, H, W)`` map to tokens, then LayerNorm; returns the tokens and their map size."""

    def __init__(self, in_channels: int, dim: int, patch: int, stride: int, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.proj = nn.Conv2d(in_channels, dim, patch, stride, patch // 2 if patch > stride else 0, **dd)
        self.norm = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Size]:
        x = self.proj(x)
        size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), size


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` over the last two axes, written out."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from the map shrunk ``sr`` times by a strided conv + LN."""

    def __init__(self, dim: int, heads: int, sr: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.q = nn.Linear(dim, dim, **dd)
        self.kv = nn.Linear(dim, 2 * dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.reduce = nn.Conv2d(dim, dim, sr, sr, **dd) if sr > 1 else None
        self.norm = nn.LayerNorm(dim, **dd) if sr > 1 else None

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        batch, tokens, dim = x.shape
        head_dim = dim // self.heads
        q = self.q(x).reshape(batch, tokens, self.heads, head_dim).transpose(1, 2)
        source = x
        if self.reduce is not None and self.norm is not None:
            source = self.reduce(x.transpose(1, 2).reshape(batch, dim, *size)).flatten(2).transpose(1, 2)
            source = self.norm(source)
        kv = self.kv(source).reshape(batch, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        out = attend(q, kv[0], kv[1]).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class TokenMlp(nn.Module):
    """Linear up, optionally a 3x3 depthwise conv on the map (PVTv2), GELU, linear down."""

    def __init__(self, dim: int, hidden: int, *, depthwise: bool, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.fc1 = nn.Linear(dim, hidden, **dd)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, **dd) if depthwise else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, **dd)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            batch, tokens, hidden = x.shape
            x = self.dwconv(x.transpose(1, 2).reshape(batch, hidden, *size)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class Block(nn.Module):
    """Pre-norm block: ``x + attention(ln(x), size)``, then ``x + mlp(ln(x), size)``."""

    def __init__(self, dim: int, attention: nn.Module, mlp: TokenMlp, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.attention = attention
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), size)
        return x + self.mlp(self.norm2(x), size)


@dataclass(frozen=True)
class StageSpec:
    """One stage of a pyramid transformer.

    Attributes:
        dim: token width.
        depth: blocks.
        patch: kernel of the patch embedding (its stride is 4 in stage 1, else 2).
        make_attention: ``(dim, block index) -> attention module`` taking ``(tokens, size)``.
        mlp_ratio: hidden width / ``dim``.
        depthwise_mlp: PVTv2's 3x3 depthwise conv inside the MLP.
        position_conv: Twins' positional encoding generator (``x + dwconv3x3(x)``) after the first block.
        stage_norm: a LayerNorm closing the stage (PVTv2); else only the last stage is normed.
    """

    dim: int
    depth: int
    patch: int
    make_attention: AttentionFactory
    mlp_ratio: float
    depthwise_mlp: bool
    position_conv: bool
    stage_norm: bool


class _Stage(nn.Module):
    def __init__(self, in_channels: int, spec: StageSpec, stride: int, *, last: bool, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        dim = spec.dim
        self.embed = PatchEmbed(in_channels, dim, spec.patch, stride, **dd)
        self.blocks = nn.ModuleList(
            Block(dim, spec.make_attention(dim, index, **dd),
                  TokenMlp(dim, int(dim * spec.mlp_ratio), depthwise=spec.depthwise_mlp, **dd), **dd)
            for index in range(spec.depth))
        self.position = (nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd) if spec.position_conv else None)
        self.norm = nn.LayerNorm(dim, **dd) if spec.stage_norm or last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, size = self.embed(x)
        batch, _, dim = tokens.shape
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, size)
            if index == 0 and self.position is not None:
                grid = tokens.transpose(1, 2).reshape(batch, dim, *size)
                tokens = tokens + self.position(grid).flatten(2).transpose(1, 2)
        if self.norm is not None:
            tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(batch, dim, *size)


class PyramidTransformer(nn.Module):
    """Four token stages at strides 4, 8, 16, 32; the mean token of the last feeds a linear head."""

    def __init__(self, *, stages: tuple[StageSpec, ...], num_classes: int = 1000, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        widths = [3, *(spec.dim for spec in stages)]
        self.stages = nn.Sequential(*(
            _Stage(widths[index], spec, 4 if index == 0 else 2, last=index == len(stages) - 1, **dd)
            for index, spec in enumerate(stages)))
        self.head = nn.Linear(stages[-1].dim, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x).mean((2, 3)))


def _sra(heads: int, sr: int) -> AttentionFactory:
    return lambda dim, index, **dd: SpatialReductionAttention(dim, heads, sr, **dd)


def _pvt_v2(widths: tuple[int, ...], depths: tuple[int, ...], mlp_ratios: tuple[float, ...]) -> partial:
    stages = tuple(StageSpec(dim, depth, 7 if index == 0 else 3, _sra(heads, sr), ratio, True, False, True)
                   for index, (dim, depth, heads, sr, ratio)
                   in enumerate(zip(widths, depths, (1, 2, 5, 8), (8, 4, 2, 1), mlp_ratios, strict=True)))
    return partial(PyramidTransformer, stages=stages)


_SOURCE = ("Wang et al. arXiv:2106.13797 Sec. 3, Table 1; whai362/PVT classification/pvt_v2.py (configs) and "
           "README (params)")
_WIDE = (64, 128, 320, 512)
_RATIOS = (8.0, 8.0, 4.0, 4.0)
_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...], float]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), _RATIOS, 3.7),
    "b1": (_WIDE, (2, 2, 2, 2), _RATIOS, 14.0),
    "b2": (_WIDE, (3, 4, 6, 3), _RATIOS, 25.4),
    "b3": (_WIDE, (3, 4, 18, 3), _RATIOS, 45.2),
    "b4": (_WIDE, (3, 8, 27, 3), _RATIOS, 62.6),
    "b5": (_WIDE, (3, 6, 40, 3), (4.0, 4.0, 4.0, 4.0), 82.0),
}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"pvt_v2_{name}", "pvtv2", _pvt_v2(widths, depths, ratios), 224, params_m, _SOURCE)
    for name, (widths, depths, ratios, params_m) in _VARIANTS.items()
)
