"""Slicing rules: how a tensor a subnet needs is cut out of the stored max-size tensor.

The default cuts prefixes ``[:d0, :d1, ...]``, so channel ``c`` means the same
channel in every subnet; convolution kernels are cut from the centre (a 3x3 is
the middle of a 7x7, as in Once-for-All). A kind declares the exceptions on its
config class (:mod:`nas.blocks.contract`: fused ``qkv`` rows, Swin's relative
position table, patch merging's neighbours), and :func:`rule_for` gives the rule
that implements each declaration.

Shapes are canonical (:func:`canonical`: a 1x1 convolution weight is a linear
weight); where the stored tensor has more dimensions than the needed one, the
extra (singleton) dimensions are taken at their centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from nas.blocks.contract import Chunks, Prefix, RelativeTable, Sharing

__all__ = ["ChunkRule", "ConvKernel", "PrefixRule", "RelativeTableRule", "Rule", "canonical", "pad", "rule_for"]

Shape = tuple[int, ...]


def pad(shape: Shape, rank: int) -> Shape:
    """``shape`` with trailing singleton dimensions up to ``rank``."""
    return shape + (1,) * (rank - len(shape))


def canonical(shape: Shape) -> Shape:
    """Drop trailing singleton dimensions beyond the second (a 1x1 conv weight is a linear weight)."""
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


class Rule:
    """Cuts a tensor of ``shape`` out of a stored max-size tensor; the default cuts prefixes."""

    name: ClassVar[str] = "prefix"

    @property
    def id(self) -> str:
        """Names the rule and its parameters; two uses of one stored tensor must agree on it."""
        return self.name

    def check(self, stored: Shape, shape: Shape) -> str:
        """Empty if ``shape`` fits in ``stored``, else why not."""
        padded = pad(shape, len(stored))
        if len(shape) > len(stored) or any(need > have for need, have in zip(padded, stored, strict=True)):
            return f"needs {tuple(shape)}, allocated {tuple(stored)}"
        return ""

    def starts(self, stored: Shape, shape: Shape, rank: int) -> list[int]:
        """First index per dimension; ``rank`` is the needed tensor's own rank (later dimensions are padding)."""
        return [0 if axis < rank else (have - 1) // 2 for axis, have in enumerate(stored)]

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        padded = pad(shape, stored.ndim)
        starts = self.starts(tuple(stored.shape), padded, len(shape))
        out = stored[tuple(slice(start, start + size) for start, size in zip(starts, padded, strict=True))]
        return out if out.shape == shape else out.reshape(shape)


class PrefixRule(Rule):
    """``stored[:d0, :d1, ...]``: channel ``c`` means the same channel in every subnet."""


class ConvKernel(Rule):
    """Prefix on the channel dimensions, centred on the kernel's spatial ones (OFA's centre crop)."""

    name = "conv"

    def starts(self, stored: Shape, shape: Shape, rank: int) -> list[int]:
        return [0 if axis < 2 else (have - need) // 2
                for axis, (have, need) in enumerate(zip(stored, shape, strict=True))]


@dataclass(frozen=True)
class ChunkRule(Rule):
    """Cuts each of ``parts`` equal parts of dimension ``axis`` on its own (:class:`~nas.blocks.contract.Chunks`)."""

    parts: int = 3
    axis: int = 0
    name: ClassVar[str] = "chunks"

    @property
    def id(self) -> str:
        return f"chunks{self.parts}" + (f"@{self.axis}" if self.axis else "")

    def check(self, stored: Shape, shape: Shape) -> str:
        if shape[self.axis] % self.parts or stored[self.axis] % self.parts:
            return (f"{self.parts} fused parts do not divide dimension {self.axis} of {tuple(shape)} / "
                    f"{tuple(stored)}")
        return super().check(stored, shape)

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        have, need = stored.shape[self.axis] // self.parts, shape[self.axis] // self.parts
        part_shape = tuple(need if axis == self.axis else size for axis, size in enumerate(shape))
        return torch.cat([Rule.view(self, stored.narrow(self.axis, index * have, have), part_shape)
                          for index in range(self.parts)], dim=self.axis)


class RelativeTableRule(Rule):
    """A ``(2w-1)**2 x heads`` table: a centred square of offsets, a prefix of heads."""

    name = "relative_table"

    def check(self, stored: Shape, shape: Shape) -> str:
        for rows in (stored[0], shape[0]):
            if math.isqrt(rows) ** 2 != rows:
                return f"{rows} rows are not a square table of offsets"
        return super().check(stored, shape)

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        have, need = math.isqrt(stored.shape[0]), math.isqrt(shape[0])
        start = (have - need) // 2
        table = stored.view(have, have, *stored.shape[1:])
        return table[start:start + need, start:start + need, :shape[1]].reshape(shape)


def rule_for(declared: Sharing | None, *, conv_weight: bool) -> Rule:
    """The rule for a tensor its kind declared as ``declared`` (None: undeclared).

    Undeclared tensors and declared :class:`~nas.blocks.contract.Prefix` ones are
    prefixes, with a convolution weight's kernel centred.
    """
    if isinstance(declared, Chunks):
        return ChunkRule(declared.parts, declared.axis)
    if isinstance(declared, RelativeTable):
        return RelativeTableRule()
    if declared is None or isinstance(declared, Prefix):
        return ConvKernel() if conv_weight else PrefixRule()
    raise TypeError(f"no slicing rule for the sharing declaration {declared!r}")
