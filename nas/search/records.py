"""The values that pass between a strategy, the search loop and a run's storage.

A :class:`Proposal` is what a strategy asks to have evaluated; a :class:`Record`
is one evaluated candidate as the history keeps it (an Optuna trial in a run
directory, see :mod:`nas.runs`). Both are frozen: strategies keep references to
them, so nobody may change them afterwards.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import optuna

__all__ = ["Admission", "Proposal", "Record", "loss_matrix", "point_key", "violation_vector"]


def point_key(vector: np.ndarray) -> str:
    """The canonical key of a point: equal (canonical) vectors get equal keys, whichever worker, batch or strategy
    proposed them, so parallel workers can tell that they hold the same point."""
    return hashlib.blake2b(np.asarray(vector, dtype=np.int16).tobytes(), digest_size=8).hexdigest()


@dataclass(frozen=True, eq=False)
class Proposal:
    """A point a strategy wants evaluated.

    Attributes:
        key: unique per run: ``"<worker>:<batch>:<index>"``; the record of its evaluation carries it, which is how
            a strategy rebuilt from storage matches records to what it asked (see ``BaseStrategy``). The point
            itself has the canonical key :attr:`point`.
        vector: the canonical, valid point (``num_slots`` int16) of the strategy's space.
        generation: the strategy's generation (batch) number.
        parents: Arch ids of the parents (empty for random points).
        worker: index of the worker (process) that asked.
        trial: the RUNNING Optuna trial holding this proposal, for strategies that live in the study (``optuna-*``);
            ``None`` for the others, whose records are written whole when the evaluation is done.
    """

    key: str
    vector: np.ndarray
    generation: int = 0
    parents: tuple[str, ...] = ()
    worker: int = 0
    trial: optuna.trial.Trial | None = field(default=None, repr=False)

    @property
    def point(self) -> str:
        """The canonical key of the proposed point (:func:`point_key`)."""
        return point_key(self.vector)


class Admission(NamedTuple):
    """What a history store lets a worker evaluate of a batch (see ``HistoryStore.admit``).

    Attributes:
        admitted: the proposals to evaluate, in order.
        duplicates: proposals whose point another candidate of the study already holds (another worker's, on a
            shared storage): never evaluated twice; the strategy withdraws them and hears the other's record.
    """

    admitted: list[Proposal]
    duplicates: list[Proposal]


@dataclass(frozen=True, eq=False)
class Record:
    """One evaluated candidate, in the order the history holds them.

    Attributes:
        number: the Optuna trial number (the position in an in-memory history).
        key: the :attr:`Proposal.key` it answers.
        worker: index of the worker that evaluated it.
        vector: its point vector (``num_slots`` int16).
        arch_id: :attr:`nas.Arch.id` of the decoded point.
        generation: as proposed.
        parents: Arch ids of the parents.
        values: objective values, one per objective, in the objectives' own units and directions.
        violations: one per constraint, ``value - limit`` (<= 0 is feasible).
        metrics: every measured quantity by column name (``latency_ms``, ``params_m``, ...).
        arch_json: the Arch as compact JSON, if kept.
    """

    number: int
    key: str
    worker: int
    vector: np.ndarray
    arch_id: str
    generation: int
    parents: tuple[str, ...]
    values: tuple[float, ...]
    violations: tuple[float, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    arch_json: str | None = field(default=None, repr=False)

    @property
    def feasible(self) -> bool:
        """Whether every constraint holds (``violation <= 0``)."""
        return all(value <= 0.0 for value in self.violations)

    @property
    def scored(self) -> bool:
        """Whether every objective was measured: a source that could not score the candidate gives ``-inf``."""
        return bool(np.isfinite(self.values).all())

    def to_attrs(self) -> dict[str, Any]:
        """The trial ``user_attrs`` that store this record (plain JSON data)."""
        return {
            "key": self.key,
            "worker": self.worker,
            "vector": [int(value) for value in self.vector],
            "arch_id": self.arch_id,
            "generation": self.generation,
            "parents": list(self.parents),
            "metrics": {name: float(value) for name, value in self.metrics.items()},
            "violations": [float(value) for value in self.violations],
            "arch": self.arch_json,
        }


def loss_matrix(records: list[Record] | tuple[Record, ...], signs: np.ndarray) -> np.ndarray:
    """``n x num_objectives`` values turned into losses (all minimised): ``values * signs``.

    ``signs`` holds +1 for a minimised objective and -1 for a maximised one. NaN values become +inf.
    """
    if not records:
        return np.zeros((0, len(signs)))
    values = np.array([record.values for record in records], dtype=np.float64) * signs[None, :]
    return np.where(np.isnan(values), math.inf, values)


def violation_vector(records: list[Record] | tuple[Record, ...]) -> np.ndarray:
    """Per record, the total constraint violation ``sum(max(0, v))`` (0 for a feasible one), or ``+inf`` for one
    with an objective not measured (a source that could not score it gives ``-inf`` or NaN).

    Selection then ranks an unscored candidate after every scored one: as a loss of ``+inf`` alone it would stay
    on the front whenever its other objectives were the best, and crowding would favour it as the front's end.
    """
    if not records:
        return np.zeros(0)
    return np.array([sum(max(0.0, value) for value in record.violations) if record.scored else math.inf
                     for record in records], dtype=np.float64)
