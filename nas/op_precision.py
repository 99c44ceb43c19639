"""The number format a traced op runs at, from the precision of the block it belongs to.

:mod:`nas.cost` traces every block as its float module (fake quantisation never shows up in an op list,
and one trace serves every precision of a block), then names each op's format with :func:`op_format`.
The rules, which every latency target reads as "the format this op computes in":

* A MAC op (convolution, linear layer, ``baddbmm`` experts) computes in the format its two operands imply:

  - both integer: the wider integer format (``int8 x int8`` is int8, ``int4`` weights with ``int8``
    activations run an int8 kernel, ``int4 x int4`` is int4);
  - otherwise the wider float format among them, the activations' on a tie: integer or narrower float
    weights with float activations are weight-only compression, dequantised before the product
    (``int8`` weights and ``fp16`` activations compute in fp16, ``int4`` weights with ``fp32``
    activations in fp32); float weights with integer activations dequantise the activations.

* An activation x activation product (``aten.bmm``, fused attention: the attention scores and their
  weighted sum) has no weights: both operands are activations, so it computes in the activations' format.
* Every other op (norms, activations, element-wise, pooling, data movement) runs in the activations' format.

A block's ``ffn_weights`` / ``ffn_activations`` override these formats for the ops run inside its FFN
(:func:`nas.blocks.registry.ffn_parts`); ops outside any block (stem, downsamplers, head, layout
conversions, a token clustering's own ops) have no precision of their own and stay ``fp32``.
Per-channel scales and zero points change accuracy, not the kernel a target runs, so formats are named
without their qualifiers (``int8``, not ``int8:channel``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import cache
from typing import Any

from nas.arch import Arch, Block, NumberFormat, Precision
from nas.build import Unit, plan
from nas.op_classes import MAC_CLASSES

__all__ = ["BLOCK_ROLES", "FLOAT32", "compute_format", "float_units", "in_part", "op_format", "unit_formats"]

BLOCK_ROLES = frozenset({"block", "clustered"})
"""Roles of the plan units that hold blocks, and so may have a precision."""

FLOAT32 = "fp32"
"""The format of an op with no precision of its own (every op of a float32 model)."""

_ACTIVATION_PRODUCTS = frozenset({"aten.bmm"})


def compute_format(weights: NumberFormat, activations: NumberFormat) -> str:
    """The format a product of ``weights`` and ``activations`` computes in (see the module docstring)."""
    if weights.family == "int" and activations.family == "int":
        return weights.name if weights.bits > activations.bits else activations.name
    floats = [fmt for fmt in (activations, weights) if fmt.family == "float"]
    return max(floats, key=lambda fmt: fmt.bits).name  # max keeps the first (the activations') on a tie


@cache
def op_format(op_class: str, name: str, precision: Precision, part: str) -> str:
    """The format op ``name`` (of ``op_class``) runs at in the ``part`` (``block`` or ``ffn``) of a block
    at ``precision``."""
    weights, activations = precision.formats(part)  # type: ignore[arg-type]
    if op_class in MAC_CLASSES and op_class != "attention" and name not in _ACTIVATION_PRODUCTS:
        return compute_format(weights, activations)
    return activations.name


def in_part(submodule: str, ffn: tuple[str, ...]) -> str:
    """``ffn`` if the op ran inside one of the FFN submodules ``ffn`` (dotted names), else ``block``."""
    for part in ffn:
        if submodule == part or submodule.startswith(part + "."):
            return "ffn"
    return "block"


def float_units(arch: Arch) -> list[Unit]:
    """The units of ``arch`` as :func:`nas.cost.profile` traces them: planned with every block's precision
    stripped.

    Blocks are traced as their float module, so fake quantisation never shows up in an op list and a
    block's trace is shared by all its precisions (the unit keys are those of the float32 Arch); the
    formats are put back on the ops from ``arch`` (:func:`unit_formats`). A block whose mixer's ops follow
    its precision (:attr:`nas.arch.Component.ops_follow_precision`) keeps it: on ``meta`` its quantisers
    pass tensors through, so its trace holds the ops it runs at that precision and no fake quantisation.
    """
    if all(block.precision.is_default for stage in arch.stages for block in stage.blocks):
        return plan(arch).units
    return plan(_float_blocks(arch)).units


def _float_blocks(arch: Arch) -> Arch:
    """``arch`` with its blocks' precisions stripped but where the mixer's ops follow them."""
    float32 = Precision()

    def stripped(block: Block) -> Block:
        return block if block.mixer.ops_follow_precision else dataclasses.replace(block, precision=float32)

    return arch.replace(stages=tuple(dataclasses.replace(stage, blocks=tuple(stripped(block) for block in stage.blocks))
                                     for stage in arch.stages))


def unit_formats(unit: Unit, records: Sequence[tuple[Any, ...]], ffn: tuple[str, ...],
                 arch: Arch | None) -> list[str] | None:
    """The format of each traced record of ``unit`` (a unit of :func:`float_units`), or None when all are fp32.

    Args:
        unit: the unit; only blocks and clustered runs of blocks have precisions.
        records: its records, each ``(submodule that ran it, aten name, op class, ...)``.
        ffn: dotted names of its FFN submodules (:func:`nas.blocks.registry.ffn_parts`).
        arch: the Arch it was planned from, with its precisions (None: every op is fp32).
    """
    if arch is None or unit.role not in BLOCK_ROLES or unit.index is None:
        return None
    blocks = arch.stages[unit.stage].blocks
    if unit.role == "block":
        chosen = [blocks[unit.index].precision]
    else:  # nas.blocks.clustering.ClusteredRun holds the enclosed blocks as its submodules ``blocks.N``
        chosen = [block.precision for block in blocks[unit.index:]]
    if all(precision.is_default for precision in chosen):
        return None
    out = []
    for record in records:
        submodule = record[0]
        precision: Precision | None = chosen[0]
        if unit.role == "clustered":
            head, _, rest = submodule.partition(".")
            number = rest.partition(".")[0]
            precision = chosen[int(number)] if head == "blocks" and number.isdigit() else None
        out.append(FLOAT32 if precision is None or precision.is_default
                   else op_format(record[2], record[1], precision, in_part(submodule, ffn)))
    return out
