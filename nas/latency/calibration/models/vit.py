"""Vision Transformers: ViT-B/L at patch 16 and 32, PaddleClas's ViT-S, and the distilled DeiT models.

* A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale",
  arXiv:2010.11929, Table 1 (Base: 12 layers, width 768, MLP 3072, 12 heads; Large: 24, 1024, 4096, 16)
  and Section 3.1 (patch embedding, class token, learned position embeddings, pre-norm blocks, LayerNorm
  and a linear head on the class token). Parameter counts: the paper's Table 1 (86M, 307M) and PaddleClas
  docs/zh_CN/models/ImageNet1k/ViT_and_DeiT.md (86.42M, 88.19M, 304.12M, 306.48M).
* ViT-S/16 as PaddleClas builds it (ppcls/arch/backbone/model_zoo/vision_transformer.py,
  ``ViT_small_patch16_224``: 8 layers, width 768, 8 heads, MLP ratio 3, no qkv bias; 48.6M parameters in
  its docs) -- the early timm definition, not the paper's.
* DeiT with distillation: H. Touvron et al., "Training data-efficient image transformers & distillation
  through attention", arXiv:2012.12877, Table 1 (Ti 192/3 heads, S 384/6, B 768/12; 12 layers, MLP ratio 4)
  and Section 4 (a distillation token beside the class token, with its own linear head; at inference
  the two heads' outputs are averaged). Parameter counts: PaddleClas ViT_and_DeiT.md (5.87M, 22.36M, 87.18M).
  The non-distilled DeiT models are the zoo points ``deit_tiny``, ``deit_small``, ``deit_base``.

The position embedding is sized for one resolution, so the 384-pixel models are their own entries
(``*_384``): the calibration rows at 384 trace those.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import ReferenceModel

__all__ = ["Attention", "TransformerBlock", "VisionTransformer", "MODELS"]


class Attention(nn.Module):
    """Multi-head self-attention over ``(batch, tokens, dim)``."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, *, qkv_bias: bool = True, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden, **dd), nn.GELU(), nn.Linear(hidden, dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT / DeiT: patch embedding, class (and distillation) token, position embedding, blocks, norm, head(s).

    Args:
        resolution: the input size the position embedding is made for.
        distilled: add DeiT's distillation token and head (the two heads' outputs are averaged).
    """

    def __init__(self, *, resolution: int, patch: int, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, distilled: bool = False, num_classes: int = 1000, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        prefix = 2 if distilled else 1
        self.patch_embed = nn.Conv2d(3, dim, patch, patch, **dd)
        self.tokens = nn.Parameter(torch.zeros(1, prefix, dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, prefix + (resolution // patch) ** 2, dim, **dd))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio, qkv_bias=qkv_bias, **dd)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6, **dd)
        self.head = nn.Linear(dim, num_classes, **dd)
        self.head_dist = nn.Linear(dim, num_classes, **dd) if distilled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.tokens.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        if self.head_dist is None:
            return self.head(x[:, 0])
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2


_VIT = "Dosovitskiy et al. arXiv:2010.11929 Table 1; PaddleClas docs/zh_CN/models/ImageNet1k/ViT_and_DeiT.md (params)"
_DEIT = "Touvron et al. arXiv:2012.12877 Table 1, Sec. 4; PaddleClas docs/zh_CN/models/ImageNet1k/ViT_and_DeiT.md"


def _entry(name: str, resolution: int, params_m: float | None, source: str, family: str = "vit",
           **options: Any) -> ReferenceModel:
    return ReferenceModel(name, family, partial(VisionTransformer, resolution=resolution, **options), resolution,
                          params_m, source)


_BASE: dict[str, Any] = {"dim": 768, "depth": 12, "heads": 12}
_LARGE: dict[str, Any] = {"dim": 1024, "depth": 24, "heads": 16}

MODELS: tuple[ReferenceModel, ...] = (
    _entry("vit_small_patch16_paddle", 224, 48.60,
           "PaddleClas ppcls/arch/backbone/model_zoo/vision_transformer.py ViT_small_patch16_224 and "
           "docs/zh_CN/models/ImageNet1k/ViT_and_DeiT.md (48.6M)",
           patch=16, dim=768, depth=8, heads=8, mlp_ratio=3.0, qkv_bias=False),
    _entry("vit_base_patch16", 224, 86.42, _VIT, patch=16, **_BASE),
    _entry("vit_base_patch16_384", 384, 86.42, _VIT, patch=16, **_BASE),
    _entry("vit_base_patch32_384", 384, 88.19, _VIT, patch=32, **_BASE),
    _entry("vit_large_patch16", 224, 304.12, _VIT, patch=16, **_LARGE),
    _entry("vit_large_patch16_384", 384, 304.12, _VIT, patch=16, **_LARGE),
    _entry("vit_large_patch32_384", 384, 306.48, _VIT, patch=32, **_LARGE),
    _entry("deit_tiny_distilled", 224, 5.87, _DEIT, patch=16, dim=192, depth=12, heads=3, distilled=True),
    _entry("deit_small_distilled", 224, 22.36, _DEIT, patch=16, dim=384, depth=12, heads=6, distilled=True),
    _entry("deit_base_distilled", 224, 87.18, _DEIT, patch=16, distilled=True, **_BASE),
    _entry("deit_base_distilled_384", 384, 87.18, _DEIT, patch=16, distilled=True, **_BASE),
)
