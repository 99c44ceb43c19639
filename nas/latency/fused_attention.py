"""Scaled-dot-product attention run as one fused kernel, for settings whose runtime does so.

The trace sees an ``F.scaled_dot_product_attention`` call as its math path (:mod:`nas.op_attention`): two
``bmm`` and the ``N x N`` scores written, scaled, masked and softmaxed in between, each op launched on its
own. Eager PyTorch on a CPU runs the call as one kernel, ``_scaled_dot_product_flash_attention_for_cpu``,
which walks key/value blocks with an online softmax and never writes the scores. Which kernel runs is
chosen per call by ``sdp::select_sdp_backend_cpp`` (``aten/src/ATen/native/transformers/sdp_utils_cpp.cpp``):
flash attention first, the math path when one of ``use_flash_attention_cpp``'s checks fails. The rule
applies two of them, the ones the blocks here differ in: ``check_tensor_shapes`` (query, key and value must
be 4-D) and ``check_head_dim_size_cpp`` (their last dimensions must be equal); the others (no dropout, no
nested tensors, matching batch and head counts, a unit stride in the last dimension) are assumed to hold. A
mask does not stop it (``check_attn_mask_shape``; the kernel reads it block by block). So a 5-D call (a
window attention that keeps the windows as a dimension of their own) or one whose values are wider than its
keys (EfficientFormer's) runs op by op, as traced. Checked with ``torch.profiler`` on torch 2.13, fp32.

A setting with ``fused_attention: true`` prices each call that passes those checks as one op of kind
``bmm`` (op class ``attention``): one launch, the two products' FLOPs at the ``bmm`` efficiency, and the
traffic of a kernel that reads query, key, value and the mask once and writes the output once; the scaling,
mask add and softmax are inside it (their FLOPs are left out, as the products dominate).
"""

from __future__ import annotations

from collections.abc import Sequence

from nas.cost import Op
from nas.latency.kinds import numel

__all__ = ["FUSED_ATTENTION_NAME", "fused_attention_calls"]

FUSED_ATTENTION_NAME = "aten._scaled_dot_product_flash_attention_for_cpu"
"""The name the fused kernel's op carries (eager PyTorch's CPU kernel)."""
_RANK = 4  # check_tensor_shapes: the fused kernel takes (batch, heads, tokens, head_dim) only


def _calls(ops: Sequence[Op]) -> list[list[int]]:
    """Indices of the ops of each attention call, in order (consecutive ops naming the same call)."""
    out: list[list[int]] = []
    for index, op in enumerate(ops):
        if not op.attention_call:
            continue
        if out and ops[out[-1][-1]].attention_call == op.attention_call and out[-1][-1] == index - 1:
            out[-1].append(index)
        else:
            out.append([index])
    return out


def _kernel(ops: Sequence[Op], indices: list[int], first: int) -> Op | None:
    """The one op a fused kernel runs the call ``indices`` as, or None if the runtime runs it op by op."""
    products = [index for index in indices if ops[index].name == "aten.bmm"]
    output = ops[indices[-1]].out_shapes[0] if ops[indices[-1]].out_shapes else ()
    if len(products) != 2 or len(output) != _RANK:
        return None
    scores, mixed = ops[products[0]], ops[products[1]]
    query, key_t = scores.in_shapes
    value = mixed.in_shapes[1]
    if not query[-1] == key_t[-2] == value[-1]:  # check_head_dim_size_cpp
        return None
    # The mask: the other operand of each op between the products that reads the scores and something else.
    mask = sum(numel(shape) for index in range(products[0] + 1, products[1])
               for shape in ops[index].in_shapes[1:] if ops[index].op_class == "elementwise")
    element = mixed.bytes_written / max(numel(mixed.out_shapes[0]), 1)
    inside = {first + index for index in indices}
    sources = tuple(sorted({source for index in indices for source in ops[index].sources} - inside))
    # Operands as the products read them: q (..., N, d), k transposed (..., d, M), v (..., M, d). The tile rule
    # (nas.latency.optable) then pads M and d once, as it pads each product's output and reduction unfused.
    return Op(ops[indices[-1]].unit, FUSED_ATTENTION_NAME, "attention", (query, key_t, value), (output,), mixed.dtype,
              scores.flops + mixed.flops, int(element * (numel(query) + numel(key_t) + numel(value) + mask)),
              int(element * numel(output)), sources, mixed.precision, attention_call=mixed.attention_call)


def fused_attention_calls(ops: Sequence[Op], first: int = 0) -> dict[int, Op | None]:
    """Per index into ``ops`` of an op of an attention call the fused kernel runs: the kernel's op at the call's
    last op, None at its others (which it replaces). Calls that run op by op are not in it.

    Args:
        ops: a run of traced ops (one fusion segment).
        first: the index of ``ops[0]`` in the traced op list, which :attr:`Op.sources` index.
    """
    out: dict[int, Op | None] = {}
    for indices in _calls(ops):
        kernel = _kernel(ops, indices, first)
        if kernel is not None:
            out.update(dict.fromkeys(indices[:-1]))
            out[indices[-1]] = kernel
    return out
