"""The scorer: every objective and every constrained metric of a batch of Archs, measured once per Arch id.

:class:`Scorer` is what the search loop calls; :func:`make_scorer` builds the scorer of a search from
objective kinds (:mod:`nas.search.objectives`) and constraints (:mod:`nas.search.constraints`).

Example:
    >>> from nas.search import make_scorer, parse_constraint
    >>> scorer = make_scorer(target="iphone12", accuracy="proxy",
    ...                      constraints=[parse_constraint("max_latency", "2ms")])  # doctest: +SKIP
    >>> scores = scorer.evaluate(archs)  # doctest: +SKIP
    >>> scores.values.shape == (len(archs), 2)  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nas.arch import Arch
from nas.errors import ConfigError
from nas.search.constraints import Constraint
from nas.search.objectives import Objective, make_objective

if TYPE_CHECKING:
    from nas.supernet.device import Placement

__all__ = ["Scores", "Scorer", "make_scorer"]


@dataclass(frozen=True)
class Scores:
    """A batch's measurements.

    Attributes:
        values: ``n x num_objectives`` objective values (their own directions).
        violations: ``n x num_constraints`` ``value - limit`` (<= 0 feasible).
        metrics: column -> ``n`` values, for every measured column.
    """

    values: np.ndarray
    violations: np.ndarray
    metrics: dict[str, np.ndarray]

    @property
    def feasible(self) -> np.ndarray:
        return np.asarray((self.violations <= 0).all(axis=1), dtype=bool)


class Scorer:
    """Evaluates objectives and constrained metrics for batches of Archs, once per Arch id.

    Args:
        objectives: what is optimised, in order.
        constraints: bounds; a constrained metric that is not an objective is measured by ``measures``.
        measures: extra objectives used only as measurements (by column).

    Not thread-safe (the cache is a plain dict).
    """

    def __init__(self, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
                 measures: Sequence[Objective] = ()):
        if not objectives:
            raise ConfigError("a search needs at least one objective")
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self._measures: dict[str, Objective] = {objective.column: objective for objective in objectives}
        for measure in measures:
            self._measures.setdefault(measure.column, measure)
        missing = [c.column for c in self.constraints if c.column not in self._measures]
        if missing:
            raise ConfigError(f"no measurement for constrained column(s) {', '.join(missing)}")
        self._cache: dict[str, dict[str, float]] = {}

    @property
    def columns(self) -> list[str]:
        return list(self._measures)

    @property
    def measures(self) -> tuple[Objective, ...]:
        """Every measured objective, one per column (the objectives first)."""
        return tuple(self._measures.values())

    def evaluate(self, archs: Sequence[Arch]) -> Scores:
        """Measure a batch; Archs seen before cost a lookup."""
        fresh: dict[str, Arch] = {}
        for arch in archs:
            if arch.id not in self._cache:
                fresh.setdefault(arch.id, arch)
        if fresh:
            batch = list(fresh.values())
            measured = {column: measure.evaluate(batch) for column, measure in self._measures.items()}
            for index, arch_id in enumerate(fresh):
                self._cache[arch_id] = {column: float(values[index]) for column, values in measured.items()}
        rows = [self._cache[arch.id] for arch in archs]
        metrics = {column: np.array([row[column] for row in rows], dtype=np.float64) for column in self._measures}
        values = np.stack([metrics[objective.column] for objective in self.objectives], axis=1) if rows else \
            np.zeros((0, len(self.objectives)))
        violations = np.stack([metrics[c.column] - c.limit for c in self.constraints], axis=1) if \
            (rows and self.constraints) else np.zeros((len(rows), len(self.constraints)))
        return Scores(values, violations, metrics)


def make_scorer(*, target: str, accuracy: str = "proxy", objectives: Sequence[str] = ("accuracy", "latency"),
                constraints: Sequence[Constraint] = (), space: str = "", seed: int = 0,
                latency_batch: int = 1, supernet: str | None = None, placement: Placement | None = None,
                latency_setting: str | None = None) -> Scorer:
    """The scorer of a search: the objectives by kind, plus whatever the constraints need measured.

    Raises:
        UnknownKindError: unknown objective kind, accuracy source or target.
        NasError: an accuracy source that is not available in this build.
    """
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"objectives must be distinct, got {list(objectives)}")

    def make(kind: str) -> Objective:
        return make_objective(kind, target=target, accuracy=accuracy, space=space, seed=seed,
                              latency_batch=latency_batch, supernet=supernet, placement=placement,
                              latency_setting=latency_setting)

    made = [make(kind) for kind in objectives]
    measures = [make(c.objective) for c in constraints if c.objective not in objectives]
    return Scorer(made, constraints, measures)
