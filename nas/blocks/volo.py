"""Outlook attention, VOLO's convolutional patch stem and its token-labelling head (VOLO).

Paper: "VOLO: Vision Outlooker for Visual Recognition", Yuan, Hou, Jiang, Feng and Yan,
IEEE TPAMI 2022, arXiv:2106.13112. VOLO is two resolutions of one width each: *outlookers*
at 1/8 of the image, then plain transformer blocks at 1/16, then CaiT's class-attention
blocks (:mod:`nas.blocks.class_attention`). Its pieces here:

* *outlook attention* (Sec. 3.1, Eq. 3-5): for each ``k x k`` window of the map, the
  centre token alone generates the window's ``k**2 x k**2`` attention weights by one
  linear layer (no queries or keys); each position of the window takes a weighted sum of
  the window's values, and positions covered by several windows sum what each window
  gave them. That is unfold (gather each window's values), a batched matmul, and fold
  (scatter-add back to the map). With ``stride`` s > 1 the windows sit every s positions
  and the centre token is the s x s average of the map there, so the weight generator runs
  on ``1/s**2`` of the positions; VOLO uses ``k = 3, s = 2`` (the official ``outlooker_blocks``
  default). The padding is ``k // 2``, so ``ceil(H / s)`` windows cover every side of any map;
  ``stride <= kernel`` keeps every position inside some window;
* the *patch embedding* (official ``PatchEmbed`` with ``stem_conv``): a 7x7/2 convolution and
  two 3x3 convolutions (each without bias, with BatchNorm and ReLU) at ``hidden`` width, then a
  non-overlapping ``patch/2`` convolution to the first stage's width: 1/``patch`` of the image;
* the *token-labelling head* (arXiv:2104.10858, the official ``forward`` at inference): all
  tokens normalised, the class token classified, plus ``aux_weight`` (0.5) times the largest
  logit any patch token's own classifier gives each class. Its second classifier is part of
  the released model (counted in its parameters).

Between the two resolutions VOLO has a 2x2/2 convolution followed by a learned position
embedding: the ``conv`` downsampler with ``pos_embed: true``. The transformer blocks are the
``attention`` mixer without a q/k/v bias.

Published figures (``spaces/zoo/volo_d1.yaml``): VOLO-D1 has 26.6M parameters (the TPAMI
abstract and BR-IDL/PaddleViT's README; the arXiv paper and sail-sg/volo's README round to 27M)
and 6.8G MACs at 224 px (the paper's Table 3); the configuration from sail-sg/volo
``models/volo.py`` (``volo_d1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads
from nas.blocks.common import ConvNorm, Layout, factory_kwargs
from nas.blocks.heads import Head
from nas.blocks.quantizable import QuantizableAttention, create_gate, create_softmax
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = ["OutlookAttentionCfg", "VoloStemCfg", "TokenLabelingHeadCfg", "OutlookAttention", "VoloStem",
           "TokenLabelingHead"]


@dataclass(frozen=True)
class OutlookAttentionCfg(QuantizableAttention, Component):
    """Outlook attention over ``kernel x kernel`` windows every ``stride`` positions; ``head_dim = dim // heads``.

    Attributes:
        heads: number of heads; must divide the stage width.
        kernel: window side (odd); the padding is ``kernel // 2``.
        stride: distance between window centres (VOLO: 2); at most ``kernel``.
        qkv_bias: bias on the value projection (VOLO has none).
    """

    layout = "nlc"
    key_fields = ("kernel",)  # the weight generator's rows are heads x kernel**4 weights of one window shape

    heads: int = 6
    kernel: int = 3
    stride: int = 2
    qkv_bias: bool = False

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be an odd number >= 1, got {self.kernel}", path="kernel")
        if not 1 <= self.stride <= self.kernel:
            raise ConfigError(f"must be between 1 and the kernel {self.kernel} (a larger stride leaves positions "
                              f"outside every window), got {self.stride}", path="stride")
        if site.prefix_tokens:
            raise ConfigError("outlook attention works on the feature map; it cannot carry a class token",
                              path="kind")


@dataclass(frozen=True)
class VoloStemCfg(Component):
    """7x7/2 and two 3x3 conv-BN-ReLU at ``hidden`` width, then a ``patch/2`` patch convolution: 1/``patch``.

    Attributes:
        dim: width put out (the first stage's).
        hidden: width of the three convolutions (VOLO-D1 to D4: 64; D5: 128).
        patch: the reduction of the whole stem, even (VOLO: 8).
    """

    width_fields = ("hidden",)

    dim: int | None = None
    hidden: int = 64
    patch: int = 8

    def check(self, site: Site) -> None:
        if self.hidden < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden}", path="hidden")
        if self.patch < 2 or self.patch % 2:
            raise ConfigError(f"must be an even number >= 2 (the first convolution halves), got {self.patch}",
                              path="patch")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        side = self.patch // 2
        return conv_out(height, 7, 2, 3) // side, conv_out(width, 7, 2, 3) // side


@dataclass(frozen=True)
class TokenLabelingHeadCfg(Component):
    """Normalise every token; classify the class token, plus ``aux_weight`` x the patch tokens' largest logits.

    Attributes:
        num_classes: classes; 0 leaves the normalised class token as the features.
        aux_weight: weight of the patch tokens' classifier (VOLO: 0.5).
        norm: the norm of all tokens before both classifiers.
    """

    num_classes: int = 1000
    aux_weight: float = 0.5
    norm: Literal["none", "layernorm"] = "layernorm"

    def check(self, site: Site) -> None:
        if self.num_classes < 0:
            raise ConfigError(f"must be >= 0 (0 means no classifier), got {self.num_classes}", path="num_classes")
        if self.aux_weight < 0:
            raise ConfigError(f"must be >= 0, got {self.aux_weight}", path="aux_weight")
        if not site.prefix_tokens:
            raise ConfigError("the token-labelling head classifies a class token; the tokens carry none",
                              path="kind")


@register("mixer", "outlook_attention", OutlookAttentionCfg)
class OutlookAttention(TokenMixer):
    """``proj(fold(softmax(attn(pool(x))) @ unfold(v(x))))`` on tokens ``(B, H*W, C)``.

    Shapes, for ``L`` windows of ``k*k`` positions: the unfolded values are
    ``(B, heads, L, k*k, head_dim)``, the weights ``(B, heads, L, k*k, k*k)``
    (row: the position written to, column: the position read from).
    """

    def __init__(self, cfg: OutlookAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.heads = cfg.heads
        self.kernel = cfg.kernel
        self.stride = cfg.stride
        self.scale = (dim // cfg.heads) ** -0.5
        self.v = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.attn = nn.Linear(dim, cfg.heads * cfg.kernel ** 4, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.pool = nn.AvgPool2d(cfg.stride, cfg.stride, ceil_mode=True) if cfg.stride > 1 else nn.Identity()
        self.softmax = create_softmax(cfg)  # the quantization options: clipped softmax, and the per-head gate
        self.gate = create_gate(cfg, dim, cfg.heads, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        area, padding = self.kernel * self.kernel, self.kernel // 2
        values = self.v(x).transpose(1, 2).reshape(batch, channels, *self.size)
        windows = F.unfold(values, self.kernel, padding=padding, stride=self.stride)  # (B, C * k*k, L)
        count = windows.shape[-1]
        windows = windows.reshape(batch, self.heads, -1, area, count).permute(0, 1, 4, 3, 2)
        centres = self.pool(x.transpose(1, 2).reshape(batch, channels, *self.size)).flatten(2).transpose(1, 2)
        weights = self.attn(centres).reshape(batch, count, self.heads, area, area).transpose(1, 2)
        mixed = self.softmax(weights * self.scale) @ windows  # (B, heads, L, k*k, head_dim)
        mixed = mixed.permute(0, 1, 4, 3, 2).reshape(batch, channels * area, count)
        out = F.fold(mixed, self.size, self.kernel, padding=padding, stride=self.stride)  # overlaps add up
        return self.proj(self.gate(x, out.flatten(2).transpose(1, 2)))


@register("stem", "volo", VoloStemCfg)
class VoloStem(Stem):
    def __init__(self, cfg: VoloStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        dim: int = cfg.dim  # type: ignore[assignment]
        side = cfg.patch // 2
        self.convs = nn.Sequential(
            ConvNorm(in_dim, cfg.hidden, 7, 2, act="relu", **dd),
            ConvNorm(cfg.hidden, cfg.hidden, 3, 1, act="relu", **dd),
            ConvNorm(cfg.hidden, cfg.hidden, 3, 1, act="relu", **dd),
        )
        self.proj = nn.Conv2d(cfg.hidden, dim, side, side, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x))


@register("head", "token_labeling", TokenLabelingHeadCfg)
class TokenLabelingHead(Head):
    """VOLO's inference head: ``fc(t[0]) + aux_weight * max_i fc_aux(t[i])`` over the normalised tokens ``t``."""

    def __init__(self, cfg: TokenLabelingHeadCfg, *, in_dim: int, layout: Layout, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self._dd = factory_kwargs(device, dtype)
        self.num_features = in_dim
        self.prefix_tokens = prefix_tokens
        self.aux_weight = cfg.aux_weight
        self.norm = create_norm(cfg.norm, in_dim, "nlc", **self._dd)
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes, **self._dd) if num_classes else nn.Identity()
        self.fc_aux = nn.Linear(self.num_features, num_classes, **self._dd) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        logits = self.fc(x[:, 0])
        if self.fc_aux is None:
            return logits
        return logits + self.aux_weight * self.fc_aux(x[:, self.prefix_tokens:]).amax(dim=1)
