"""ViTs with token merging (ToMe): timm's ViT-S/B/L and SWAG's ViT-B/L/H, r tokens merged per block.

D. Bolya et al., "Token Merging: Your ViT But Faster", arXiv:2210.09461, Section 3, as released in
facebookresearch/ToMe (tome/merge.py ``bipartite_soft_matching``, ``merge_wavg``; tome/patch/timm.py
``ToMeBlock``, ``ToMeAttention``): between a block's attention and its MLP, the tokens are split alternately
into two sets, each token of the first is matched to its most similar token of the second (cosine similarity
of the attention keys averaged over heads), and the ``r`` best-matched pairs are merged by a size-weighted
average (the class token is never merged); attention adds ``log(size)`` to its logits (proportional
attention). Merging is a similarity matmul, a max, a sort, gathers, a scatter-add and a concatenation per
block: ops that no ``nas.blocks`` kind emits, so the model is written here rather than as a kind. The ViTs
are the paper's (Dosovitskiy et al. arXiv:2010.11929 Table 1: B 768/12 layers/12 heads, L 1024/24/16,
H 1280/32/16, MLP ratio 4) and DeiT-S's (Touvron et al. arXiv:2012.12877 Table 1: 384, 12 layers, 6 heads).
Merge counts: the ToMe README's tables (timm ViT-S/16 and ViT-B/16 r=13, ViT-L/16 r=7, ViT-L/16 at 384 r=23;
SWAG ViT-B/16 at 384 r=45, ViT-L/16 at 512 r=40, ViT-H/14 at 518 r=40). Token merging adds no parameters:
the counts are those papers' (22M, 86M, 307M, 632M).

The ToMe README's V100 throughputs state neither batch size nor precision, so no V100 setting takes them; the
models are here for the day a regime is stated.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["ProportionalAttention", "MergingBlock", "TokenMergingViT", "merge_tokens", "MODELS"]


def merge_tokens(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """Merge the ``r`` most similar (first set, second set) token pairs of ``x``, weighted by ``size``.

    ``x`` is ``(B, N, C)``, ``size`` ``(B, N, 1)`` (tokens each one stands for), ``metric`` ``(B, N, D)``; token 0
    (the class token) is never merged. Returns the ``N - r`` tokens and their sizes.
    """
    metric = metric / metric.norm(dim=-1, keepdim=True)
    scores = metric[..., ::2, :] @ metric[..., 1::2, :].transpose(-1, -2)
    scores[..., 0, :] = -torch.inf
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)[..., None]
    kept, merged = order[..., r:, :].sort(dim=1)[0], order[..., :r, :]
    target = partner[..., None].gather(dim=-2, index=merged)

    def merge(values: torch.Tensor) -> torch.Tensor:
        first, second = values[..., ::2, :], values[..., 1::2, :]
        batch, count, channels = first.shape
        unmerged = first.gather(dim=-2, index=kept.expand(batch, count - r, channels))
        moved = first.gather(dim=-2, index=merged.expand(batch, r, channels))
        second = second.scatter_reduce(-2, target.expand(batch, r, channels), moved, reduce="sum")
        return torch.cat((unmerged, second), dim=1)

    merged_size = merge(size)
    return merge(x * size) / merged_size, merged_size


class ProportionalAttention(nn.Module):
    """Multi-head attention with ``log(size)`` added to the logits; also returns the head-averaged keys."""

    def __init__(self, dim: int, heads: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1)) * (dim // self.heads) ** -0.5 + size.log()[:, None, None, :, 0]
        out = (attn.softmax(dim=-1) @ qkv[2]).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out), qkv[1].mean(1)


class MergingBlock(nn.Module):
    """Pre-norm block: ``x + attention(ln(x))``, merge ``r`` tokens, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, r: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.r = r
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.attention = ProportionalAttention(dim, heads, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim, **dd), nn.GELU(), nn.Linear(4 * dim, dim, **dd))

    def forward(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, metric = self.attention(self.norm1(x), size)
        x = x + attended
        r = min(self.r, (x.shape[1] - 1) // 2)
        if r > 0:
            x, size = merge_tokens(x, size, metric, r)
        return x + self.mlp(self.norm2(x)), size


class TokenMergingViT(nn.Module):
    """ViT (patch embedding, class token, position embedding, pre-norm blocks, class-token head) with ToMe."""

    def __init__(self, *, resolution: int, patch: int, dim: int, depth: int, heads: int, r: int,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch, **dd)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (resolution // patch) ** 2, dim, **dd))
        self.blocks = nn.ModuleList(MergingBlock(dim, heads, r, **dd) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.head = nn.Linear(dim, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.class_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        size = torch.ones_like(x[..., :1])
        for block in self.blocks:
            x, size = block(x, size)
        return self.head(self.norm(x)[:, 0])


_SOURCE = ("Bolya et al. arXiv:2210.09461 Sec. 3; facebookresearch/ToMe tome/merge.py, tome/patch/timm.py, README "
           "(r per model); ViT: Dosovitskiy et al. arXiv:2010.11929 Table 1 (params); ViT-S: Touvron et al. "
           "arXiv:2012.12877 Table 1 (DeiT-S, 22M)")
_SMALL: dict[str, Any] = {"patch": 16, "dim": 384, "depth": 12, "heads": 6}
_BASE: dict[str, Any] = {"patch": 16, "dim": 768, "depth": 12, "heads": 12}
_LARGE: dict[str, Any] = {"patch": 16, "dim": 1024, "depth": 24, "heads": 16}
_HUGE: dict[str, Any] = {"patch": 14, "dim": 1280, "depth": 32, "heads": 16}


def _entry(name: str, resolution: int, r: int, params_m: float, config: dict[str, Any]) -> ReferenceModel:
    return ReferenceModel(name, "tome", partial(TokenMergingViT, resolution=resolution, r=r, **config), resolution,
                          params_m, _SOURCE)


MODELS: tuple[ReferenceModel, ...] = (
    _entry("tome_vit_small_r13", 224, 13, 22.0, _SMALL),
    _entry("tome_vit_base_r13", 224, 13, 86.0, _BASE),
    _entry("tome_vit_large_r7", 224, 7, 307.0, _LARGE),
    _entry("tome_vit_large_384_r23", 384, 23, 307.0, _LARGE),
    _entry("tome_vit_base_384_r45", 384, 45, 86.0, _BASE),
    _entry("tome_vit_large_512_r40", 512, 40, 307.0, _LARGE),
    _entry("tome_vit_huge_518_r40", 518, 40, 632.0, _HUGE),
)
