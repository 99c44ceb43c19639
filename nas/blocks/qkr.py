"""Query-key reparameterisation (QKR): a head's logits from one merged, quantised query-key matrix.

"Oscillation-free Quantization for Low-bit Vision Transformers", Liu, Liu and Cheng, ICML 2023,
https://arxiv.org/abs/2302.02210 (the other two remedies are in :mod:`nas.blocks.ofq`). The paper traces part of
low-bit ViTs' weight oscillation to the interplay of the separately quantised query and key weights, whose
rounding errors meet in ``q . k``; QKR quantises their product instead, per head ``h`` (``C`` channels,
``head_dim`` rows of each of ``W_q,h`` and ``W_k,h``)::

    logits_h[i, j] = q_i . k_j  ~  t_i . x_j   with   t_i = Q(M_h) x_i + b_h,   M_h = W_k,h^T W_q,h  (C x C)

The latent (trained) weights stay the ``q`` and ``k`` rows of the fused ``qkv`` linear; ``v`` rows and the output
projection are quantised as usual, and the input ``x`` is quantised once and used on both sides. In float the
two computations give the same attention: ``t_i . x_j = q_i . k_j - q_i . b_k``, and the dropped term is the
same for every key of query ``i``, which softmax (clipped or not) ignores. That is why the merged matrix is
``W_k^T W_q`` (it projects the *queries* into the input space), the transpose of the paper's ``W_q^T W_k``: its
query bias folds into the merged projection's bias ``b_h = W_k,h^T b_q,h`` exactly (the paper's ``q`` and ``k``
have no bias), and the key bias has no effect (its gradient is zero).

Deployed, the merged projection ``[M_1; ...; M_heads; W_v]`` is one linear layer ``C -> (heads + 1) * C``,
and each head's logits have an inner dimension ``C`` instead of ``head_dim``. ``Q(M_h)`` has rank up to ``C``,
so a model trained this way cannot be exported as plain ``q``/``k`` rows: it stays a QKR model (the
``qk_merged`` field of its Arch), whose state is that of the plain kind.

How a kind with a fused ``qkv`` linear opts in: one more base on its config, :class:`QueryKeyMergeable`, its
projection made by :func:`create_qkv` and split by :func:`qkv_heads`::

    self.qkv = create_qkv(dim, cfg.heads, bias=cfg.qkv_bias, merged=cfg.qk_merged, **dd)
    query, key, value, scale = qkv_heads(self.qkv, x, self.heads)
    out = self.attend(x, query, key, value, scale=scale)

Merged, the projection is a :class:`MergeableQkv`, which keeps the ``qkv`` parameters (float checkpoints and the
supernet's shared weights load); otherwise it is the plain ``nn.Linear``, and nothing changes. A
:class:`MergeableQkv` with float weights (or another non-integer format, with no uniform grid to oscillate on)
computes the plain kind's ops; integer weights make it a :class:`MergedQkv`
(:func:`~nas.blocks.fakequant.apply_precision`), and its block is priced as such
(:attr:`QueryKeyMergeable.ops_follow_precision`). :func:`merge_query_key` sets the field on every block of an
Arch that has it (``nas train --qkr``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Arch, Block, NumberFormat, option_field
from nas.blocks.common import factory_kwargs, split_heads
from nas.blocks.fakequant import QuantizedLayer, QuantizedLinear, Quantizer, QuantizesItself
from nas.errors import NasError

__all__ = ["QueryKeyMergeable", "MergeableQkv", "QuantizedMergeableQkv", "MergedQkv", "create_qkv", "qkv_heads",
           "merge_query_key"]

QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float | None]
"""``(query, key, value, scale)`` for :class:`~nas.blocks.quantizable.SoftmaxAttention`; scale None: its default."""


@dataclass(frozen=True)
class QueryKeyMergeable:
    """Config mixin: the ``qk_merged`` option (QKR). Put it before ``Component`` in a config's bases.

    Attributes:
        qk_merged: under integer weights, quantise each head's merged query-key matrix rather than the ``q`` and
            ``k`` rows (see the module docstring); no effect with float weights.
    """

    qk_merged: bool = option_field(False)

    @property
    def ops_follow_precision(self) -> bool:
        """Merged, the block's ops depend on its weight format (:attr:`nas.arch.Component.ops_follow_precision`)."""
        return self.qk_merged


class MergeableQkv(nn.Linear, QuantizesItself):
    """The fused ``[q; k; v]`` linear (``dim -> 3 * dim``) of a ``qk_merged`` attention, in float.

    A plain ``nn.Linear`` with the same parameters; it knows its heads so that, quantised to integer weights, it
    becomes a :class:`MergedQkv`.
    """

    def __init__(self, dim: int, heads: int, *, bias: bool = True, device: Any = None, dtype: Any = None):
        super().__init__(dim, 3 * dim, bias=bias, **factory_kwargs(device, dtype))
        self.heads = heads

    def heads_of(self, x: torch.Tensor) -> QKV:
        """``x`` ``(..., tokens, dim)`` to split-head ``query``, ``key``, ``value`` (``(..., heads, tokens, head_dim)``)
        and the default scale."""
        query, key, value = (split_heads(part, self.heads) for part in self(x).chunk(3, dim=-1))
        return query, key, value, None

    def quantize_to(self, weights: NumberFormat, activations: NumberFormat) -> None:
        """Merged under integer weights (:class:`MergedQkv`), else the plain layer's fake quantisation."""
        merged = weights.family == "int"
        self.__class__ = MergedQkv if merged else QuantizedMergeableQkv
        rows = (self.heads + 1) * self.in_features if merged else self.out_features
        device = self.weight.device
        self.add_module("input_quantizer", Quantizer(activations, channels=self.in_features, axis=-1, device=device))
        self.add_module("weight_quantizer", Quantizer(weights, channels=rows, axis=0, device=device))


class QuantizedMergeableQkv(MergeableQkv, QuantizedLinear):
    """A :class:`MergeableQkv` under a non-integer weight format: quantised as any linear layer, not merged."""


class MergedQkv(MergeableQkv, QuantizedLayer):
    """QKR's projection: ``x -> [t_1; ...; t_heads; v]`` by the quantised merged weight (see the module docstring).

    Its parameters are the fused ``qkv`` linear's; its ``weight_quantizer`` rounds :meth:`deployed_weight`, one
    scale per row (per channel) or one for the whole matrix (per tensor, as the plain ``qkv`` has one for its
    ``q``, ``k`` and ``v`` rows); its ``input_quantizer`` rounds ``x`` once for both sides of the logits.
    """

    weight_is_latent = False  # the merged rows are products of q and k rows: nothing to freeze (OFQ's CGA)

    def deployed_weight(self) -> torch.Tensor:
        """``[M_1; ...; M_heads; W_v]``, ``((heads + 1) * dim, dim)``, ``M_h = W_k,h^T W_q,h``.

        On ``meta`` (cost tracing) an empty tensor of that shape: deployed, the merged matrix is a constant, so
        its computation from ``q`` and ``k`` is no op of the priced forward.
        """
        dim = self.in_features
        if self.weight.is_meta:
            return self.weight.new_empty(((self.heads + 1) * dim, dim))
        merged = self._per_head(dim).transpose(1, 2) @ self._per_head(0)
        return torch.cat([merged.reshape(self.heads * dim, dim), self.weight[2 * dim:]])

    def deployed_bias(self) -> torch.Tensor | None:
        """``[b_1; ...; b_heads; b_v]`` with ``b_h = W_k,h^T b_q,h`` (the key bias drops out); None without bias."""
        if self.bias is None:
            return None
        dim = self.in_features
        if self.bias.is_meta:
            return self.bias.new_empty(((self.heads + 1) * dim,))
        query_bias = self.bias[:dim].reshape(self.heads, dim // self.heads, 1)
        merged = self._per_head(dim).transpose(1, 2) @ query_bias
        return torch.cat([merged.reshape(self.heads * dim), self.bias[2 * dim:]])

    def _per_head(self, start: int) -> torch.Tensor:
        """Rows ``start ... start + dim - 1`` of the weight (the ``q`` or ``k`` rows) as ``(heads, head_dim, dim)``.

        Static slices and shapes, so that an exporter folds the merged weight into a constant.
        """
        dim = self.in_features
        return self.weight[start:start + dim].reshape(self.heads, dim // self.heads, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The merged projection ``(..., dim) -> (..., (heads + 1) * dim)``: ``[t_1; ...; t_heads; v]``."""
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.deployed_weight()), self.deployed_bias())

    def heads_of(self, x: torch.Tensor) -> QKV:
        """``query`` ``t`` and ``key`` ``Q(x)`` with ``dim`` channels per head, ``value`` with ``head_dim``, and
        the plain kind's scale ``head_dim ** -0.5``.

        The key is ``x`` as the projection's own input quantiser rounds it (the same values, one range); the
        projection runs as the layer's forward, so hooks on the layer (PTQ analysis) see it.
        """
        merged, value = self(x).split([self.heads * self.in_features, self.in_features], dim=-1)
        query = split_heads(merged, self.heads)
        key = self.input_quantizer(x).unsqueeze(-3).expand(query.shape)
        return query, key, split_heads(value, self.heads), (self.in_features // self.heads) ** -0.5


def create_qkv(dim: int, heads: int, *, bias: bool, merged: bool, device: Any = None,
               dtype: Any = None) -> nn.Linear:
    """The fused ``dim -> 3 * dim`` projection: a :class:`MergeableQkv` if ``merged``, else a plain ``nn.Linear``."""
    if merged:
        return MergeableQkv(dim, heads, bias=bias, device=device, dtype=dtype)
    return nn.Linear(dim, 3 * dim, bias=bias, **factory_kwargs(device, dtype))


def qkv_heads(qkv: nn.Linear, x: torch.Tensor, heads: int) -> QKV:
    """Split-head ``query``, ``key``, ``value`` and the scale from ``x`` by a projection of :func:`create_qkv`."""
    if isinstance(qkv, MergeableQkv):
        return qkv.heads_of(x)
    query, key, value = (split_heads(part, heads) for part in qkv(x).chunk(3, dim=-1))
    return query, key, value, None


def merge_query_key(arch: Arch) -> Arch:
    """``arch`` with ``qk_merged`` set on every block whose mixer has it (``nas train --qkr``).

    Raises:
        NasError: no block of ``arch`` has such a mixer, or none of those quantises its weights to an integer
            format (the field would change nothing).
    """
    label = arch.name or arch.id
    mergeable = [block for stage in arch.stages for block in stage.blocks
                 if isinstance(block.mixer, QueryKeyMergeable)]
    if not mergeable:
        raise NasError(f"--qkr merges attention's query and key weights, but {label} has no block whose mixer "
                       "takes it (global or windowed attention)")
    if not any(block.precision.formats("block")[0].family == "int" for block in mergeable):
        raise NasError(f"--qkr acts on integer weight formats, but no attention block of {label} quantises its "
                       "weights to one; add --precision, e.g. int8")

    def merged(block: Block) -> Block:
        if not isinstance(block.mixer, QueryKeyMergeable):
            return block
        return dataclasses.replace(block, mixer=dataclasses.replace(block.mixer, qk_merged=True))

    return arch.replace(stages=tuple(dataclasses.replace(stage, blocks=tuple(merged(block) for block in stage.blocks))
                                     for stage in arch.stages))
