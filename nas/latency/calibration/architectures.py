"""CNN or transformer: the two halves the validation figures are split into.

A predictor fitted mostly on CNNs can rank CNNs well and transformers badly (issue 26): one figure over
all held-out rows hides that. A family counts as a transformer family when one of its models traces an
activation x activation matrix product (latency kind ``bmm``: attention), hybrids included (EfficientFormer,
FastViT's SA/MA models, Next-ViT); every other family is a CNN family. The rule reads the traced ops, so a
new family is classed without a table to keep up to date.
"""

from __future__ import annotations

from collections.abc import Iterable

from nas.latency.calibration.measurements import Measurement, trace
from nas.latency.kinds import kind_of

__all__ = ["ARCHITECTURES", "architecture_of", "family_architectures"]

ARCHITECTURES = ("cnn", "transformer")
"""The classes a family falls in, in the order reports list them."""


def architecture_of(row: Measurement) -> str:
    """``transformer`` if the row's model computes attention (an activation x activation product), else ``cnn``."""
    return "transformer" if any(kind_of(op) == "bmm" for op in trace(row).ops) else "cnn"


def family_architectures(rows: Iterable[Measurement]) -> dict[str, str]:
    """Family -> ``cnn`` or ``transformer``: a transformer family if any of its rows' models is one."""
    out: dict[str, str] = {}
    for row in rows:
        if out.get(row.family) != "transformer":
            out[row.family] = architecture_of(row)
    return dict(sorted(out.items()))
