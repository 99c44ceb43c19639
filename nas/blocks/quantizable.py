"""Attention options for quantization: clipped softmax and gated attention, shared by every softmax attention kind.

Paper: "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do
Nothing", Bondarenko, Nagel and Blankevoort, NeurIPS 2023, arXiv:2306.12929.
A head that should leave the residual alone can only do so with softmax by
pushing its scores to extremes, and those large scores are the activation
outliers that defeat 8-bit quantization (Sec. 3). The paper gives the head two
ways to do nothing with small scores (Sec. 4):

* **clipped softmax**: ``clip((zeta - gamma) * softmax(s) + gamma, 0, 1)``. The
  stretch ``zeta >= 1, gamma <= 0`` lets a probability reach an exact 0 (or 1)
  with finite scores; ``zeta = 1, gamma = 0`` is plain softmax. The paper often
  sets ``gamma = -alpha / T`` for ``T`` tokens; here ``gamma`` is given directly.
* **gated attention**: each head's output is multiplied by
  ``sigmoid(G_h(x_h))`` before the output projection, where ``G_h`` is a linear
  layer from the head's slice ``x_h`` of the token's input (``head_dim``
  features) to one logit: the paper's per-head conditional gate. It adds
  ``dim + heads`` parameters; a gate at 0 removes the head's contribution.

How a kind opts in (one declaration on its config, the module uses the pieces below)::

    @dataclass(frozen=True)
    class MyAttentionCfg(QuantizableAttention, Component):   # the fields clip_zeta, clip_gamma, gated
        ...

    # in the module's __init__ and forward:
    self.attend = SoftmaxAttention(cfg, dim=dim, heads=heads, **dd)
    mixed = self.attend(x, query, key, value, attn_mask=bias)     # heads merged, gated: (..., tokens, dim)

A kind that computes its scores itself takes :func:`create_softmax`, and one whose
output is not in split-head layout takes :func:`create_product` and :func:`create_gate`. The option fields are
:func:`~nas.arch.option_field`: at their defaults they are not written, so every
existing file and Arch id is unchanged, and the module then emits exactly the ops it
did before (the fused scaled dot-product attention, no gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import option_field
from nas.blocks.common import factory_kwargs, merge_heads
from nas.errors import ConfigError

__all__ = [
    "QuantizableAttention",
    "OPTIONS_OFF",
    "clipped_softmax",
    "ClippedSoftmax",
    "HeadGate",
    "NoGate",
    "SoftmaxAttention",
    "create_softmax",
    "create_product",
    "create_gate",
]


@dataclass(frozen=True)
class QuantizableAttention:
    """Config mixin: the clipped-softmax stretch and the per-head output gate (arXiv:2306.12929).

    Put it before ``Component`` in the bases of a softmax attention kind's config.

    Attributes:
        clip_zeta: upper stretch of the clipped softmax, ``>= 1`` (1: no stretch above).
        clip_gamma: lower stretch, ``<= 0`` (0: no stretch below); probabilities under
            ``-gamma / (zeta - gamma)`` become exactly 0.
        gated: multiply each head's output by its input-conditioned sigmoid gate.
    """

    clip_zeta: float = option_field(1.0)
    clip_gamma: float = option_field(0.0)
    gated: bool = option_field(False)

    @property
    def clipped(self) -> bool:
        """Whether the stretch differs from the identity (then softmax is computed explicitly, not fused)."""
        return self.clip_zeta != 1.0 or self.clip_gamma != 0.0

    def check_options(self) -> None:
        if self.clip_zeta < 1.0:
            raise ConfigError(f"must be >= 1 (1 is plain softmax's upper end), got {self.clip_zeta}",
                              path="clip_zeta")
        if self.clip_gamma > 0.0:
            raise ConfigError(f"must be <= 0 (0 is plain softmax's lower end), got {self.clip_gamma}",
                              path="clip_gamma")


OPTIONS_OFF = QuantizableAttention()  # plain softmax, no gate: the default of modules that take options


def clipped_softmax(scores: torch.Tensor, zeta: float, gamma: float, dim: int = -1) -> torch.Tensor:
    """``clip((zeta - gamma) * softmax(scores) + gamma, 0, 1)`` along ``dim``."""
    return ((zeta - gamma) * scores.softmax(dim) + gamma).clamp(0.0, 1.0)


class ClippedSoftmax(nn.Module):
    """:func:`clipped_softmax` over the last dimension with a fixed stretch."""

    def __init__(self, zeta: float, gamma: float):
        super().__init__()
        self.zeta = zeta
        self.gamma = gamma

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return clipped_softmax(scores, self.zeta, self.gamma)


def create_softmax(cfg: QuantizableAttention) -> nn.Module:
    """Softmax over the last dimension: plain, or clipped when the config stretches it."""
    return ClippedSoftmax(cfg.clip_zeta, cfg.clip_gamma) if cfg.clipped else nn.Softmax(dim=-1)


class _FusedAttention(nn.Module):
    """``softmax(q k^T * scale + mask) v`` by :func:`torch.nn.functional.scaled_dot_product_attention`."""

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)


class _ExplicitAttention(nn.Module):
    """The same product with an explicit (clipped) softmax: a fused kernel cannot take the stretch."""

    def __init__(self, softmax: nn.Module):
        super().__init__()
        self.softmax = softmax

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
        scale = query.shape[-1] ** -0.5 if scale is None else scale
        scores = (query * scale) @ key.transpose(-1, -2)
        if attn_mask is not None:
            scores = scores + attn_mask
        return self.softmax(scores) @ value


def create_product(cfg: QuantizableAttention) -> nn.Module:
    """``product(query, key, value, attn_mask=None, scale=None)``: fused, or explicit when the softmax is clipped."""
    return _ExplicitAttention(create_softmax(cfg)) if cfg.clipped else _FusedAttention()


class HeadGate(nn.Module):
    """``out_h * sigmoid(w_h . x_h + b_h)`` per head ``h`` and token: the paper's conditional per-head gate.

    ``weight`` holds the ``heads`` linear layers ``head_dim -> 1`` side by side (``dim`` values), so
    head ``h`` reads channels ``h * head_dim ... (h + 1) * head_dim - 1`` of the input, the same
    channels its queries are split from. The bias starts at 0 (every gate at 0.5).
    """

    def __init__(self, dim: int, heads: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.weight = nn.Parameter(torch.empty(dim, **dd))
        self.bias = nn.Parameter(torch.zeros(heads, **dd))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., tokens, dim) -> (..., tokens, heads)``: each head's gate in ``[0, 1]``."""
        return torch.sigmoid((x * self.weight).unflatten(-1, (self.heads, -1)).sum(-1) + self.bias)

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` (``(..., tokens, heads * head_dim)``, heads merged) gated by ``x`` of the same shape."""
        return (out.unflatten(-1, (self.heads, -1)) * self.gate(x).unsqueeze(-1)).flatten(-2)


class NoGate(nn.Module):
    """The ungated output: ``forward(x, out) = out``."""

    def forward(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out


def create_gate(cfg: QuantizableAttention, dim: int, heads: int, *, device: Any = None,
                dtype: Any = None) -> nn.Module:
    """A :class:`HeadGate` when the config is ``gated``, else :class:`NoGate`."""
    return HeadGate(dim, heads, device=device, dtype=dtype) if cfg.gated else NoGate()


class SoftmaxAttention(nn.Module):
    """Split-head ``q, k, v`` to the heads' merged, gated output: the core every softmax attention kind shares.

    ``forward(x, query, key, value, attn_mask=None, scale=None)``: ``query`` ``(..., heads, tokens, head_dim)``,
    ``key``/``value`` ``(..., heads, keys, head_dim)``, ``x`` the ``(..., tokens, dim)`` input the gate reads;
    returns ``(..., tokens, dim)``. ``scale`` defaults to ``head_dim ** -0.5``.
    """

    def __init__(self, cfg: QuantizableAttention, *, dim: int, heads: int, device: Any = None, dtype: Any = None):
        super().__init__()
        self.product = create_product(cfg)
        self.gate = create_gate(cfg, dim, heads, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attn_mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
        return self.gate(x, merge_heads(self.product(query, key, value, attn_mask=attn_mask, scale=scale)))
