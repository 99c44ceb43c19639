"""Scale-aware modulation, attention with a depthwise value path, and the SMT stem.

Paper: "Scale-Aware Modulation Meet Transformer", Lin et al., ICCV 2023,
arXiv:2307.08579. SMT's early stages use a convolutional modulator instead of
attention (Sec. 3.1):

* **Multi-head mixed convolution (MHMC)**: a linear ``s`` projection, split
  into heads, each head a depthwise convolution of its own kernel (3, 5, 7, 9
  for four heads), so one layer sees several scales.
* **Scale-aware aggregation (SAA)**: the heads' channels are regrouped so each
  group holds one channel of every head, a grouped 1x1 convolution (``expand``
  times wider) mixes the scales inside each group, then BatchNorm, GELU and a
  1x1 convolution back to the width give the modulator.
* The output is ``proj(modulator * v)``, ``v`` a second linear projection.

SMT's FFN has a depthwise 3x3 convolution between its two layers whose input
is added back before the activation, ``fc2(act(h + dwconv(h)))`` with
``h = fc1(x)`` (:class:`ResidualConvMlpCfg`), unlike PVTv2's ``conv_mlp``.

The third stage is hybrid: modulation and attention blocks alternate
("evolutionary hybrid network", Sec. 3.2), and the last stage is attention
only. SMT's attention adds a depthwise 3x3 convolution of the values to the
attention output (:class:`LocalValueAttentionCfg`; CSWin's LePE,
arXiv:2107.00652, has the same form).

Channel order (why ``s`` is interleaved): SMT lays ``s`` out head by head and
regroups after the convolutions. Here channel ``c`` of ``s`` belongs to head
``c % heads`` from the start, which is the same layer up to a fixed
permutation of ``s``'s rows and makes the regrouping free; it also means a
narrower subnet's prefix of channels keeps a prefix of every head, so weight
sharing needs no declaration beyond the defaults.

Published figures (for the zoo's ``smt_tiny``): SMT-T has 11.5M parameters and
2.4 GFLOPs at 224 px (the paper's abstract; AFeng-x/SMT README.md rounds them);
its widths, depths, heads and ratios are that repository's ``models/smt.py``
(``smt_t``). Those FLOPs are ptflops' multiply-accumulates, which leave out the
attention matmuls that ``nas.cost`` counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import Activation, Layout, Mlp, factory_kwargs
from nas.blocks.contract import Chunks, Prefix
from nas.blocks.ffn import hidden_width
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import TokenMixer, create_norm
from nas.errors import ConfigError

__all__ = [
    "ScaleAwareModulationCfg",
    "LocalValueAttentionCfg",
    "SmtStemCfg",
    "ResidualConvMlpCfg",
    "ScaleAwareModulation",
    "LocalValueAttention",
    "SmtStem",
    "ResidualConvMlp",
]


@dataclass(frozen=True)
class ScaleAwareModulationCfg(Component):
    """SMT's modulator: one depthwise kernel per head (MHMC), scales mixed per channel group (SAA).

    Attributes:
        kernels: the depthwise kernel of each head (SMT: 3, 5, 7, 9); their number must divide the width.
        expand: width of the scale-mixing grouped convolution, as a multiple of the width (SMT: 2).
        bias: bias on the ``v`` and ``s`` projections (SMT-T uses one).
    """

    layout = "nlc"
    # [expand x (one channel per head)] per channel group: a prefix of groups is a narrower layer's groups
    sharing = {"aggregate": Prefix(), "aggregate_norm": Prefix(), "modulator": Prefix()}
    key_fields = ("kernels",)  # they decide which head, and kernel, each channel of s has

    kernels: tuple[int, ...] = (3, 5, 7, 9)
    expand: int = 2
    bias: bool = True

    def check(self, site: Site) -> None:
        if not self.kernels:
            raise ConfigError("needs at least one kernel", path="kernels")
        for index, kernel in enumerate(self.kernels):
            if kernel < 1 or kernel % 2 == 0:
                raise ConfigError(f"must be odd and >= 1, got {kernel}", path=f"kernels[{index}]")
        if site.dim % len(self.kernels):
            raise ConfigError(f"{len(self.kernels)} heads do not divide dim {site.dim}", path="kernels")
        if self.expand < 1:
            raise ConfigError(f"must be >= 1, got {self.expand}", path="expand")
        if site.prefix_tokens:
            raise ConfigError("a depthwise conv cannot run on a feature map that carries class tokens", path="kind")


@dataclass(frozen=True)
class LocalValueAttentionCfg(QuantizableAttention, Component):
    """Global multi-head attention plus a depthwise ``kernel x kernel`` convolution of the values (SMT, LePE).

    Attributes:
        heads: number of heads; must divide the stage width.
        kernel: side of the depthwise convolution on the values (SMT: 3).
        qkv_bias: bias on the fused query/key/value projection (SMT-T uses one).
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`);
            the gate acts on the attention's output, before the local term is added.
    """

    layout = "nlc"
    sharing = {"qkv": Chunks(3)}  # rows [q; k; v]

    heads: int = 8
    kernel: int = 3
    qkv_bias: bool = True

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"must be odd and >= 1, got {self.kernel}", path="kernel")
        if site.prefix_tokens:
            raise ConfigError("a depthwise conv cannot run on a feature map that carries class tokens", path="kind")


@dataclass(frozen=True)
class SmtStemCfg(Component):
    """SMT's stem: 3x3 stride-2 convolution, BatchNorm, ReLU, 2x2 stride-2 convolution, LayerNorm."""

    dim: int | None = None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        height, width = conv_out(height, 3, 2, 1), conv_out(width, 3, 2, 1)
        return conv_out(height, 2, 2, 0), conv_out(width, 2, 2, 0)


@dataclass(frozen=True)
class ResidualConvMlpCfg(Component):
    """Pointwise, then ``act(h + depthwise3x3(h))``, pointwise: SMT's FFN, hidden width ``ratio * dim``."""

    sharing = {"fc1": Prefix(), "mid": Prefix(), "fc2": Prefix()}  # ratio x dim independent hidden units

    ratio: float = 4.0
    act: Activation = "gelu"

    def check(self, site: Site) -> None:
        if self.ratio <= 0:
            raise ConfigError(f"must be > 0, got {self.ratio}", path="ratio")
        if site.prefix_tokens:
            raise ConfigError("a depthwise conv cannot run on a feature map that carries class tokens", path="kind")


def _to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H*W, C) -> (B, C, H, W)``."""
    return x.transpose(1, 2).unflatten(-1, size)


@register("mixer", "scale_aware_modulation", ScaleAwareModulationCfg)
class ScaleAwareModulation(TokenMixer):
    """``proj(modulator(s(x)) * v(x))``: multi-head mixed convolution, scale-aware aggregation, modulation.

    Channel ``c`` of ``s`` is channel ``c // heads`` of head ``c % heads`` (see the module docstring),
    so channels ``g * heads ... (g + 1) * heads - 1`` are group ``g`` of the aggregation.
    """

    def __init__(self, cfg: ScaleAwareModulationCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        heads = len(cfg.kernels)
        per_head = dim // heads
        self.size = size
        self.heads = heads
        self.v = nn.Linear(dim, dim, bias=cfg.bias, **dd)
        self.s = nn.Linear(dim, dim, bias=cfg.bias, **dd)
        self.scales = nn.ModuleList(nn.Conv2d(per_head, per_head, kernel, padding=kernel // 2, groups=per_head, **dd)
                                    for kernel in cfg.kernels)
        self.aggregate = nn.Conv2d(dim, cfg.expand * dim, 1, groups=per_head, **dd)
        self.aggregate_norm = nn.BatchNorm2d(cfg.expand * dim, **dd)
        self.modulator = nn.Conv2d(cfg.expand * dim, dim, 1, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _to_map(self.s(x), self.size)
        mixed = torch.stack([conv(s[:, head::self.heads]) for head, conv in enumerate(self.scales)], dim=2)
        modulator = self.modulator(F.gelu(self.aggregate_norm(self.aggregate(mixed.flatten(1, 2)))))
        return self.proj(modulator.flatten(2).transpose(1, 2) * self.v(x))


@register("mixer", "local_value_attention", LocalValueAttentionCfg)
class LocalValueAttention(TokenMixer):
    """Fused ``qkv`` linear, attention over every token plus a depthwise convolution of ``v``, projection."""

    def __init__(self, cfg: LocalValueAttentionCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.size = size
        self.heads = cfg.heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias, **dd)
        self.local = nn.Conv2d(dim, dim, cfg.kernel, padding=cfg.kernel // 2, groups=dim, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(x).chunk(3, dim=-1)
        mixed = self.attend(x, split_heads(query, self.heads), split_heads(key, self.heads),
                            split_heads(value, self.heads))
        local = self.local(_to_map(value, self.size)).flatten(2).transpose(1, 2)
        return self.proj(mixed + local)


@register("stem", "smt_stem", SmtStemCfg)
class SmtStem(Stem):
    """Conv 3x3/2 (no bias), BatchNorm, ReLU, conv 2x2/2, LayerNorm over channels."""

    def __init__(self, cfg: SmtStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        self.conv = nn.Sequential(nn.Conv2d(in_dim, cfg.dim, 3, 2, 1, bias=False, **dd), nn.BatchNorm2d(cfg.dim, **dd),
                                  nn.ReLU(), nn.Conv2d(cfg.dim, cfg.dim, 2, 2, **dd))
        self.norm = create_norm("layernorm", cfg.dim, "nchw", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


@register("ffn", "residual_conv_mlp", ResidualConvMlpCfg)
class ResidualConvMlp(Mlp):
    """:class:`~nas.blocks.common.Mlp` with a depthwise conv whose input skips it: ``fc2(act(h + mid(h)))``."""

    def __init__(self, cfg: ResidualConvMlpCfg, *, dim: int, layout: Layout, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__(dim, hidden_width(dim, cfg.ratio), layout, act=cfg.act, dwconv=True, size=size,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        return self.fc2(self.act(hidden + self.mid(hidden)))
