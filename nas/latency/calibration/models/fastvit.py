"""FastViT T8, T12, S12, SA12, SA24, SA36 and MA36 in their inference (re-parameterised) form.

P. K. A. Vasu et al., "FastViT: A Fast Hybrid Vision Transformer using Structural Reparameterization",
ICCV 2023, arXiv:2303.14189, Section 3 and Figure 2: a MobileOne stem (3x3/2 conv, 3x3/2 depthwise, 1x1);
four stages of RepMixer blocks -- after re-parameterisation the token mixer ``x + ls * (dwconv_bn(x) - bn(x))``
is one 3x3 depthwise conv with bias whose kernel holds the skip -- each followed by a ConvFFN (7x7 depthwise
conv + BN, 1x1 up, GELU, 1x1 down) on a layer-scaled residual; in the SA/MA models the last stage has
multi-head self-attention blocks (BN as the norm, head dim 32, layer-scaled residuals, then the ConvFFN)
preceded by the conditional positional encoding RepCPE (a 7x7 depthwise conv with bias, skip folded in);
between stages a 7x7/2 large-kernel conv with groups = input channels, then a 1x1 MobileOne block; before
the head a 3x3 depthwise MobileOne block to twice the width with squeeze-excite (reduction 1/16, ReLU,
sigmoid; conv -> SE -> GELU), global pooling and a linear layer.
Layer structure, widths, depths and MLP ratios follow the authors' release, apple/ml-fastvit @ 8af5928
(models/fastvit.py factories ``fastvit_t8`` ... ``fastvit_ma36`` built with ``inference_mode=True``;
models/modules/mobileone.py, models/modules/replknet.py): T8 48/96/192/384, 2/2/4/2, ratio 3; T12
64/128/256/512, 2/2/6/2, ratio 3; S12 as T12 with ratio 4; SA12/SA24/SA36 64/128/256/512 with 2/2/6/2,
4/4/12/4, 6/6/18/6, ratio 4, attention in stage 4; MA36 76/152/304/608, 6/6/18/6, ratio 4, attention in
stage 4. The release's large-kernel downsampler computes a GELU and discards it (``self.activation(out)``
is not assigned), so it has no activation here either.

Parameter counts: the released weights' counts in keras_cv_attention_models/fastvit/README.md
(leondgarse/keras_cv_attention_models @ 26c32a1, a port of the authors' checkpoints: 4.03M, 7.55M, 9.47M,
11.58M, 21.55M, 31.53M, 44.07M; the timm model cards agree, e.g. T8 4.0M, SA24 21.6M, MA36 44.1M). They
count the train-time branches; this deploy graph is 0.2-0.9% smaller (3.996M ... 43.985M) and has exactly
the parameters of timm 1.0.31's ``fastvit_*`` after ``reparameterize_model``, with which it was checked to
give identical outputs on shared weights. The paper's ImageNet comparison lists smaller counts (T8 3.6M,
T12 6.8M, S12 8.8M, SA12 10.9M, MA36 42.7M; T8 and MA36 also on Apple's Core ML model cards,
apple/coreml-FastViT-T8 and -MA36) that the released code's graph exceeds by 3-11%, so they are not used.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.blocks.common import factory_kwargs
from nas.latency.calibration.models.base import Classifier, ConvBnAct, ReferenceModel, SqueezeExcite

__all__ = ["ConvFFN", "RepMixerBlock", "SelfAttention", "AttentionBlock", "FastViT", "MODELS"]


def _reparam_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, *, groups: int = 1,
                  act: str = "gelu", device: Any = None, dtype: Any = None) -> ConvBnAct:
    """A fused MobileOne / large-kernel / RepMixer / RepCPE branch: one conv with bias, then ``act``."""
    return ConvBnAct(in_channels, out_channels, kernel, stride, groups=groups, act=act, bias=True, norm=False,
                     device=device, dtype=dtype)


class ConvFFN(nn.Module):
    """7x7 depthwise conv + BN, 1x1 conv up to ``hidden`` (GELU), 1x1 conv back down."""

    def __init__(self, dim: int, hidden: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.net = nn.Sequential(ConvBnAct(dim, dim, 7, groups=dim, act="none", **dd),
                                 nn.Conv2d(dim, hidden, 1, **dd), nn.GELU(), nn.Conv2d(hidden, dim, 1, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RepMixerBlock(nn.Module):
    """Fused RepMixer (a 3x3 depthwise conv with bias, skip folded in), then ``x + scale * ffn(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.mixer = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), **dd)
        self.scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mixer(x)
        return x + self.scale * self.ffn(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the ``H*W`` positions of a ``(B, C, H, W)`` map (no qkv bias)."""

    def __init__(self, dim: int, head_dim: int = 32, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = dim // head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dim, height, width = x.shape
        tokens = height * width
        x = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))
        return out.transpose(1, 2).reshape(batch, dim, height, width)


class AttentionBlock(nn.Module):
    """``x + scale1 * attention(bn(x))``, then ``x + scale2 * ffn(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.norm = nn.BatchNorm2d(dim, **dd)
        self.attention = SelfAttention(dim, **dd)
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1), 1e-5, **dd))
        self.ffn = ConvFFN(dim, int(dim * mlp_ratio), **dd)
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1), 1e-5, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale1 * self.attention(self.norm(x))
        return x + self.scale2 * self.ffn(x)


class FastViT(nn.Module):
    """Deploy-form FastViT: stage ``widths`` and ``depths``, FFN ``mlp_ratio``, ``attention`` in the last stage."""

    def __init__(self, *, widths: tuple[int, ...], depths: tuple[int, ...], mlp_ratio: float, attention: bool,
                 num_classes: int = 1000, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        stem = widths[0]
        layers: list[nn.Module] = [_reparam_conv(3, stem, 3, 2, **dd),
                                   _reparam_conv(stem, stem, 3, 2, groups=stem, **dd),
                                   _reparam_conv(stem, stem, 1, **dd)]
        last = len(widths) - 1
        for stage, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            if stage > 0:
                previous = widths[stage - 1]
                layers += [_reparam_conv(previous, width, 7, 2, groups=previous, act="none", **dd),
                           _reparam_conv(width, width, 1, **dd)]
            mixing_attention = attention and stage == last
            if mixing_attention:
                layers.append(_reparam_conv(width, width, 7, groups=width, act="none", **dd))
            block = AttentionBlock if mixing_attention else RepMixerBlock
            layers += [block(width, mlp_ratio, **dd) for _ in range(depth)]
        expanded = 2 * widths[-1]
        layers += [nn.Conv2d(widths[-1], expanded, 3, 1, 1, groups=widths[-1], **dd),
                   SqueezeExcite(expanded, int(expanded * 0.0625), **dd), nn.GELU()]
        self.features = nn.Sequential(*layers)
        self.head = Classifier(expanded, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


_SOURCE = ("Vasu et al. arXiv:2303.14189 Sec. 3, Fig. 2; apple/ml-fastvit models/fastvit.py (configs, inference_mode); "
           "params: leondgarse/keras_cv_attention_models keras_cv_attention_models/fastvit/README.md")
_SMALL, _MEDIUM = (64, 128, 256, 512), (76, 152, 304, 608)
_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float, bool, float]] = {
    "t8": ((48, 96, 192, 384), (2, 2, 4, 2), 3.0, False, 4.03),
    "t12": (_SMALL, (2, 2, 6, 2), 3.0, False, 7.55),
    "s12": (_SMALL, (2, 2, 6, 2), 4.0, False, 9.47),
    "sa12": (_SMALL, (2, 2, 6, 2), 4.0, True, 11.58),
    "sa24": (_SMALL, (4, 4, 12, 4), 4.0, True, 21.55),
    "sa36": (_SMALL, (6, 6, 18, 6), 4.0, True, 31.53),
    "ma36": (_MEDIUM, (6, 6, 18, 6), 4.0, True, 44.07),
}

MODELS: tuple[ReferenceModel, ...] = tuple(
    ReferenceModel(f"fastvit_{name}", "fastvit",
                   partial(FastViT, widths=widths, depths=depths, mlp_ratio=ratio, attention=attention), 256,
                   params_m, _SOURCE)
    for name, (widths, depths, ratio, attention, params_m) in _VARIANTS.items()
)
