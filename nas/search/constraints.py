"""Constraints: bounds on one measured metric (``--max-latency 2ms``, ``--max-params 10M``, ``--max-macs 1G``).

A :class:`Constraint`'s *violation* is ``value - limit`` (<= 0 is feasible). :func:`parse_constraint` reads
the command-line form; :func:`check_feasible` fails a search early when no probed point of the space meets
its constraints, and :func:`check_size_limits` a space when no probed point is within the size limits
(:mod:`nas.limits`).

Example:
    >>> parse_constraint("max_latency", "500us").limit
    0.5
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import ConfigError, NasError
from nas.registry import Registry

if TYPE_CHECKING:
    from nas.search.scorer import Scorer

__all__ = [
    "CONSTRAINTS",
    "Constraint",
    "InfeasibleError",
    "check_feasible",
    "check_size_limits",
    "parse_constraint",
    "parse_quantity",
    "probe_points",
]

_TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class _ConstraintKind:
    name: str
    objective: str
    column: str
    unit: str
    parse: str  # "time" (to ms) or "count" (to the column's scale)
    scale: float  # count units per column unit (1e6 for params_m, 1e9 for gmacs)
    example: str


CONSTRAINTS: Registry[_ConstraintKind] = Registry("constraint")
for _kind in (_ConstraintKind("max_latency", "latency", "latency_ms", "ms", "time", 1.0, "2ms, 500us, 0.01s"),
              _ConstraintKind("max_params", "params", "params_m", "M", "count", 1e6, "10M, 500k, 2500000"),
              _ConstraintKind("max_macs", "macs", "gmacs", "G", "count", 1e9, "1G, 300M")):
    CONSTRAINTS.register(_kind.name)(_kind)


@dataclass(frozen=True)
class Constraint:
    """A bound ``metric <= limit`` on one metric column.

    Attributes:
        name: ``max_latency``, ``max_params`` or ``max_macs``.
        objective: the objective kind that measures it.
        column: the metric column (``latency_ms``, ``params_m``, ``gmacs``).
        limit: in the column's unit.
        text: as written (``2ms``).
    """

    name: str
    objective: str
    column: str
    limit: float
    text: str

    @property
    def option(self) -> str:
        """The command-line option (``--max-latency``)."""
        return "--" + self.name.replace("_", "-")


def parse_quantity(text: str, kind: str, *, option: str = "") -> float:
    """A positive number with a unit: ``kind='time'`` gives ms (``2ms``, ``500us``, ``0.01s``; bare = ms),
    ``kind='count'`` gives the plain count (``10M``, ``1.5G``, ``500k``; an optional ``MACs``/``params`` suffix).

    Raises:
        ConfigError: unreadable, not positive, or an unknown unit (the message shows valid examples).
    """
    raw = str(text).strip()
    cleaned = raw.replace(" ", "")
    if kind == "time":
        match = re.fullmatch(_NUMBER + r"(us|µs|ms|s)?", cleaned, flags=re.IGNORECASE)
        scale = _TIME_UNITS[(match.group(2) or "ms").lower()] if match else 0.0
        example = "2ms, 500us, 0.01s"
    else:
        match = re.fullmatch(_NUMBER + r"([kKmMgGtT]?)(?:macs|params|flops)?", cleaned, flags=re.IGNORECASE)
        if match and cleaned.lower().endswith("flops"):
            match = None
        scale = _COUNT_UNITS[match.group(2).lower()] if match else 0.0
        example = "10M, 1.5G, 500k"
    where = f"{option}: " if option else ""
    if match is None:
        raise ConfigError(f"{where}cannot read {raw!r}; write a positive number with a unit, e.g. {example}")
    value = float(match.group(1)) * scale
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}must be > 0, got {raw!r}")
    return value


def parse_constraint(name: str, text: str) -> Constraint:
    """A :class:`Constraint` from an option name and its value (``parse_constraint("max_latency", "2ms")``).

    Raises:
        UnknownKindError: unknown constraint name.
        ConfigError: a value that cannot be read.
    """
    kind = CONSTRAINTS.get(name)
    option = "--" + name.replace("_", "-")
    value = parse_quantity(text, kind.parse, option=option)
    return Constraint(name, kind.objective, kind.column, value / kind.scale, str(text).strip())


class InfeasibleError(NasError):
    """No sampled point of the space meets the constraints."""


def probe_points(space: Any, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` valid points for probing constraints: half drawn at random, half "small" (every ordered
    decision at its first option, i.e. the narrowest, shallowest, lowest-resolution choice the file lists
    first, where that point is valid)."""
    vectors = space.sample_vectors(rng, count)
    ordered = np.array([decision.ordered for decision in space.decisions], dtype=bool)
    small = vectors[: count // 2].copy()
    small = space.canonical_vectors(np.where(ordered & (small >= 0), 0, small))
    keep = np.array([space.is_valid(vector) for vector in small], dtype=bool)
    vectors[: count // 2][keep] = small[keep]
    return vectors


def check_feasible(space: Any, scorer: Scorer, *, target: str, samples: int = 64, seed: int = 0) -> None:
    """Fail early when no point of a bounded probe meets the constraints (see :func:`probe_points`).

    Raises:
        InfeasibleError: e.g. ``no point of metaformer meets --max-latency 0.01ms on iphone12 (the best of
            64 probed points: 0.92 ms)``.
    """
    if not scorer.constraints:
        return
    vectors = probe_points(space, np.random.default_rng(np.random.SeedSequence([seed, 0xFEA5])), samples)
    scores = scorer.evaluate([space.decode(vector) for vector in vectors])
    if scores.feasible.any():
        return
    options = " and ".join(f"{c.option} {c.text}" for c in scorer.constraints)
    where = f" on {target}" if any(c.objective == "latency" for c in scorer.constraints) else ""
    worst = int(np.argmin(np.clip(scores.violations, 0, None).sum(axis=1)))
    closest = ", ".join(f"{scores.metrics[c.column][worst]:.4g} {_UNITS[c.column]}" for c in scorer.constraints)
    raise InfeasibleError(f"no point of {space.name} meets {options}{where} (the closest of {len(vectors)} probed "
                          f"points: {closest})")


def check_size_limits(space: Any, *, samples: int = 4) -> None:
    """Refuse a space that holds no point within ``NAS_MAX_PARAMS`` and ``NAS_MAX_MACS``, before a search or a
    sample of it starts.

    Pricing is on ``meta`` (:func:`nas.cost.check_limits`), the probe's small points first (see
    :func:`probe_points`), and stops at the first point within the limits: a space of ordinary points costs one
    pricing. A bound computed from the tree would need each kind's cost as a formula, which the cost model
    exists to avoid; and a space whose smallest points are all too large has no point a search could use.

    Raises:
        ConfigError: naming the space file and the limit every probed point exceeds.
    """
    from nas.cost import check_limits

    vectors = probe_points(space, np.random.default_rng(0), samples)
    problems: list[ConfigError] = []
    for vector in vectors:
        try:
            check_limits(space.decode(vector))
        except ConfigError as exc:
            problems.append(exc)
            continue
        return
    raise ConfigError(f"{problems[0].message} at all {len(vectors)} probed points (the first-listed widths and "
                      "depths among them): the space has no point within the size limits", path=problems[0].path,
                      source=space.source)


_UNITS = {"latency_ms": "ms", "params_m": "M params", "gmacs": "GMACs"}
