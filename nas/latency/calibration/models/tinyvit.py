"""TinyViT-5M, 11M and 21M (the last also at 384 and 512 px).

K. Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers", arXiv:2207.10666,
Section 3.2 and Table 4, as released in microsoft/Cream TinyViT/models/tiny_vit.py: a stem of two 3x3/2
conv + BN (GELU between); stage 1 of MBConv blocks (1x1 conv x4, 3x3 depthwise, 1x1 conv, each with BN,
GELU after the first two and after the residual add); stages 2-4 of blocks that attend inside windows
(LayerNorm, one qkv linear, a learned bias per head and relative offset, softmax, projection) on a
residual, then a 3x3 depthwise conv + BN on the map, then a LayerNorm-GELU MLP (ratio 4) on a residual;
after each of stages 1-3 a patch merging (1x1 conv, 3x3/2 depthwise conv, 1x1 conv, BN each, GELU between);
the mean token, a LayerNorm and a linear head. Configurations (``tiny_vit_*``): 5M widths 64/128/160/320,
heads 2/4/5/10; 11M 64/128/256/448, heads 2/4/8/14; 21M 96/192/384/576, heads 3/6/12/18; depths 2/2/6/2;
windows 7/7/14/7 at 224 px, 12/12/24/12 at 384, 16/16/32/16 at 512.
Parameter counts: the README "Model Zoo" table (5.4M, 11M, 21M; copied into ../shared/calibration/v100.csv).

The windowed attention is a reshape/transpose partition around batched attention, as the release runs it;
no ``nas.blocks`` kind is needed. The published V100 figures for TinyViT are PyTorch AMP throughputs
without a batch size, which no V100 setting takes; the models are here for the day a regime is stated.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel

__all__ = ["WindowAttention", "TinyViTBlock", "TinyViT", "MODELS"]


def _offset_index(window: int) -> torch.Tensor:
    """Index of the learned bias per (query, key) pair of a window: one per distinct absolute 2D offset."""
    points = list(itertools.product(range(window), repeat=2))
    offsets: dict[tuple[int, int], int] = {}
    index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
    return torch.tensor(index).view(len(points), len(points))


class WindowAttention(nn.Module):
    """LayerNorm, then multi-head attention with a learned bias per head and relative offset, over ``(B, N, C)``."""

    def __init__(self, dim: int, heads: int, window: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.norm = nn.LayerNorm(dim, **dd)
        self.qkv = nn.Linear(dim, 3 * dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        index = _offset_index(window)
        self.biases = nn.Parameter(torch.zeros(heads, int(index.max()) + 1, **dd))
        self.register_buffer("bias_index", index.to(device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1)) * (dim // self.heads) ** -0.5 + self.biases[:, self.bias_index]
        out = (attn.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class TinyViTBlock(nn.Module):
    """``x + window_attention(x)``, a 3x3 depthwise conv + BN on the map, then ``x + mlp(x)``; on ``(B, C, H, W)``."""

    def __init__(self, dim: int, heads: int, window: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.window = window
        self.attention = WindowAttention(dim, heads, window, **dd)
        self.local_conv = ConvBnAct(dim, dim, 3, groups=dim, act="none", **dd)
        self.mlp = nn.Sequential(nn.LayerNorm(dim, **dd), nn.Linear(dim, 4 * dim, **dd), nn.GELU(),
                                 nn.Linear(4 * dim, dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        window = self.window
        rows, cols = height // window, width // window
        tokens = x.permute(0, 2, 3, 1)
        windows = tokens.reshape(batch, rows, window, cols, window, dim).transpose(2, 3)
        windows = windows.reshape(batch * rows * cols, window * window, dim)
        attended = self.attention(windows).reshape(batch, rows, cols, window, window, dim).transpose(2, 3)
        tokens = tokens + attended.reshape(batch, height, width, dim)
        x = self.local_conv(tokens.permute(0, 3, 1, 2))
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.mlp(tokens)
        return tokens.transpose(1, 2).reshape(batch, dim, height, width)


class _MBConv(nn.Module):
    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = 4 * dim
        self.net = nn.Sequential(ConvBnAct(dim, hidden, act="gelu", **dd),
                                 ConvBnAct(hidden, hidden, 3, groups=hidden, act="gelu", **dd),
                                 ConvBnAct(hidden, dim, act="none", **dd))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.net(x))


def _patch_merging(dim: int, out_dim: int, **dd: Any) -> nn.Module:
    return nn.Sequential(ConvBnAct(dim, out_dim, act="gelu", **dd),
                         ConvBnAct(out_dim, out_dim, 3, 2, groups=out_dim, act="gelu", **dd),
                         ConvBnAct(out_dim, out_dim, act="none", **dd))


class TinyViT(nn.Module):
    """TinyViT with stage ``widths``, ``heads`` (stages 2-4) and ``windows`` (stages 2-4), depths 2/2/6/2."""

    def __init__(self, *, widths: tuple[int, ...], heads: tuple[int, ...], windows: tuple[int, ...],
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        depths = (2, 2, 6, 2)
        layers: list[nn.Module] = [ConvBnAct(3, widths[0] // 2, 3, 2, act="gelu", **dd),
                                   ConvBnAct(widths[0] // 2, widths[0], 3, 2, act="none", **dd)]
        layers += [_MBConv(widths[0], **dd) for _ in range(depths[0])]
        for stage in range(1, 4):
            layers.append(_patch_merging(widths[stage - 1], widths[stage], **dd))
            layers += [TinyViTBlock(widths[stage], heads[stage - 1], windows[stage - 1], **dd)
                       for _ in range(depths[stage])]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(widths[-1], **dd)
        self.head = nn.Linear(widths[-1], num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean((2, 3))))


_SOURCE = ("Wu et al. arXiv:2207.10666 Sec. 3.2, Table 4; microsoft/Cream TinyViT/models/tiny_vit.py (configs) and "
           "TinyViT/README.md (params)")
_21M: dict[str, Any] = {"widths": (96, 192, 384, 576), "heads": (6, 12, 18)}

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("tinyvit_5m", "tinyvit",
                   partial(TinyViT, widths=(64, 128, 160, 320), heads=(4, 5, 10), windows=(7, 14, 7)), 224, 5.4,
                   _SOURCE),
    ReferenceModel("tinyvit_11m", "tinyvit",
                   partial(TinyViT, widths=(64, 128, 256, 448), heads=(4, 8, 14), windows=(7, 14, 7)), 224, 11.0,
                   _SOURCE),
    ReferenceModel("tinyvit_21m", "tinyvit", partial(TinyViT, windows=(7, 14, 7), **_21M), 224, 21.0, _SOURCE),
    ReferenceModel("tinyvit_21m_384", "tinyvit", partial(TinyViT, windows=(12, 24, 12), **_21M), 384, 21.0, _SOURCE),
    ReferenceModel("tinyvit_21m_512", "tinyvit", partial(TinyViT, windows=(16, 32, 16), **_21M), 512, 21.0, _SOURCE),
)
