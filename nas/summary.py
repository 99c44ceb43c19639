"""One short line that says what a point is made of: its mixers, FFNs and precisions, with counts.

A run's history names candidates by id; this line lets a reader see in ``nas history`` which
candidates carry an MoE FFN or a mixed precision without opening each Arch.

Example:
    >>> import nas
    >>> design_summary(nas.zoo.get("poolformer_s12"))
    'pooling x12; mlp x12'
"""

from __future__ import annotations

from collections import Counter

from nas.arch import Arch, Block

__all__ = ["design_summary", "precision_mix"]


def _counted(counts: Counter[str]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in counts.most_common())


def _spec(weights: str, activations: str) -> str:
    """The ``--precision`` spelling: ``WEIGHTS/ACTIVATIONS``, one word when they agree."""
    return weights if weights == activations else f"{weights}/{activations}"


def _precision_name(block: Block) -> str:
    precision = block.precision
    name = _spec(precision.weights, precision.activations)
    if precision.ffn_weights or precision.ffn_activations:
        name += " ffn " + _spec(precision.ffn_weights or precision.weights,
                                precision.ffn_activations or precision.activations)
    return name


def precision_mix(arch: Arch) -> str:
    """Blocks per precision, most common first (``int8 x10, fp32 x2``)."""
    return _counted(Counter(_precision_name(block) for stage in arch.stages for block in stage.blocks))


def design_summary(arch: Arch) -> str:
    """Mixer kinds; FFN kinds (``none`` left out); and the precision mix where any block is not fp32."""
    blocks = [block for stage in arch.stages for block in stage.blocks]
    parts = [_counted(Counter(block.mixer.kind for block in blocks)),
             _counted(Counter(block.ffn.kind for block in blocks if block.ffn.kind != "none"))]
    if any(not block.precision.is_default for block in blocks):
        parts.append(precision_mix(arch))
    return "; ".join(part for part in parts if part)
