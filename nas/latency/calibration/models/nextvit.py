"""Next-ViT-S, B and L.

J. Li et al., "Next-ViT: Next Generation Vision Transformer for Efficient Deployment in Realistic Industrial
Scenarios", arXiv:2207.05501, Section 3 and Table 1: a four-conv stem (3x3/2 to 64, 3x3 to 32, 3x3 to 64,
3x3/2 to 64; BN, ReLU); four stages of Next Convolution Blocks (NCB: multi-head convolutional attention, a
3x3 grouped conv with 32 channels per group + BN + ReLU + 1x1 projection, on a residual; then BN and a 1x1
conv MLP of ratio 3 with ReLU, on a residual) and Next Transformer Blocks (NTB: efficient multi-head
self-attention, head dim 32, on 75% of the output channels with keys and values average-pooled by sr^2 over
the token sequence, sr 8/4/2/1, and BatchNorm1d; then a 1x1 projection of that branch to the other 25%
through an NCB-style convolutional attention; the two concatenated, BN, and a ratio-2 MLP); stage widths
96, 192 (last block 256), 384 (every fifth block 512, an NTB), 768 (last block 1024, an NTB); depths
S 3/4/10/3, B 3/4/20/3, L 3/4/30/3. A block that changes stride or width opens with a patch embedding
(2x2 average pooling when strided, then 1x1 conv + BN). BN, global pooling and a linear head close it.
Configuration: bytedance/Next-ViT classification/nextvit.py (``NCB``, ``NTB``, ``E_MHSA``, ``MHCA``,
``nextvit_small/base/large``). Parameter counts: the bytedance/Next-ViT README (31.7M, 44.8M, 57.8M);
PaddleClas docs/zh_CN/models/ImageNet1k/NextViT.md lists 31.80M, 44.88M, 57.95M.

NCB and NTB are written here from those parts rather than as block kinds: no ``nas.blocks`` kind mixes a
grouped-conv attention with a channel-split transformer branch, and a calibration model needs only the ops.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel
from nas.latency.calibration.models.pvt import attend

__all__ = ["ConvAttention", "NextConvBlock", "NextTransformerBlock", "NextViT", "MODELS"]

HEAD_DIM = 32


def _divisible(value: float, divisor: int = 32) -> int:
    """Round to a multiple of ``divisor``, never more than 10% down (the release's ``_make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _patch_embed(in_channels: int, out_channels: int, stride: int, **dd: Any) -> nn.Module:
    """2x2 average pooling when strided, then 1x1 conv + BN where the width changes (else nothing)."""
    if stride == 2:
        return nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                             ConvBnAct(in_channels, out_channels, act="none", **dd))
    if in_channels != out_channels:
        return ConvBnAct(in_channels, out_channels, act="none", **dd)
    return nn.Identity()


class ConvAttention(nn.Module):
    """Multi-head convolutional attention: 3x3 conv with ``HEAD_DIM`` channels per group, BN, ReLU, 1x1 projection."""

    def __init__(self, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.net = nn.Sequential(ConvBnAct(dim, dim, 3, groups=dim // HEAD_DIM, **dd),
                                 nn.Conv2d(dim, dim, 1, bias=False, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _mlp(dim: int, ratio: int, **dd: Any) -> nn.Module:
    hidden = _divisible(dim * ratio)
    return nn.Sequential(nn.Conv2d(dim, hidden, 1, **dd), nn.ReLU(), nn.Conv2d(hidden, dim, 1, **dd))


class NextConvBlock(nn.Module):
    """NCB: patch embedding, ``x + conv_attention(x)``, then ``x + mlp(bn(x))`` (MLP ratio 3)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.embed = _patch_embed(in_channels, out_channels, stride, **dd)
        self.attention = ConvAttention(out_channels, **dd)
        self.norm = nn.BatchNorm2d(out_channels, **dd)
        self.mlp = _mlp(out_channels, 3, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attention(x)
        return x + self.mlp(self.norm(x))


class EfficientSelfAttention(nn.Module):
    """E-MHSA over ``(B, N, C)``: queries from every token, keys and values from tokens average-pooled ``sr^2``-fold."""

    def __init__(self, dim: int, sr: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = dim // HEAD_DIM
        self.q, self.k, self.v = (nn.Linear(dim, dim, **dd) for _ in range(3))
        self.proj = nn.Linear(dim, dim, **dd)
        self.pool = nn.AvgPool1d(sr * sr, sr * sr) if sr > 1 else None
        self.norm = nn.BatchNorm1d(dim, **dd) if sr > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        source = x
        if self.pool is not None and self.norm is not None:
            source = self.norm(self.pool(x.transpose(1, 2))).transpose(1, 2)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, self.heads, HEAD_DIM).transpose(1, 2)

        out = attend(heads(self.q(x)), heads(self.k(source)), heads(self.v(source)))
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class NextTransformerBlock(nn.Module):
    """NTB: E-MHSA on 75% of the width, a convolutional-attention branch on the rest, concatenated, then the MLP."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, sr: int, *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        attention_channels = _divisible(int(out_channels * 0.75))
        conv_channels = out_channels - attention_channels
        self.embed = _patch_embed(in_channels, attention_channels, stride, **dd)
        self.norm1 = nn.BatchNorm2d(attention_channels, **dd)
        self.attention = EfficientSelfAttention(attention_channels, sr, **dd)
        self.projection = _patch_embed(attention_channels, conv_channels, 1, **dd)
        self.conv_attention = ConvAttention(conv_channels, **dd)
        self.norm2 = nn.BatchNorm2d(out_channels, **dd)
        self.mlp = _mlp(out_channels, 2, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        batch, channels, height, width = x.shape
        tokens = self.norm1(x).flatten(2).transpose(1, 2)
        x = x + self.attention(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        branch = self.projection(x)
        x = torch.cat((x, branch + self.conv_attention(branch)), dim=1)
        return x + self.mlp(self.norm2(x))


class NextViT(nn.Module):
    """Next-ViT with stage ``depths`` (3rd stage a multiple of 5)."""

    def __init__(self, *, depths: tuple[int, int, int, int], num_classes: int = 1000, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        layers: list[nn.Module] = [ConvBnAct(3, 64, 3, 2, **dd), ConvBnAct(64, 32, 3, **dd),
                                   ConvBnAct(32, 64, 3, **dd), ConvBnAct(64, 64, 3, 2, **dd)]
        plan = (
            [(96, False)] * depths[0],
            [(192, False)] * (depths[1] - 1) + [(256, True)],
            [(384, False), (384, False), (384, False), (384, False), (512, True)] * (depths[2] // 5),
            [(768, False)] * (depths[3] - 1) + [(1024, True)],
        )
        channels = 64
        for stage, blocks in enumerate(plan):
            for index, (width, transformer) in enumerate(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(NextTransformerBlock(channels, width, stride, (8, 4, 2, 1)[stage], **dd) if transformer
                              else NextConvBlock(channels, width, stride, **dd))
                channels = width
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(channels, **dd))
        self.head = nn.Linear(channels, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


_SOURCE = ("Li et al. arXiv:2207.05501 Sec. 3, Table 1; bytedance/Next-ViT classification/nextvit.py (configs) and "
           "README (params)")

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"nextvit_{name}", "nextvit", partial(NextViT, depths=depths), 224, params_m, _SOURCE)
    for name, depths, params_m in (("small", (3, 4, 10, 3), 31.7), ("base", (3, 4, 20, 3), 44.8),
                                   ("large", (3, 4, 30, 3), 57.8))
)
