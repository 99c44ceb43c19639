"""EfficientFormerV2-S0, S1, S2 and L.

Y. Li et al., "Rethinking Vision Transformers for MobileNet Size and Speed", arXiv:2212.08059: Section 3
and Figure 2 (a 4D, all-BN design: a two-conv stem; FFN blocks of 1x1 conv, 3x3 depthwise conv and 1x1
conv with BN and GELU and layer scale; in the last two stages the last blocks add multi-head attention
with talking heads, a depthwise "local" value branch and learned position biases, in stage 3 on a 2x
strided copy of the map that is upsampled back; the stage 3 -> 4 downsampler adds an attention whose
queries are a pooled plus depthwise-strided map; BN, pooling and two linear heads, averaged at inference).
Widths, depths, per-block expansion ratios and the number of attention blocks per model follow the
authors' release (snap-research/EfficientFormer models/efficientformer_v2.py): S0 32/48/96/176,
2/2/6/4, 2 attention blocks; S1 32/48/120/224, 3/3/9/6, 2; S2 32/64/144/288, 4/4/12/8, 4;
L 40/80/192/384, 5/5/15/10, 6; attention with 8 heads, key dim 32 (16 in the downsampler), value ratio 4.
Parameter counts: the README table (3.5M, 6.1M, 12.6M, 26.1M; copied into predictors/calibration/iphone12.csv).
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ConvBnAct, ReferenceModel

__all__ = ["ConvFFN", "Attention4D", "DownsampleAttention", "EfficientFormerV2", "MODELS"]

# Expansion ratio of each block, per stage (the release's expansion_ratios_*).
_RATIOS: dict[str, tuple[tuple[int, ...], ...]] = {
    "s0": ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
    "s1": ((4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
    "s2": ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
    "l": ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)),
}
_WIDTHS = {"s0": (32, 48, 96, 176), "s1": (32, 48, 120, 224), "s2": (32, 64, 144, 288), "l": (40, 80, 192, 384)}
_ATTENTION_BLOCKS = {"s0": 2, "s1": 2, "s2": 4, "l": 6}


def _bias_index(query_size: int, key_size: int, step: int) -> torch.Tensor:
    """Index of the learned bias per (query, key) pair: one bias per distinct absolute 2D offset."""
    offsets: dict[tuple[int, int], int] = {}
    index = []
    for qy, qx in itertools.product(range(query_size), repeat=2):
        for ky, kx in itertools.product(range(key_size), repeat=2):
            offset = (abs(qy * step - ky), abs(qx * step - kx))
            index.append(offsets.setdefault(offset, len(offsets)))
    return torch.tensor(index).view(query_size ** 2, key_size ** 2)


class ConvFFN(nn.Module):
    """1x1 conv (BN, GELU), 3x3 depthwise conv (BN, GELU), 1x1 conv (BN)."""

    def __init__(self, dim: int, hidden: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.net = nn.Sequential(ConvBnAct(dim, hidden, 1, act="gelu", bias=True, **dd),
                                 ConvBnAct(hidden, hidden, 3, groups=hidden, act="gelu", bias=True, **dd),
                                 ConvBnAct(hidden, dim, 1, act="none", bias=True, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Attention4D(nn.Module):
    """Multi-head attention on a ``(B, C, H, W)`` map with talking heads, position biases and a local value conv.

    With ``stride`` 2 it attends on a depthwise-strided copy and upsamples the result back (stage 3).
    """

    def __init__(self, dim: int, size: int, *, stride: int = 1, heads: int = 8, key_dim: int = 32,
                 value_ratio: int = 4, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_ratio * key_dim
        self.size = math.ceil(size / stride)
        values = heads * self.value_dim
        self.stride_conv = (ConvBnAct(dim, dim, 3, stride, groups=dim, act="none", bias=True, **dd) if stride > 1
                            else nn.Identity())
        self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear") if stride > 1 else nn.Identity()
        self.q = ConvBnAct(dim, heads * key_dim, 1, act="none", bias=True, **dd)
        self.k = ConvBnAct(dim, heads * key_dim, 1, act="none", bias=True, **dd)
        self.v = ConvBnAct(dim, values, 1, act="none", bias=True, **dd)
        self.v_local = ConvBnAct(values, values, 3, groups=values, act="none", bias=True, **dd)
        self.talking_head1 = nn.Conv2d(heads, heads, 1, **dd)
        self.talking_head2 = nn.Conv2d(heads, heads, 1, **dd)
        self.proj = nn.Sequential(nn.GELU(), ConvBnAct(values, dim, 1, act="none", bias=True, **dd))
        index = _bias_index(self.size, self.size, 1)
        self.biases = nn.Parameter(torch.zeros(heads, int(index.max()) + 1, **dd))
        self.register_buffer("bias_index", index.to(device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        x = self.stride_conv(x)
        tokens = self.size * self.size
        q = self.q(x).reshape(batch, self.heads, self.key_dim, tokens).transpose(2, 3)
        k = self.k(x).reshape(batch, self.heads, self.key_dim, tokens)
        v = self.v(x)
        local = self.v_local(v)
        v = v.reshape(batch, self.heads, self.value_dim, tokens).transpose(2, 3)
        attn = (q @ k) * self.key_dim ** -0.5 + self.biases[:, self.bias_index]
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        out = (attn @ v).transpose(2, 3).reshape(batch, -1, self.size, self.size) + local
        return self.proj(self.upsample(out))


class DownsampleAttention(nn.Module):
    """Stride-2 attention whose queries are a 1x1-pooled plus a depthwise-strided map (stage 3 -> 4)."""

    def __init__(self, dim: int, out_dim: int, size: int, *, heads: int = 8, key_dim: int = 16, value_ratio: int = 4,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_ratio * key_dim
        self.size, self.out_size = size, math.ceil(size / 2)
        values = heads * self.value_dim
        self.q_local = nn.Conv2d(dim, dim, 3, 2, 1, groups=dim, **dd)
        self.q_pool = nn.AvgPool2d(1, 2)
        self.q = ConvBnAct(dim, heads * key_dim, 1, act="none", bias=True, **dd)
        self.k = ConvBnAct(dim, heads * key_dim, 1, act="none", bias=True, **dd)
        self.v = ConvBnAct(dim, values, 1, act="none", bias=True, **dd)
        self.v_local = ConvBnAct(values, values, 3, 2, groups=values, act="none", bias=True, **dd)
        self.proj = nn.Sequential(nn.GELU(), ConvBnAct(values, out_dim, 1, act="none", bias=True, **dd))
        index = _bias_index(self.out_size, size, math.ceil(size / self.out_size))
        self.biases = nn.Parameter(torch.zeros(heads, int(index.max()) + 1, **dd))
        self.register_buffer("bias_index", index.to(device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        queries, keys = self.out_size ** 2, self.size ** 2
        q = self.q(self.q_local(x) + self.q_pool(x)).reshape(batch, self.heads, self.key_dim, queries).transpose(2, 3)
        k = self.k(x).reshape(batch, self.heads, self.key_dim, keys)
        v = self.v(x)
        local = self.v_local(v)
        v = v.reshape(batch, self.heads, self.value_dim, keys).transpose(2, 3)
        attn = ((q @ k) * self.key_dim ** -0.5 + self.biases[:, self.bias_index]).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(batch, -1, self.out_size, self.out_size) + local
        return self.proj(out)


class _Block(nn.Module):
    """``x + ls1 * attention(x)`` (when given), then ``x + ls2 * ffn(x)``."""

    def __init__(self, dim: int, ratio: int, attention: nn.Module | None, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.attention = attention
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), 1e-5, **dd)) if attention is not None else None
        self.ffn = ConvFFN(dim, dim * ratio, **dd)
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), 1e-5, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is not None and self.scale1 is not None:
            x = x + self.scale1 * self.attention(x)
        return x + self.scale2 * self.ffn(x)


class _Downsample(nn.Module):
    """3x3/2 conv + BN, plus (between stages 3 and 4) a downsampling attention."""

    def __init__(self, dim: int, out_dim: int, size: int, *, attention: bool, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.conv = ConvBnAct(dim, out_dim, 3, 2, act="none", bias=True, **dd)
        self.attention = DownsampleAttention(dim, out_dim, size, **dd) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + self.attention(x) if self.attention is not None else out


class EfficientFormerV2(nn.Module):
    """EfficientFormerV2 variant ``size`` (``s0``, ``s1``, ``s2``, ``l``) for ``resolution`` inputs."""

    def __init__(self, *, variant: str, resolution: int = 224, num_classes: int = 1000, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        widths, ratios, attention_blocks = _WIDTHS[variant], _RATIOS[variant], _ATTENTION_BLOCKS[variant]
        layers: list[nn.Module] = [ConvBnAct(3, widths[0] // 2, 3, 2, act="gelu", bias=True, **dd),
                                   ConvBnAct(widths[0] // 2, widths[0], 3, 2, act="gelu", bias=True, **dd)]
        for stage, (dim, stage_ratios) in enumerate(zip(widths, ratios, strict=True)):
            size = math.ceil(resolution / 2 ** (stage + 2))
            if stage > 0:
                layers.append(_Downsample(widths[stage - 1], dim, math.ceil(resolution / 2 ** (stage + 1)),
                                          attention=stage == 3, **dd))
            for index, ratio in enumerate(stage_ratios):
                attention = None
                if stage >= 2 and index >= len(stage_ratios) - attention_blocks:
                    attention = Attention4D(dim, size, stride=2 if stage == 2 else 1, **dd)
                layers.append(_Block(dim, ratio, attention, **dd))
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(widths[-1], **dd))
        self.head = nn.Linear(widths[-1], num_classes, **dd)
        self.head_dist = nn.Linear(widths[-1], num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean((2, 3))
        return (self.head(pooled) + self.head_dist(pooled)) / 2


_SOURCE = ("Li et al. arXiv:2212.08059 Sec. 3, Fig. 2; snap-research/EfficientFormer models/efficientformer_v2.py "
           "(configs) and README (params)")

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"efficientformerv2_{variant}", "efficientformerv2", partial(EfficientFormerV2, variant=variant),
                   224, params_m, _SOURCE)
    for variant, params_m in (("s0", 3.5), ("s1", 6.1), ("s2", 12.6), ("l", 26.1))
)
