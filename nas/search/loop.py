"""The search loop: replay the stored history into a strategy, then ask, evaluate a batch, store, tell.

:func:`optimize` works on any :class:`HistoryStore`: a run directory
(:class:`nas.runs.Run`, an Optuna study on disk or in a database) or
:class:`MemoryStore` (benchmarks, tests). It stops when the store holds
``budget`` completed candidates, counting every worker that shares the store; a
shared store admits each batch within that budget first, so the workers together
never exceed it.

Example:
    >>> import nas
    >>> from nas.search import MemoryStore, create_strategy, make_scorer, optimize
    >>> space = nas.space.load_space("convnext")
    >>> scorer = make_scorer(target="iphone12", accuracy="proxy")  # doctest: +SKIP
    >>> strategy = create_strategy("evolution", space, directions=["maximize", "minimize"], population_size=8)
    >>> records = optimize(space, strategy, scorer, MemoryStore(), budget=16)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from nas.errors import NasError
from nas.search.base import BaseStrategy, check_int
from nas.search.records import Admission, Proposal, Record

if TYPE_CHECKING:
    import optuna

    from nas.search.scorer import Scorer
    from nas.space import Space

__all__ = ["HistoryStore", "MemoryStore", "ReplayError", "optimize", "replay", "evaluate"]

_MAX_WITHDRAWN_BATCHES = 8  # a worker whose proposals other workers hold this many batches in a row stops


class ReplayError(NasError):
    """The stored history does not match what the strategy proposes (other code, seed or settings)."""


class HistoryStore(Protocol):
    """Where a search keeps its records.

    ``refresh`` returns the records completed since its last call (by any worker), in order;
    ``admit`` returns the proposals this worker may evaluate before a study-wide ``budget`` is spent (a store
    other workers share reserves their places; the others return all of them);
    ``record`` stores one evaluated proposal and returns the record with its number;
    ``count`` is the number of completed records of every worker; ``records`` all of them (which
    also counts as read for ``refresh``); ``study`` is the Optuna
    study for strategies that live in one; ``shared`` tells whether other processes may write.
    """

    worker: int

    @property
    def shared(self) -> bool: ...

    def study(self) -> optuna.Study: ...

    def refresh(self) -> list[Record]: ...

    def count(self) -> int: ...

    def records(self) -> list[Record]: ...

    def admit(self, proposals: Sequence[Proposal], budget: int) -> Admission: ...

    def record(self, proposal: Proposal, record: Record) -> Record: ...


class MemoryStore:
    """A history in a list (one process, nothing on disk); its study is an in-memory Optuna study.

    Args:
        directions: the objectives' directions, for the study of ``optuna-*`` strategies.
    """

    worker = 0
    shared = False

    def __init__(self, directions: Sequence[str] = ("maximize", "minimize")):
        self.directions = list(directions)
        self._records: list[Record] = []
        self._study: optuna.Study | None = None
        self._read = 0

    def study(self) -> optuna.Study:
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self._study = optuna.create_study(directions=self.directions)  # type: ignore[arg-type]
        return self._study

    def refresh(self) -> list[Record]:
        new = self._records[self._read:]
        self._read = len(self._records)
        return new

    def count(self) -> int:
        return len(self._records)

    def records(self) -> list[Record]:
        self._read = len(self._records)
        return list(self._records)

    def admit(self, proposals: Sequence[Proposal], budget: int) -> Admission:
        return Admission(list(proposals), [])

    def record(self, proposal: Proposal, record: Record) -> Record:
        stored = Record(len(self._records), record.key, record.worker, record.vector, record.arch_id,
                        record.generation, record.parents, record.values, record.violations, record.metrics,
                        record.arch_json)
        if proposal.trial is not None:
            for name, value in stored.to_attrs().items():
                if name != "arch":
                    proposal.trial.set_user_attr(name, value)
            self.study().tell(proposal.trial, list(stored.values))
        self._records.append(stored)
        self._read = len(self._records)
        return stored


def replay(strategy: BaseStrategy, records: Sequence[Record], *, strict: bool = True) -> None:
    """Bring a fresh strategy to the state its records imply (see :class:`BaseStrategy`'s life cycle).

    Args:
        strict: require the strategy to re-propose this worker's records exactly, in order (a single
            worker's run); with ``False`` (a shared study, where other workers' records interleave
            differently) the records are only told, and new batches continue after the last one stored.

    Raises:
        ReplayError: strict, and a proposal differs from the stored record.
    """
    if strategy.uses_study or not strict:
        own = [record.generation for record in records if record.worker == strategy.worker]
        if not strategy.uses_study and own:
            strategy.batches = max(own) + 1
        strategy.tell(list(records))
        return
    for record in records:
        if record.worker == strategy.worker and not strategy.is_outstanding(record.key):
            handed = strategy.ask(1)
            if not handed or handed[0].key != record.key or not np.array_equal(handed[0].vector, record.vector):
                got = handed[0].key if handed else "nothing"
                raise ReplayError(f"the history does not match strategy {strategy.name!r}: trial {record.number} "
                                  f"is proposal {record.key}, the strategy now proposes {got} (was the run "
                                  f"written with other code or settings?)")
        strategy.tell([record])


def evaluate(space: Space, scorer: Scorer, proposals: Sequence[Proposal], *, keep_arch: bool = True) -> list[Record]:
    """Decode and score a batch of proposals (one scorer call); records are unnumbered (-1).

    A scorer with an ``evaluate_vectors(vectors) -> Scores`` method scores the point vectors directly and
    nothing is decoded (benchmarks with vector-level surrogate objectives); the record's ``arch_id`` is
    then the vector's hex bytes, and no Arch is kept.
    """
    vectors = np.stack([np.asarray(proposal.vector, dtype=np.int16) for proposal in proposals])
    by_vector = getattr(scorer, "evaluate_vectors", None)
    if by_vector is not None:
        scores = by_vector(vectors)
        ids = [vector.tobytes().hex() for vector in vectors]
        texts: list[str | None] = [None] * len(proposals)
    else:
        archs = [space.decode(vector) for vector in vectors]
        scores = scorer.evaluate(archs)
        ids = [arch.id for arch in archs]
        texts = [json.dumps(arch.to_dict(), separators=(",", ":")) if keep_arch else None for arch in archs]
    out = []
    for index, proposal in enumerate(proposals):
        out.append(Record(
            number=-1, key=proposal.key, worker=proposal.worker, vector=proposal.vector, arch_id=ids[index],
            generation=proposal.generation, parents=proposal.parents,
            values=tuple(float(value) for value in scores.values[index]),
            violations=tuple(float(value) for value in scores.violations[index]),
            metrics={column: float(values[index]) for column, values in scores.metrics.items()},
            arch_json=texts[index],
        ))
    return out


def optimize(space: Space, strategy: BaseStrategy, scorer: Scorer, store: HistoryStore, *, budget: int,
             batch: int | None = None, on_record: Callable[[Record], None] | None = None,
             keep_arch: bool = True) -> list[Record]:
    """Run (or resume) a search until ``store`` holds ``budget`` completed candidates.

    Args:
        space: the space of the strategy.
        strategy: a freshly created strategy (its state is rebuilt from ``store``).
        scorer: measures objectives and constraints.
        store: the history (a :class:`nas.runs.Run` or a :class:`MemoryStore`).
        budget: completed candidates to reach (all workers together).
        batch: proposals evaluated per scorer call (default: the strategy's population size).
        on_record: called with every record this process stores (progress bars).
        keep_arch: store each Arch's JSON in its record (runs: yes; benchmarks may skip it).

    Returns:
        Every record of the store, in order.
    """
    budget = check_int("budget", budget, minimum=1)
    batch = check_int("batch", batch or strategy.population_size, minimum=1)
    try:
        if strategy.uses_study:
            strategy.bind(store.study())
        replay(strategy, store.records(), strict=not store.shared)
        todo = strategy.pending()
        withdrawn_batches = 0  # batches in a row of which other workers held every point
        while True:
            done = store.count()
            if done >= budget:
                break
            if not todo:
                others = store.refresh()
                if others:
                    strategy.tell(others)
                todo = strategy.ask(min(batch, budget - done))
                if not todo:
                    raise NasError(f"strategy {strategy.name!r} proposed nothing (with {done} of {budget} evaluated)")
            admitted, duplicates = store.admit(todo, budget)
            strategy.withdraw(duplicates)  # another worker holds their points: its records will be told
            withdrawn_batches = withdrawn_batches + 1 if duplicates and not admitted else 0
            if withdrawn_batches >= _MAX_WITHDRAWN_BATCHES:  # the space has nothing new for this worker
                break
            if admitted:
                records = evaluate(space, scorer, admitted, keep_arch=keep_arch)
                stored = []
                for proposal, record in zip(admitted, records, strict=True):
                    stored.append(store.record(proposal, record))
                    if on_record is not None:
                        on_record(stored[-1])
                strategy.tell(stored)
            if len(admitted) + len(duplicates) < len(todo):  # other workers' candidates hold the rest of the budget
                break
            todo = []
    finally:
        strategy.close()
    return store.records()
