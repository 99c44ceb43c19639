"""What a kind declares for the rest of ``nas``: plain data on its config class.

A kind's knowledge lives with the kind (DESIGN.md). Each config class (a
:class:`~nas.arch.Component` subclass) may set these class attributes; the
defaults on ``Component`` declare nothing:

* ``width_fields``: fields that are channel widths (an int or a tuple of ints);
  the proxy scale (:mod:`nas.supernet.proxy`) multiplies them like a stage width.
* ``resolution_fields``: fields bounded by the feature map, each with a
  :class:`FitsMap` saying how to lower it; the proxy lowers them until the
  block fits its map at the proxy resolution.
* ``sharing``: how tensors whose rows or columns are several parts split for
  weight sharing (:mod:`nas.supernet.elastic` does the slicing), keyed by the
  tensor's name inside the kind's module or by an enclosing submodule's name:
  :class:`Chunks`, :class:`RelativeTable`, or :class:`Prefix` for a tensor whose
  dimension is a multiple of the width but made of independent channels.
  A ``*`` in a key stands for any one name (``layers.*.attn.qkv``), for a kind
  that holds a variable number of layers. Undeclared tensors are cut as
  prefixes (convolution kernels centred).
* ``key_fields``: fields whose values change what the rows of the kind's
  weights mean; each value gets weights of its own in the supernet.
* ``ffns_by_path``: for a mixer that holds FFNs at nested positions whose
  number before a position varies with its fields (CrossViT's encoders and
  branches): the supernet keys each FFN by its path inside the mixer rather
  than by its number in module order, so a position keeps its FFN's weights
  whatever the depths before it.
* ``holds_layers``: for a mixer whose module is several layers of a stage
  (GC ViT's global context, CrossViT's encoders): the supernet allocates its
  tensors only at the block positions where its scan met the kind, not at
  every position of the stage, which would copy all its layers once per
  position.
* ``ops``: aten ops the kind emits that the cost model's generic table does
  not class, with their op class (``{"aten.my_op": "elementwise"}``); an op
  declared ``"other"`` is knowingly priced as other.
* ``ops_follow_precision``: true (a property, where a field decides) when the
  kind's module runs other ops at some precisions than in float (QKR's merged
  query-key product under integer weights, :mod:`nas.blocks.qkr`); the cost
  model then traces its block at the block's precision, not as the float module.

The registry-wide tests (tests/test_contract.py) fail when a kind needs a
declaration it lacks. This module imports nothing of ``nas``, so configs,
the supernet and the cost model can all read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Chunks", "FitsMap", "Prefix", "RelativeTable", "Sharing", "declared_sharing"]


@dataclass(frozen=True)
class Sharing:
    """Base of the ways a tensor is shared between a wide and a narrow subnet."""


@dataclass(frozen=True)
class Prefix(Sharing):
    """Independent channels: a narrow subnet uses the first ones (an MLP's hidden units, an expansion).

    Declares that a dimension which is a multiple of the width is *not* fused.
    """


@dataclass(frozen=True)
class Chunks(Sharing):
    """A dimension made of ``parts`` equal parts, each cut on its own.

    Fused ``[q; k; v]`` rows are ``Chunks(3)``; the input columns of a linear
    layer over four concatenated neighbours (Swin's patch merging) are
    ``Chunks(4, axis=1)``.
    """

    parts: int = 3
    axis: int = 0


@dataclass(frozen=True)
class RelativeTable(Sharing):
    """A ``(2w-1)**2 x heads`` relative-position table: a centred square of offsets, a prefix of heads."""


@dataclass(frozen=True)
class FitsMap:
    """A field bounded by the feature map, lowered by one until the block fits.

    Attributes:
        halved: fields that follow it: when non-zero, set to half the lowered
            value (a shifted window keeps half its window as shift).
    """

    halved: tuple[str, ...] = ()


def declared_sharing(sharing: Mapping[str, Sharing], name: str) -> Sharing | None:
    """The declaration covering tensor ``name`` (``qkv.weight``): its own, else its nearest submodule's.

    A key with a ``*`` segment matches any name in that segment; an exact key wins over a pattern.
    """
    parts = name.split(".")
    patterns = [(key.split("."), value) for key, value in sharing.items() if "*" in key]
    for end in range(len(parts), 0, -1):
        found = sharing.get(".".join(parts[:end]))
        if found is None:
            found = next((value for key, value in patterns if _matches(key, parts[:end])), None)
        if found is not None:
            return found
    return None


def _matches(pattern: list[str], parts: list[str]) -> bool:
    return len(pattern) == len(parts) and all(want in ("*", part) for want, part in zip(pattern, parts, strict=True))
