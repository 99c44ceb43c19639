"""T2T-ViT's tokens-to-token stem.

Paper: "Tokens-to-Token ViT: Training Vision Transformers from Scratch on
ImageNet", Yuan, Chen, Wang, Yu, Shi, Jiang, Tay, Feng and Yan, ICCV 2021,
arXiv:2101.11986. ViT's hard split into non-overlapping 16x16 patches loses the
local structure inside and across patches (edges, lines), which the paper
blames for ViT's need of huge data. The T2T module (Sec. 3.1, Fig. 4) instead
builds tokens progressively:

* *soft split*: overlapping patches of the map (``unfold`` with a kernel larger
  than the stride), each patch's pixels concatenated into one token, so
  neighbouring tokens share pixels;
* *re-structurisation*: a small transformer layer over those tokens, whose
  tokens are then folded back into a map (one token per patch position) for the
  next soft split.

Three soft splits (kernels 7, 3, 3; strides 4, 2, 2; paddings 2, 1, 1) with two
token layers between them reduce a 224 px image to 14x14 tokens; a linear layer
then projects the last split's tokens to the body's width. The token layers are
narrow (``token_dim`` 64, one head, MLP ratio 1) and map the wide unfolded
tokens (3*7*7 = 147, 64*3*3 = 576 wide) down to ``token_dim``; since the widths
differ, their attention's residual is the value (``x = v + proj(attn)``). Two
token layers are offered: ``transformer`` (softmax attention; scaled by the
unfolded width, as the official code does) and ``performer`` (Performer's
linear attention with positive orthogonal random features, arXiv:2009.14794,
which T2T-ViT-14 uses: the 3136 tokens of the first split make softmax
attention costly). The random features are fixed, not trained: a buffer drawn
once at construction and saved with the model.

Details read from the official code (yitu-opensource/T2T-ViT, ``models/t2t_vit.py``,
``token_performer.py``, ``token_transformer.py``): ``kernel_ratio`` 0.5 (32 random
features for 64-wide tokens), a biased ``kqv`` in the performer and an unbiased
``qkv`` in the transformer, LayerNorm before attention and before the MLP.

Published figures used by the zoo (``spaces/zoo/t2t_vit_14.yaml``): T2T-ViT-14 has
21.5M parameters and 4.8 GMACs at 224 px (the official README's model table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Mlp, ToNCHW, factory_kwargs
from nas.blocks.contract import Chunks
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.errors import ConfigError

__all__ = ["T2TStemCfg", "SoftSplit", "TokenTransformer", "TokenPerformer", "T2TStem"]

# Performer features per token channel: T2T's kernel_ratio (32 random features for 64-wide tokens).
_FEATURES_PER_CHANNEL = 0.5
# Keeps the performer's normaliser away from zero.
_EPSILON = 1e-8

TokenLayer = Literal["performer", "transformer"]


@dataclass(frozen=True)
class T2TStemCfg(Component):
    """Soft splits with a token layer between each two, then a linear projection to ``dim``.

    Attributes:
        dim: the width put out (filled in from the first stage).
        token_dim: width of the tokens between soft splits (T2T: 64).
        token_layer: ``performer`` (T2T-ViT-7 ... 24) or ``transformer`` (T2T-ViT_t).
        kernels: the soft splits' kernels (T2T: 7, 3, 3); one token layer sits between each two splits.
        strides: their strides (T2T: 4, 2, 2); each split pads by ``(kernel - stride + 1) // 2``.
        class_token: put a learned class token in front of the tokens.
        pos_embed: add a learned position embedding (class token included).
    """

    layout = "nlc"
    width_fields = ("token_dim",)
    sharing = {"layers.*.qkv": Chunks(3)}  # rows [q; k; v]

    dim: int | None = None
    token_dim: int = 64
    token_layer: TokenLayer = "performer"
    kernels: tuple[int, ...] = (7, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2)
    class_token: bool = False
    pos_embed: bool = False

    @property
    def prefix_tokens(self) -> int:  # type: ignore[override]
        return 1 if self.class_token else 0

    @property
    def paddings(self) -> tuple[int, ...]:
        return tuple((kernel - stride + 1) // 2 for kernel, stride in zip(self.kernels, self.strides, strict=True))

    def check(self, site: Site) -> None:
        if self.token_dim < 1:
            raise ConfigError(f"must be >= 1, got {self.token_dim}", path="token_dim")
        if not self.kernels:
            raise ConfigError("needs at least one soft split", path="kernels")
        if len(self.strides) != len(self.kernels):
            raise ConfigError(f"needs one stride per kernel ({len(self.kernels)}), got {len(self.strides)}",
                              path="strides")
        for name in ("kernels", "strides"):
            for index, value in enumerate(getattr(self, name)):
                if value < 1:
                    raise ConfigError(f"must be >= 1, got {value}", path=f"{name}[{index}]")
        for index, (height, width) in enumerate(self.split_sizes(site.height, site.width)):
            if height < 1 or width < 1:
                raise ConfigError(f"soft split {index} reduces the {site.height}x{site.width} input to "
                                  f"{height}x{width}; the input resolution is too small", path=f"kernels[{index}]")

    def split_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The token grid after each soft split."""
        sizes = []
        for kernel, stride, padding in zip(self.kernels, self.strides, self.paddings, strict=True):
            height, width = conv_out(height, kernel, stride, padding), conv_out(width, kernel, stride, padding)
            sizes.append((height, width))
        return sizes

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.split_sizes(height, width)[-1]


class SoftSplit(nn.Module):
    """Overlapping ``kernel x kernel`` patches of an NCHW map as tokens ``(B, patches, C * kernel**2)``.

    A token's features are its patch channel by channel, each channel's pixels row by row (``unfold``'s
    order), so a narrower map's tokens are a prefix of a wider one's: weights reading them share by prefix.
    """

    def __init__(self, kernel: int, stride: int, padding: int):
        super().__init__()
        self.kernel = kernel
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.unfold(x, self.kernel, padding=self.padding, stride=self.stride).transpose(1, 2)


class TokenTransformer(nn.Module):
    """A one-head transformer layer from ``in_dim``-wide to ``dim``-wide tokens, the value as its residual."""

    def __init__(self, in_dim: int, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.scale = in_dim ** -0.5  # the official scale: the unfolded width, not the token width
        self.norm1 = nn.LayerNorm(in_dim, **dd)
        self.qkv = nn.Linear(in_dim, 3 * dim, bias=False, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, dim, "nlc", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = (part.unsqueeze(1) for part in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        mixed = F.scaled_dot_product_attention(query, key, value, scale=self.scale)
        x = (value + self.proj(mixed)).squeeze(1)
        return x + self.mlp(self.norm2(x))


class TokenPerformer(nn.Module):
    """A one-head Performer layer from ``in_dim``-wide to ``dim``-wide tokens, the value as its residual.

    Softmax attention ``exp(q . k)`` is approximated by ``phi(q) . phi(k)`` with the positive random features
    ``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` (``m`` orthogonal rows ``W``), so attention costs
    ``tokens * m * dim`` instead of ``tokens**2 * dim``: ``y_i = phi(q_i) (sum_j phi(k_j) v_j^T) /
    phi(q_i) . sum_j phi(k_j)``.
    """

    def __init__(self, in_dim: int, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        count = max(1, int(dim * _FEATURES_PER_CHANNEL))
        self.norm1 = nn.LayerNorm(in_dim, **dd)
        self.qkv = nn.Linear(in_dim, 3 * dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, dim, "nlc", **dd)
        features = nn.init.orthogonal_(torch.empty(count, dim)) * math.sqrt(count)
        self.register_buffer("features", features.to(**dd))

    def positive_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, tokens, dim) -> (B, tokens, m)``: ``exp(W x - |x|^2 / 2) / sqrt(m)``."""
        count = self.features.shape[0]
        return torch.exp(x @ self.features.t() - x.square().sum(-1, keepdim=True) / 2) / math.sqrt(count)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        query, key = self.positive_features(query), self.positive_features(key)
        context = key.transpose(1, 2) @ value  # (B, m, dim): sum_j phi(k_j) v_j^T
        normaliser = query @ key.sum(1, keepdim=True).transpose(1, 2)  # (B, tokens, 1)
        x = value + self.proj(query @ context / (normaliser + _EPSILON))
        return x + self.mlp(self.norm2(x))


_TOKEN_LAYERS: dict[str, type[nn.Module]] = {"performer": TokenPerformer, "transformer": TokenTransformer}


@register("stem", "t2t", T2TStemCfg)
class T2TStem(Stem):
    """Soft split, then (token layer, fold into a map, soft split) per further kernel, then a linear projection."""

    def __init__(self, cfg: T2TStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        sizes = cfg.split_sizes(*size)
        splits = zip(cfg.kernels, cfg.strides, cfg.paddings, strict=True)
        self.splits = nn.ModuleList(SoftSplit(kernel, stride, padding) for kernel, stride, padding in splits)
        widths = [in_dim * cfg.kernels[0] ** 2, *(cfg.token_dim * kernel ** 2 for kernel in cfg.kernels[1:])]
        layer = _TOKEN_LAYERS[cfg.token_layer]
        self.layers = nn.ModuleList(layer(width, cfg.token_dim, **dd) for width in widths[:-1])
        self.to_maps = nn.ModuleList(ToNCHW(grid) for grid in sizes[:-1])
        self.project = nn.Linear(widths[-1], cfg.dim, **dd)
        self.class_token = nn.Parameter(torch.zeros(1, 1, cfg.dim, **dd)) if cfg.class_token else None
        tokens = cfg.prefix_tokens + sizes[-1][0] * sizes[-1][1]
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, cfg.dim, **dd)) if cfg.pos_embed else None
        for parameter in (self.class_token, self.pos_embed):
            if parameter is not None:
                nn.init.trunc_normal_(parameter, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.splits[0](x)
        for layer, to_map, split in zip(self.layers, self.to_maps, self.splits[1:], strict=True):
            x = split(to_map(layer(x)))
        x = self.project(x)
        if self.class_token is not None:
            x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return x
