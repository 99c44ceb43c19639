"""The strategy base class and its ask/tell life cycle.

Life cycle (:func:`nas.search.optimize` drives it; ``bench/search.py`` does the same in memory):

1. **Construction**, keyword-only and validated first. The strategy owns its
   randomness: every batch it draws comes from ``self.rng(batch)``, a numpy
   Generator seeded from ``(seed, worker, batch)`` through ``SeedSequence``.
   Nothing else is random, so a strategy rebuilt later draws the same numbers.
2. :meth:`bind` once, with the run's Optuna study. Only strategies that live in
   the study (``uses_study = True``, the ``optuna-*`` ones) use it.
3. **Replay** (resume, and any worker joining a shared study): the stored records
   are walked in trial order; before a record of this worker that is not
   outstanding, :meth:`ask` is called with ``count=1`` until it hands out exactly that
   proposal key (anything else means the history was written by other code or
   another seed: an error); then every record, of any worker, goes to :meth:`tell`.
   The state after replay is the state the original process had.
4. **Loop**: :meth:`pending` first (proposals handed out but never told, which
   replay can leave), then ``ask(count)`` -> proposals; the loop evaluates them as
   one batch, stores them in order, then :meth:`tell` with the records.
5. :meth:`close` once at the end (a no-op unless the strategy holds a thread or an engine).

:meth:`ask` never blocks. It hands out proposals from a queue and refills the
queue with one batch (a generation) only when the queue is empty, and, for
generational strategies, only once every handed-out proposal was told; until
then it returns ``[]``. :meth:`tell` takes records of any worker: records of
proposals this strategy did not make join its population or model as
observations, which is how parallel workers share what they learn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from nas.errors import ConfigError, NasError
from nas.search.records import Proposal, Record

if TYPE_CHECKING:
    import optuna

    from nas.space import Space

__all__ = ["BaseStrategy", "check_int"]


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ConfigError naming the argument, the rule and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class BaseStrategy(ABC):
    """A search strategy over one space's point vectors (see the module docstring for the life cycle).

    Args:
        space: the space searched.
        directions: ``maximize`` / ``minimize`` per objective, in the order of :attr:`Record.values`.
        seed: root of every random draw.
        population_size: the batch (generation) size.
        worker: this process's worker index (0 unless several processes share a study).
        constrained: whether the run has constraints (its records carry violations); every strategy is told, and
            those that must act on it read :attr:`constrained` (Optuna's ``constraints_func``, NNI's reward).

    Subclasses implement :meth:`_next_batch` (and, if they keep a model, :meth:`_observe`).
    """

    name: ClassVar[str] = ""
    uses_study: ClassVar[bool] = False
    generational: ClassVar[bool] = False
    warm_start: ClassVar[bool] = False

    def __init__(self, space: Space, *, directions: Sequence[str], seed: int = 0, population_size: int = 32,
                 worker: int = 0, constrained: bool = False):
        self.seed = check_int("seed", seed, minimum=0)
        self.population_size = check_int("population_size", population_size, minimum=2)
        self.worker = check_int("worker", worker, minimum=0)
        self.constrained = bool(constrained)
        directions = list(directions)
        if not directions or any(d not in ("maximize", "minimize") for d in directions):
            raise ConfigError(f"directions must be a non-empty list of 'maximize'/'minimize', got {directions!r}")
        self.space = space
        self.directions = directions
        self.signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        self.batches = 0
        self._queue: OrderedDict[str, Proposal] = OrderedDict()
        self._outstanding: OrderedDict[str, Proposal] = OrderedDict()
        self._seen: set[bytes] = set()
        self._initial = np.zeros((0, space.num_slots), dtype=np.int16)

    def start_with(self, vectors: np.ndarray) -> None:
        """Points that open the first batch (a warm start, e.g. the zoo's models of the space); call before the
        first :meth:`ask`. Invalid or repeated points are dropped; at most ``population_size`` are used.

        Raises:
            NasError: the strategy cannot start from given points (``warm_start`` is False).
        """
        if not self.warm_start:
            raise NasError(f"strategy {self.name!r} does not take a warm start")
        array = np.asarray(vectors, dtype=np.int16).reshape(-1, self.space.num_slots)
        keep = [vector for vector in array if self.space.is_valid(vector)]
        unique = {vector.tobytes(): vector for vector in keep}
        self._initial = np.array(list(unique.values()), dtype=np.int16).reshape(-1, self.space.num_slots)

    def rng(self, *stream: int) -> np.random.Generator:
        """The Generator of one stream (a batch number, ...), seeded from ``(seed, worker, *stream)``."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.worker, *stream]))

    def bind(self, study: optuna.Study) -> None:  # noqa: B027  (optional hook)
        """Called once before anything else with the run's study; the default ignores it."""

    # -- the life cycle ---------------------------------------------------------------------------

    def ask(self, count: int) -> list[Proposal]:
        """Hand out up to ``count`` proposals to evaluate (``[]`` when the strategy must hear back first)."""
        count = check_int("count", count, minimum=1)
        if not self._queue and not (self.generational and self._outstanding):
            for proposal in self._next_batch(self.batches):
                self._queue[proposal.key] = proposal
            self.batches += 1
        handed: list[Proposal] = []
        while self._queue and len(handed) < count:
            key, proposal = self._queue.popitem(last=False)
            self._outstanding[key] = proposal
            handed.append(proposal)
        return handed

    def tell(self, records: Sequence[Record]) -> None:
        """Evaluated candidates, in storage order; proposals of this strategy are settled, the rest observed."""
        for record in records:
            if record.worker == self.worker:
                self._outstanding.pop(record.key, None)
            self._seen.add(np.asarray(record.vector, dtype=np.int16).tobytes())
        self._observe(list(records))

    def pending(self) -> list[Proposal]:
        """Proposals handed out and not told yet, in order (after a replay: what the stopped process had)."""
        return list(self._outstanding.values())

    def withdraw(self, proposals: Sequence[Proposal]) -> None:
        """Settle proposals that will not be evaluated by this worker (another worker holds their points, see
        :mod:`nas.runs.workers`); their points stay seen, and the other worker's records are told as any are."""
        for proposal in proposals:
            self._outstanding.pop(proposal.key, None)

    def is_outstanding(self, key: str) -> bool:
        return key in self._outstanding

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release what the strategy holds (threads, engines); :func:`nas.search.optimize` calls it at the end."""

    # -- for subclasses ------------------------------------------------------------------------------

    @abstractmethod
    def _next_batch(self, batch: int) -> list[Proposal]:
        """The proposals of batch number ``batch`` (called when the queue is empty), drawn from ``self.rng(batch)``."""

    def _observe(self, records: list[Record]) -> None:  # noqa: B027  (optional hook)
        """Learn from evaluated records (any worker's); the default keeps nothing."""

    def _proposals(self, vectors: np.ndarray, batch: int, parents: Sequence[tuple[str, ...]] | None = None
                   ) -> list[Proposal]:
        """Wrap a batch's vectors as proposals keyed ``<worker>:<batch>:<index>`` and mark them seen."""
        out = []
        for index, vector in enumerate(vectors):
            self._seen.add(vector.tobytes())
            out.append(Proposal(key=f"{self.worker}:{batch}:{index}", vector=vector, generation=batch,
                                parents=parents[index] if parents is not None else (), worker=self.worker))
        return out

    def _unseen(self, vectors: np.ndarray) -> np.ndarray:
        """Mask of rows not evaluated or proposed before and not repeating an earlier row of ``vectors``."""
        keep = np.zeros(len(vectors), dtype=bool)
        batch: set[bytes] = set()
        for index, vector in enumerate(vectors):
            raw = vector.tobytes()
            keep[index] = raw not in self._seen and raw not in batch
            batch.add(raw)
        return keep

    def _first_batch(self, rng: np.random.Generator) -> np.ndarray:
        """The warm-start points (see :meth:`start_with`), then fresh random points up to ``population_size``."""
        initial = self._initial[: self.population_size]
        initial = initial[self._unseen(initial)]
        for vector in initial:
            self._seen.add(vector.tobytes())
        fresh = self._fresh_samples(rng, self.population_size - len(initial))
        return np.concatenate([initial, fresh]).astype(np.int16)

    def _fresh_samples(self, rng: np.random.Generator, count: int, *, rounds: int = 8) -> np.ndarray:
        """``count`` valid points not seen before (duplicates redrawn ``rounds`` times, then kept)."""
        vectors = self.space.sample_vectors(rng, count)
        for _ in range(rounds):
            repeat = np.flatnonzero(~self._unseen(vectors))
            if not len(repeat):
                break
            vectors[repeat] = self.space.sample_vectors(rng, len(repeat))
        return vectors
