"""Twins-PCPVT-S/B/L and Twins-SVT-S/B/L (PaddleClas ``pcpvt_*`` and ``alt_gvt_*``).

X. Chu et al., "Twins: Revisiting the Design of Spatial Attention in Vision Transformers", arXiv:2104.13840,
Sections 2.1-2.2 and Tables 1-2. Both are four-stage pyramids (non-overlapping patch embeddings of 4 then 2,
each a strided conv and a LayerNorm) with a positional encoding generator (PEG: ``x + dwconv3x3(x)`` on the
map) after each stage's first block and a LayerNorm on the last stage's tokens, whose mean feeds a linear head.

* PCPVT: PVT v1's blocks (spatial-reduction attention, sr 8/4/2/1; a plain GELU MLP); widths 64/128/320/512,
  heads 1/2/5/8, MLP ratios 8/8/4/4; depths S 3/4/6/3, B 3/4/18/3, L 3/8/27/3.
* SVT: blocks alternate locally-grouped self-attention (LSA: attention inside non-overlapping 7x7 windows)
  and global sub-sampled attention (GSA: PCPVT's spatial-reduction attention, sr 8/4/2/1), MLP ratio 4;
  S 64/128/256/512, heads 2/4/8/16, depths 2/2/10/4; B 96/192/384/768, heads 3/6/12/24, depths 2/2/18/2;
  L 128/256/512/1024, heads 4/8/16/32, depths 2/2/18/2.

Configurations: Meituan-AutoML/Twins gvt.py (``pcpvt_*``, ``alt_gvt_*``, window size 7, even blocks LSA, odd
blocks GSA). Parameter counts: the paper's Tables 1-2 (24.1M, 43.8M, 60.9M; 24M, 56M, 99.2M), as PaddleClas
docs/zh_CN/models/ImageNet1k/Twins.md lists them.

LSA is written as a window partition (reshape/permute copies), batched attention per window, and the
reverse partition -- the ops and shapes the Paddle graph runs; no block kind of ``nas.blocks`` is needed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel
from nas.latency.calibration.models.pvt import (
    AttentionFactory,
    PyramidTransformer,
    Size,
    SpatialReductionAttention,
    StageSpec,
    attend,
)

__all__ = ["LocallyGroupedAttention", "MODELS"]

WINDOW = 7


class LocallyGroupedAttention(nn.Module):
    """Multi-head attention inside non-overlapping ``window x window`` groups of the token map (Twins' LSA)."""

    def __init__(self, dim: int, heads: int, window: int = WINDOW, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        batch, tokens, dim = x.shape
        window = self.window
        rows, cols = size[0] // window, size[1] // window
        groups = x.reshape(batch, rows, window, cols, window, dim).transpose(2, 3)
        qkv = self.qkv(groups).reshape(batch, rows * cols, window * window, 3, self.heads, dim // self.heads)
        qkv = qkv.permute(3, 0, 1, 4, 2, 5)
        out = attend(qkv[0], qkv[1], qkv[2]).transpose(2, 3).reshape(batch, rows, cols, window, window, dim)
        return self.proj(out.transpose(2, 3).reshape(batch, tokens, dim))


def _pcpvt(depths: tuple[int, ...]) -> partial:
    def attention(heads: int, sr: int) -> AttentionFactory:
        return lambda dim, index, **dd: SpatialReductionAttention(dim, heads, sr, **dd)

    stages = tuple(StageSpec(dim, depth, 4 if index == 0 else 2, attention(heads, sr), ratio, False, True, False)
                   for index, (dim, depth, heads, sr, ratio)
                   in enumerate(zip((64, 128, 320, 512), depths, (1, 2, 5, 8), (8, 4, 2, 1), (8, 8, 4, 4),
                                    strict=True)))
    return partial(PyramidTransformer, stages=stages)


def _svt(widths: tuple[int, ...], heads: tuple[int, ...], depths: tuple[int, ...]) -> partial:
    def attention(count: int, sr: int) -> AttentionFactory:
        def make(dim: int, index: int, **dd: Any) -> nn.Module:
            if index % 2 == 0:
                return LocallyGroupedAttention(dim, count, **dd)
            return SpatialReductionAttention(dim, count, sr, **dd)
        return make

    stages = tuple(StageSpec(dim, depth, 4 if index == 0 else 2, attention(count, sr), 4.0, False, True, False)
                   for index, (dim, depth, count, sr)
                   in enumerate(zip(widths, depths, heads, (8, 4, 2, 1), strict=True)))
    return partial(PyramidTransformer, stages=stages)


_SOURCE = ("Chu et al. arXiv:2104.13840 Sec. 2, Tables 1-2 (params); Meituan-AutoML/Twins gvt.py (configs); "
           "PaddleClas docs/zh_CN/models/ImageNet1k/Twins.md")

MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("twins_pcpvt_small", "twins", _pcpvt((3, 4, 6, 3)), 224, 24.1, _SOURCE),
    ReferenceModel("twins_pcpvt_base", "twins", _pcpvt((3, 4, 18, 3)), 224, 43.8, _SOURCE),
    ReferenceModel("twins_pcpvt_large", "twins", _pcpvt((3, 8, 27, 3)), 224, 60.9, _SOURCE),
    ReferenceModel("twins_svt_small", "twins", _svt((64, 128, 256, 512), (2, 4, 8, 16), (2, 2, 10, 4)), 224,
                   24.0, _SOURCE),
    ReferenceModel("twins_svt_base", "twins", _svt((96, 192, 384, 768), (3, 6, 12, 24), (2, 2, 18, 2)), 224,
                   56.0, _SOURCE),
    ReferenceModel("twins_svt_large", "twins", _svt((128, 256, 512, 1024), (4, 8, 16, 32), (2, 2, 18, 2)), 224,
                   99.2, _SOURCE),
)
