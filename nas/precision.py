"""Numeric formats of a block: which format each tensor takes, per block and for its FFN.

Part of the one contract (:mod:`nas.arch` re-exports it), kept in a module of its own because formats have
rules of their own (qualifiers, which family takes which) that the rest of the tree does not need to read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from nas.component import join_path
from nas.errors import ConfigError

__all__ = ["NUMBER_FORMATS", "NumberFormat", "Precision"]

NUMBER_FORMATS: dict[str, tuple[str, int]] = {
    "fp32": ("float", 32), "fp16": ("float", 16), "bf16": ("float", 16),
    "fp8_e4m3": ("float", 8), "fp8_e5m2": ("float", 8), "int8": ("int", 8), "int4": ("int", 4),
}
"""Each tensor format a precision may name: its family (``float`` or ``int``) and its bits."""

_QUALIFIERS = ("channel", "affine")


@dataclass(frozen=True)
class NumberFormat:
    """One tensor's format, parsed from a spec ``FORMAT[:channel][:affine]`` (``int8``, ``int8:channel:affine``).

    ``channel``: one scale per output channel (weights) or per channel (activations) instead of one per
    tensor. ``affine``: an integer format with a zero point instead of a symmetric range. Float formats
    take neither (fp8 is scaled per tensor, fp16/bf16/fp32 not at all).
    """

    name: str
    per_channel: bool = False
    affine: bool = False

    @classmethod
    def parse(cls, spec: str, path: str) -> NumberFormat:
        name, *qualifiers = spec.split(":")
        if name not in NUMBER_FORMATS:
            raise ConfigError(f"unknown number format {name!r}; allowed: {', '.join(NUMBER_FORMATS)}", path=path)
        for qualifier in qualifiers:
            if qualifier not in _QUALIFIERS:
                raise ConfigError(f"unknown qualifier {qualifier!r} in {spec!r}; allowed: {', '.join(_QUALIFIERS)} "
                                  "(written FORMAT[:channel][:affine])", path=path)
        if len(set(qualifiers)) != len(qualifiers) or qualifiers != sorted(qualifiers, key=_QUALIFIERS.index):
            raise ConfigError(f"{spec!r}: write each qualifier once, in the order FORMAT[:channel][:affine]",
                              path=path)
        if "affine" in qualifiers and NUMBER_FORMATS[name][0] != "int":
            raise ConfigError(f"{spec!r}: only integer formats take a zero point (affine)", path=path)
        if "channel" in qualifiers and name in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"{spec!r}: {name} has no scale to give per channel", path=path)
        return cls(name, "channel" in qualifiers, "affine" in qualifiers)

    @property
    def family(self) -> str:
        """``float`` or ``int``."""
        return NUMBER_FORMATS[self.name][0]

    @property
    def bits(self) -> int:
        return NUMBER_FORMATS[self.name][1]

    @property
    def is_float32(self) -> bool:
        return self.name == "fp32"


@dataclass(frozen=True)
class Precision:
    """Numeric formats of a block's weights and activations (fake-quantised in ``build`` when not fp32).

    Each field is a format spec ``FORMAT[:channel][:affine]`` (:class:`NumberFormat`). ``weights`` and
    ``activations`` cover the whole block; ``ffn_weights`` and ``ffn_activations``, where set, override
    them for the FFN's layers, the one split inside a block a space may ask for (FLIQS searches mixer and
    FFN layers apart). A block that owns its FFN (ResNet, MBConv) names it ``ffn`` too, or has none.
    The default (fp32 everywhere) is not written to files, so float32 Archs keep their ids.
    """

    weights: str = "fp32"
    activations: str = "fp32"
    ffn_weights: str | None = None
    ffn_activations: str | None = None

    def check(self, path: str) -> None:
        for name in ("weights", "activations", "ffn_weights", "ffn_activations"):
            spec = getattr(self, name)
            if spec is not None:
                NumberFormat.parse(spec, join_path(path, name))

    @classmethod
    def from_spec(cls, spec: str, path: str = "--precision") -> Precision:
        """The precision ``WEIGHTS[/ACTIVATIONS]`` names (``int8``, ``int8:channel/int8:affine``, ``fp16``).

        Activations default to the weights' format without its per-channel qualifier (a per-channel
        activation scale is rarely what a user means by one word).
        """
        weights, _, activations = spec.partition("/")
        if not activations:
            activations = weights.replace(":channel", "")
        precision = cls(weights, activations)
        precision.check(path)
        return precision

    def formats(self, part: Literal["block", "ffn"] = "block") -> tuple[NumberFormat, NumberFormat]:
        """(weights, activations) of the block's layers, or of its FFN's layers."""
        weights, activations = self.weights, self.activations
        if part == "ffn":
            weights = self.ffn_weights or weights
            activations = self.ffn_activations or activations
        return NumberFormat.parse(weights, "weights"), NumberFormat.parse(activations, "activations")

    def to_dict(self) -> dict[str, str]:
        """Only the fields that differ from fp32 (and the FFN overrides that are set)."""
        return {name: value for name, value in dataclasses.asdict(self).items()
                if value is not None and value != getattr(Precision, name)}

    @property
    def is_default(self) -> bool:
        return not self.to_dict()
