"""NSGA-II on the space's point vectors.

Deb, Pratap, Agarwal, Meyarivan, "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE Trans. Evol. Comput. 6(2), 2002: fast non-dominated
sorting, crowding distance, binary tournament on (rank, crowding), elitist
(mu + lambda) survival, and constraint domination for constrained problems.

Generation 0 is ``population_size`` random valid points, after any warm-start
points (:meth:`~nas.search.base.BaseStrategy.start_with`). Each later
generation: the survivors of (population + every record told since the last
survival) are chosen by rank then crowding (``nas.search.pareto``); parents are
picked by binary tournaments; a pair is crossed with ``crossover_prob`` and each
child mutated with ``mutation_prob`` by the space's own operators, which keep
it valid; a child equal to an evaluated or sibling point is mutated again (a
few times, then replaced by a random point), so no evaluation is spent twice.
With a ``screen`` (the default), ``screen.factor`` times as many children are
bred and the screen keeps the ``population_size`` that a model of every point
evaluated so far predicts to rank best (:mod:`nas.search.evolution.screen`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nas.errors import ConfigError
from nas.search.base import BaseStrategy
from nas.search.evolution.operators import Crossover, Mutation, SpaceCrossover, SpaceMutation
from nas.search.evolution.screen import RidgeScreen
from nas.search.pareto import rank_and_crowding
from nas.search.records import Proposal, Record, loss_matrix, violation_vector

if TYPE_CHECKING:
    from nas.space import Space

__all__ = ["NSGA2Strategy"]

_DEDUPE_ROUNDS = 8
DEFAULT_SCREEN = RidgeScreen()  # holds only its settings, so one instance serves every strategy


class NSGA2Strategy(BaseStrategy):
    """NSGA-II with the space's mutation and crossover (see the module docstring).

    Args:
        space, directions, seed, population_size, worker, constrained: see :class:`BaseStrategy`.
        crossover_prob: probability that a child comes from crossing its two tournament winners.
        mutation_prob: probability that a child is mutated (a child identical to a known point always is).
        mutation: the mutation operator (default: one move of ``Space.mutate_vectors``).
        crossover: the crossover operator (default: ``Space.crossover_vectors``).
        screen: pre-selection of the bred children (default: :class:`RidgeScreen`); ``None`` evaluates every
            child bred, as plain NSGA-II does.

    Design note: the inner loop is vectorised per generation (tournaments, crossover and mutation
    act on ``population_size x num_slots`` arrays); ``bench/search.py`` reports its throughput.

    Example:
        >>> import nas
        >>> space = nas.space.load_space("convnext")
        >>> strategy = NSGA2Strategy(space, directions=["maximize", "minimize"], population_size=8, seed=1)
        >>> [proposal.generation for proposal in strategy.ask(8)] == [0] * 8
        True
    """

    name = "evolution"
    generational = True
    warm_start = True

    def __init__(self, space: Space, *, directions: Sequence[str], seed: int = 0, population_size: int = 32,
                 worker: int = 0, constrained: bool = False, crossover_prob: float = 0.9, mutation_prob: float = 1.0,
                 mutation: Mutation | None = None, crossover: Crossover | None = None,
                 screen: RidgeScreen | None = DEFAULT_SCREEN):
        super().__init__(space, directions=directions, seed=seed, population_size=population_size, worker=worker,
                         constrained=constrained)
        for name, value in (("crossover_prob", crossover_prob), ("mutation_prob", mutation_prob)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
        self.crossover_prob = float(crossover_prob)
        self.mutation_prob = float(mutation_prob)
        self.mutation = mutation or SpaceMutation()
        self.crossover = crossover or SpaceCrossover()
        self.screen = screen
        self.population: list[Record] = []
        self.ranks = np.zeros(0, dtype=np.int64)
        self.crowding = np.zeros(0)
        self._pool: list[Record] = []
        self._told: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (features, losses, constraints) per tell

    def _observe(self, records: list[Record]) -> None:
        self._pool.extend(records)
        if self.screen is not None and records:
            vectors = np.stack([np.asarray(record.vector, dtype=np.int16) for record in records])
            constraints = np.array([record.violations for record in records], dtype=np.float64)
            self._told.append((self.space.features(vectors), loss_matrix(records, self.signs),
                               constraints.reshape(len(records), -1)))

    def _survive(self) -> None:
        """Population <- the best ``population_size`` distinct points of population + pool (rank, crowding)."""
        candidates: list[Record] = []
        known: set[bytes] = set()
        for record in [*self.population, *self._pool]:
            raw = np.asarray(record.vector, dtype=np.int16).tobytes()
            if raw not in known:
                known.add(raw)
                candidates.append(record)
        self._pool = []
        if not candidates:
            self.population, self.ranks, self.crowding = [], np.zeros(0, dtype=np.int64), np.zeros(0)
            return
        ranks, crowding = rank_and_crowding(loss_matrix(candidates, self.signs), violation_vector(candidates))
        order = np.lexsort((np.arange(len(candidates)), -crowding, ranks))[: self.population_size]
        self.population = [candidates[index] for index in order]
        self.ranks, self.crowding = ranks[order], crowding[order]

    def _tournament(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` winners of binary tournaments on (rank, crowding); a full tie is decided by a coin."""
        size = len(self.population)
        pairs = rng.integers(0, size, size=(count, 2))
        coin = rng.random(count) < 0.5
        a, b = pairs[:, 0], pairs[:, 1]
        a_better = (self.ranks[a] < self.ranks[b]) | ((self.ranks[a] == self.ranks[b]) &
                                                      (self.crowding[a] > self.crowding[b]))
        b_better = (self.ranks[b] < self.ranks[a]) | ((self.ranks[a] == self.ranks[b]) &
                                                      (self.crowding[b] > self.crowding[a]))
        return np.where(a_better | (~b_better & coin), a, b)

    def _next_batch(self, batch: int) -> list[Proposal]:
        rng = self.rng(batch)
        if batch > 0:
            self._survive()
        if batch == 0:
            return self._proposals(self._first_batch(rng), batch)
        if not self.population:
            return self._proposals(self._fresh_samples(rng, self.population_size), batch)
        count = self.population_size * (self.screen.factor if self.screen is not None else 1)
        vectors = np.stack([np.asarray(record.vector, dtype=np.int16) for record in self.population])
        winners = self._tournament(rng, 2 * count)
        first, second = winners[:count], winners[count:]
        children = vectors[first].copy()
        crossed = rng.random(count) < self.crossover_prob
        if crossed.any():
            children[crossed] = self.crossover.crossover(self.space, vectors[first[crossed]],
                                                         vectors[second[crossed]], rng)
        mutate = rng.random(count) < self.mutation_prob
        if mutate.any():
            children[mutate] = self.mutation.mutate(self.space, children[mutate], rng)
        for _ in range(_DEDUPE_ROUNDS):
            repeat = np.flatnonzero(~self._unseen(children))
            if not len(repeat):
                break
            children[repeat] = self.mutation.mutate(self.space, children[repeat], rng)
        repeat = np.flatnonzero(~self._unseen(children))
        if len(repeat):
            children[repeat] = self._fresh_samples(rng, len(repeat))
        keep = self._screened(children)
        ids = [record.arch_id for record in self.population]
        parents = [(ids[first[i]], ids[second[i]]) if crossed[i] else (ids[first[i]],) for i in keep]
        return self._proposals(children[keep], batch, parents)

    def _screened(self, children: np.ndarray) -> np.ndarray:
        """Indices of the ``population_size`` bred children to evaluate (all of them without a screen)."""
        if self.screen is None:
            return np.arange(len(children))
        features, losses, constraints = (np.concatenate(column) for column in zip(*self._told, strict=True))
        return self.screen.choose(features, losses, constraints, loss_matrix(self.population, self.signs),
                                  violation_vector(self.population), self.space.features(children),
                                  self.population_size)
