"""MaxViT: multi-axis attention (block and grid), its strided MBConv, its stem and its classifier head.

Paper: "MaxViT: Multi-Axis Vision Transformer", Tu, Talebi, Zhang, Yang, Milanfar,
Bovik and Li, ECCV 2022, arXiv:2204.01697. Its block is an MBConv, then *block*
attention (inside non-overlapping ``P x P`` windows: local), then *grid* attention
(among the ``G x G`` tokens that lie ``H / G`` apart: a sparse, global mix), each
attention followed by an MLP and each with a relative position bias (Sec. 3.1-3.2).
Both attentions cost linear in the number of tokens, so every stage sees globally.

How the block maps onto ``nas`` kinds (a pattern of blocks, not a block kind of its own):

* block attention is the existing ``window_attention`` without a shift: the same
  partition, the same ``(2P-1)**2 x heads`` bias table;
* grid attention is :class:`GridAttention` here: the same attention core on the
  strided partition :func:`grid_partition`;
* the stride-1 MBConv is the existing ``mbconv`` mixer (expansion 4, SE 0.25, GELU).
  MaxViT normalises before the expansion and puts a bias on the projection, where
  ``mbconv`` puts BatchNorm after the projection; at inference both are the same
  function (a BatchNorm folds into the neighbouring 1x1 conv), with one fewer
  vector of parameters per block. ``mbconv``'s squeeze-excitation uses the block's
  GELU where MaxViT uses SiLU (no parameter or MAC changes);
* the first MBConv of a stage halves the map and has a shortcut of its own,
  ``Proj(Pool2D(x))`` (the paper's MBConv equation): the downsampler kind
  ``mbconv`` here (:class:`MBConvDownsample`), so a stage is a downsampler then
  ``[block, grid]`` and the repeated ``[mbconv, block, grid]``;
* the stem (:class:`MaxViTStem`) is two 3x3 convs at 1/2 resolution followed by
  stage 1's strided MBConv, which puts the stem at 1/4 like every other stem of
  the metaformer space;
* the head (:class:`PreLogitsHead`) is average pool, LayerNorm, a ``tanh`` hidden
  layer as wide as the last stage, then the classifier.

On a map no larger than the grid, grid attention clamps the grid to the map (one
group, global attention), as window attention clamps its window.

Published figures (spaces/zoo/maxvit_tiny.yaml): MaxViT-T 31M parameters, 5.6G
FLOPs at 224 px (the paper's Table 1 and google-research/maxvit README.md). The
layer details (pre-norm MBConv, output-width expansion and SE, pooled shortcut,
the stem, the tanh pre-logits layer) follow google-research/maxvit
maxvit/models/maxvit.py and timm's ``maxvit_tiny_tf`` (timm/models/maxxvit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import Activation, ConvNorm, Layout, SqueezeExcite, factory_kwargs
from nas.blocks.contract import Chunks, FitsMap, Prefix, RelativeTable
from nas.blocks.downsample import Downsample
from nas.blocks.ffn import hidden_width
from nas.blocks.heads import Head, _classifier, _pool  # the linear head's pooling and classifier
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.swin import relative_position_index
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = [
    "GridAttentionCfg",
    "MBConvDownsampleCfg",
    "MaxViTStemCfg",
    "PreLogitsHeadCfg",
    "GridAttention",
    "MBConvDownsample",
    "MaxViTStem",
    "PreLogitsHead",
    "grid_partition",
    "grid_reverse",
]


def _check_odd_kernel(kernel: int) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"must be an odd number >= 1, got {kernel}", path="kernel")


@dataclass(frozen=True)
class GridAttentionCfg(QuantizableAttention, Component):
    """Multi-head attention among the ``grid x grid`` tokens spaced ``H / grid`` apart, with a relative bias.

    Attributes:
        heads: number of heads; must divide the stage width (MaxViT: width / 32).
        grid: tokens per side of each group (MaxViT: 7); must divide the map, or is clamped to a smaller map.
        qkv_bias: bias on the fused query/key/value projection.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`).
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3), "relative_position_bias": RelativeTable()}
    resolution_fields = {"grid": FitsMap()}

    heads: int = 2
    grid: int = 7
    qkv_bias: bool = True

    def effective(self, height: int, width: int) -> int:
        """The grid used on a ``height x width`` map: clamped to the map when the map is no larger."""
        return min(self.grid, height, width)

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.grid < 1:
            raise ConfigError(f"must be >= 1, got {self.grid}", path="grid")
        if site.prefix_tokens:
            raise ConfigError("grid attention cannot run on tokens that carry a class token", path="kind")
        grid = self.effective(site.height, site.width)
        if site.height % grid or site.width % grid:
            raise ConfigError(f"grid {grid} does not divide the {site.height}x{site.width} feature map", path="grid")


@dataclass(frozen=True)
class MBConvDownsampleCfg(Component):
    """MaxViT's strided MBConv: ``Proj(Pool(x)) + Proj(SE(DWConv_stride2(Conv(BN(x)))))``.

    Widths follow the output: the expansion is ``expand_ratio * dim`` channels and the
    squeeze-excitation's hidden width ``se_ratio * dim`` (0 disables it). The shortcut
    is a 2x2 average pool, then a 1x1 conv with bias where the width changes.

    Attributes:
        expand_ratio: expansion of the output width (MaxViT: 4).
        kernel: depthwise kernel, stride 2.
        se_ratio: squeeze-excitation width over the output width (MaxViT: 0.25).
        act: activation after the expansion and the depthwise conv (MaxViT: GELU).
        se_act: activation inside the squeeze-excitation (MaxViT: SiLU).
    """

    sharing = {"expand": Prefix(), "dwconv": Prefix(), "se": Prefix(), "project": Prefix()}  # hidden channels

    expand_ratio: float = 4.0
    kernel: int = 3
    se_ratio: float = 0.25
    act: Activation = "gelu"
    se_act: Activation = "silu"

    def check(self, site: Site) -> None:
        if self.expand_ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.expand_ratio}", path="expand_ratio")
        _check_odd_kernel(self.kernel)
        if not 0 <= self.se_ratio <= 1:
            raise ConfigError(f"must be in [0, 1] (0 disables squeeze-excitation), got {self.se_ratio}",
                              path="se_ratio")
        if site.prefix_tokens:
            raise ConfigError("cannot downsample a feature map that carries class tokens", path="kind")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        pad = self.kernel // 2
        return conv_out(height, self.kernel, 2, pad), conv_out(width, self.kernel, 2, pad)


@dataclass(frozen=True)
class MaxViTStemCfg(Component):
    """Conv ``kernel``/2 to ``hidden``, BatchNorm, ``act``, conv ``kernel``/1, then stage 1's strided MBConv to ``dim``.

    The MBConv is :class:`MBConvDownsampleCfg` with MaxViT's defaults.
    """

    width_fields = ("hidden",)
    sharing = {f"mbconv.{name}": rule for name, rule in MBConvDownsampleCfg.sharing.items()}

    dim: int | None = None
    hidden: int = 64
    kernel: int = 3
    act: Activation = "gelu"

    @property
    def mbconv(self) -> MBConvDownsampleCfg:
        return MBConvDownsampleCfg()

    def check(self, site: Site) -> None:
        if self.hidden < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden}", path="hidden")
        _check_odd_kernel(self.kernel)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        pad = self.kernel // 2
        return self.mbconv.output_size(conv_out(height, self.kernel, 2, pad), conv_out(width, self.kernel, 2, pad))


@dataclass(frozen=True)
class PreLogitsHeadCfg(Component):
    """Average pool, ``norm``, a ``hidden``-wide linear layer with ``tanh``, then the classifier."""

    width_fields = ("hidden",)

    num_classes: int = 1000
    hidden: int = 512
    norm: Literal["none", "layernorm"] = "layernorm"

    def check(self, site: Site) -> None:
        if self.num_classes < 0:
            raise ConfigError(f"must be >= 0 (0 means no classifier), got {self.num_classes}", path="num_classes")
        if self.hidden < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden}", path="hidden")


def grid_partition(x: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, H, W, C) -> (B, groups, grid**2, C)``: group ``(a, b)`` holds the tokens ``(a + i*H/grid, b + j*W/grid)``.

    Groups are in row-major order of ``(a, b)``, tokens in row-major order of ``(i, j)``,
    so ``(i, j)`` are the coordinates the relative position bias reads.
    """
    batch, height, width, channels = x.shape
    x = x.reshape(batch, grid, height // grid, grid, width // grid, channels)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(batch, -1, grid * grid, channels)


def grid_reverse(x: torch.Tensor, grid: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`grid_partition`: ``(B, groups, grid**2, C) -> (B, H, W, C)``."""
    height, width = size
    batch, channels = x.shape[0], x.shape[-1]
    x = x.reshape(batch, height // grid, width // grid, grid, grid, channels)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, height, width, channels)


@register("mixer", "grid_attention", GridAttentionCfg)
class GridAttention(TokenMixer):
    """Grid attention: fused ``qkv``, attention within each strided group plus a relative bias, projection.

    The bias index is fixed by the grid, so it is a non-persistent buffer
    (derived data, not state), as in window attention.
    """

    def __init__(self, cfg: GridAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.grid = cfg.effective(*size)
        self.heads = cfg.heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.relative_position_bias = nn.Parameter(torch.zeros((2 * self.grid - 1) ** 2, cfg.heads, **dd))
        nn.init.trunc_normal_(self.relative_position_bias, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.grid).to(device),
                             persistent=False)

    def attention_bias(self) -> torch.Tensor:
        """``(heads, grid**2, grid**2)``: the bias of each (query, key) pair's offset on the grid."""
        tokens = self.grid * self.grid
        bias = self.relative_position_bias[self.relative_position_index.flatten()]
        return bias.view(tokens, tokens, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        groups = grid_partition(x.reshape(batch, *self.size, channels), self.grid)
        query, key, value = (split_heads(part, self.heads) for part in self.qkv(groups).chunk(3, dim=-1))
        out = self.attend(groups, query, key, value, attn_mask=self.attention_bias().to(query.dtype))
        return grid_reverse(self.proj(out), self.grid, self.size).reshape(batch, -1, channels)


@register("downsample", "mbconv", MBConvDownsampleCfg)
class MBConvDownsample(Downsample):
    """The strided MBConv with its pooled shortcut (NCHW).

    The pool uses ``ceil_mode`` so that an odd map gives the same size on both
    paths (the depthwise conv's ``ceil(H / 2)``).
    """

    def __init__(self, cfg: MBConvDownsampleCfg, *, in_dim: int, dim: int, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = hidden_width(dim, cfg.expand_ratio)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)
        self.shortcut = nn.Conv2d(in_dim, dim, 1, **dd) if in_dim != dim else nn.Identity()
        self.pre_norm = nn.BatchNorm2d(in_dim, **dd)
        self.expand = ConvNorm(in_dim, hidden, 1, act=cfg.act, **dd)
        self.dwconv = ConvNorm(hidden, hidden, cfg.kernel, 2, groups=hidden, act=cfg.act, **dd)
        self.se = (SqueezeExcite(hidden, hidden_width(dim, cfg.se_ratio), cfg.se_act, **dd) if cfg.se_ratio > 0
                   else nn.Identity())
        self.project = nn.Conv2d(hidden, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(self.pool(x)) + self.project(self.se(self.dwconv(self.expand(self.pre_norm(x)))))


@register("stem", "maxvit", MaxViTStemCfg)
class MaxViTStem(Stem):
    """``(B, 3, H, W) -> (B, dim, H/4, W/4)``: MaxViT's two-conv stem and stage 1's strided MBConv.

    The second conv has a bias and no norm: the MBConv's pre-norm follows it, as in MaxViT.
    """

    def __init__(self, cfg: MaxViTStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        pad = cfg.kernel // 2
        self.conv1 = ConvNorm(in_dim, cfg.hidden, cfg.kernel, 2, act=cfg.act, bias=True, **dd)
        self.conv2 = nn.Conv2d(cfg.hidden, cfg.hidden, cfg.kernel, 1, pad, **dd)
        half = (conv_out(size[0], cfg.kernel, 2, pad), conv_out(size[1], cfg.kernel, 2, pad))
        self.mbconv = MBConvDownsample(cfg.mbconv, in_dim=cfg.hidden, dim=cfg.dim, size=half, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mbconv(self.conv2(self.conv1(x)))


@register("head", "pre_logits", PreLogitsHeadCfg)
class PreLogitsHead(Head):
    """MaxViT's classifier: the ``tanh`` layer gives the features (``num_features == hidden``) the classifier reads."""

    def __init__(self, cfg: PreLogitsHeadCfg, *, in_dim: int, layout: Layout, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self._dd = factory_kwargs(device, dtype)
        self.num_features = cfg.hidden
        self.pool = _pool("avg", layout, prefix_tokens)
        self.norm = create_norm(cfg.norm, in_dim, "nlc", **self._dd)
        self.pre_logits = nn.Sequential(nn.Linear(in_dim, cfg.hidden, **self._dd), nn.Tanh())
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = _classifier(self.num_features, num_classes, self._dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(self.norm(self.pool(x))))
