"""The point vector of a space and the numpy operations on batches of them.

A point is an ``int16`` vector with one slot per decision holding the option
index, -1 where the decision does not exist (its parent's option does not hold
it). :class:`Layout` knows, per slot, the number of options, whether they are
ordered, and under which options of which parent the decision exists; it
draws, repairs (makes canonical), checks, moves and crosses vectors and turns
them into predictor features. Validity (whether the Arch constructs) is not
its business: see :mod:`nas.space.validity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.errors import ConfigError
from nas.space.tree import VECTOR_DTYPE, Decision

__all__ = ["Layout"]


class Layout:
    """The vector layout of a space's decisions; every method works on ``n x num_slots`` batches.

    Args:
        decisions: the decisions in slot order (a parent before its children).
        name: the space's name, for error messages.
    """

    def __init__(self, decisions: Sequence[Decision], *, name: str):
        self.name = name
        self.decisions = tuple(decisions)
        count = len(decisions)
        self.num_slots = count
        self.card = np.array([len(d.options) for d in decisions], dtype=np.int64)
        self.ordered = np.array([d.ordered for d in decisions], dtype=bool)
        self.parent = np.array([d.parent for d in decisions], dtype=np.int64)
        self._card32 = self.card.astype(np.float32)
        # existence of each decision by its parent's option, flat: row ``slot``, column ``parent option + 1``
        width = int(self.card.max(initial=0)) + 1
        allowed = np.zeros((max(count, 1), width), dtype=bool)
        level = np.zeros(count, dtype=np.int64)
        for slot, decision in enumerate(decisions):
            if decision.parent >= 0:
                allowed[slot, np.array(decision.when, dtype=np.int64) + 1] = True
                level[slot] = level[decision.parent] + 1
        self._allowed = allowed.ravel()
        self._levels = []  # per depth: the slots, their parents' slots, and their rows in ``_allowed``
        for depth in range(1, int(level.max(initial=0)) + 1):
            slots = np.flatnonzero(level == depth)
            self._levels.append((slots, self.parent[slots], (slots * width + 1)[:, None]))
        columns = np.where(self.ordered, 1, self.card)
        self._feature_offset = np.concatenate([[0], np.cumsum(columns)])[:-1].astype(np.int64)
        self.num_features = int(columns.sum())

    # -- drawing and making canonical -------------------------------------------------------

    def random_values(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count x num_slots`` option indices drawn uniformly per slot (not canonical)."""
        # float32 draws: twice as fast; with at most 4096 options per decision the bias is below 2.5e-4
        return (rng.random((count, self.num_slots), dtype=np.float32) * self._card32).astype(VECTOR_DTYPE)

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count x num_slots`` canonical vectors, uniform per decision, constraints not checked."""
        fresh = self.random_values(rng, count)
        return self.repair(fresh, fresh)

    def repair(self, vectors: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Make ``vectors`` canonical in place: slots that do not exist get -1, new ones take ``fill``.

        ``fill`` may be ``vectors`` itself: the slots that exist keep their values.
        """
        if not self._levels:
            return vectors
        slots_first = vectors.T.copy()  # a level's slots are rows here: gathers of whole rows are fast
        fill_first = None if fill is vectors else fill.T.copy()
        for slots, parents, rows in self._levels:
            exists = self._allowed[slots_first[parents] + rows]
            current = slots_first[slots]  # each slot is set at its level only: still as given
            if fill_first is not None:
                current = np.where(current >= 0, current, fill_first[slots])
            slots_first[slots] = np.where(exists, current, -1)
        vectors[...] = slots_first.T
        return vectors

    def exists(self, vectors: np.ndarray) -> np.ndarray:
        """Which decisions exist in each vector (``n x num_slots`` bool)."""
        exists = np.ones(vectors.shape, dtype=bool)
        for slots, parents, rows in self._levels:
            exists[:, slots] = self._allowed[vectors[:, parents] + rows.T]
        return exists

    def check(self, vectors: Any) -> np.ndarray:
        """``vectors`` as an ``n x num_slots`` int16 array of canonical points, or a ConfigError naming the slot."""
        array = np.asarray(vectors)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.num_slots:
            raise ConfigError(f"a point of space {self.name!r} is a vector of {self.num_slots} slots, "
                              f"got shape {np.shape(vectors)}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"a point vector holds integers, got dtype {array.dtype}")
        bad = (array < -1) | (array >= self.card[None, :])
        if bad.any():
            row, slot = np.argwhere(bad)[0]
            raise ConfigError(f"option index {array[row, slot]} out of range [-1, {self.card[slot]})",
                              path=self.decisions[slot].path)
        array = array.astype(VECTOR_DTYPE, copy=False)
        exists = self.exists(array)
        wrong = exists != (array >= 0)
        if wrong.any():
            row, slot = np.argwhere(wrong)[0]
            state = "exists here but is unset (-1)" if exists[row, slot] else "does not exist here but is set"
            raise ConfigError(f"this decision {state}", path=self.decisions[slot].path)
        return array

    # -- moves ---------------------------------------------------------------------------------

    def movable(self, vectors: np.ndarray) -> np.ndarray:
        """Decisions a mutation may change: those that exist and have another option."""
        return (vectors >= 0) & (self.card[None, :] > 1)  # type: ignore[no-any-return]

    def move(self, vectors: np.ndarray, movable: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One move per row on a random movable decision: ordered ones step +-1, categorical ones jump."""
        rows = np.arange(len(vectors))
        pick = (rng.random(len(rows)) * movable.sum(axis=1)).astype(np.int64)  # the pick-th movable slot
        slots = np.argmax(movable.cumsum(axis=1, dtype=np.int16) > pick[:, None], axis=1)
        current = vectors[rows, slots].astype(np.int64)
        card = self.card[slots]
        step = np.where(rng.random(len(rows)) < 0.5, -1, 1)
        stepped = current + step
        stepped = np.where((stepped < 0) | (stepped >= card), current - step, stepped)
        jumped = (current + 1 + (rng.random(len(rows)) * (card - 1)).astype(np.int64)) % card
        moved = vectors.copy()
        moved[rows, slots] = np.where(self.ordered[slots], stepped, jumped)
        return self.repair(moved, self.random_values(rng, len(rows)))

    def cross(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover: each decision from either parent; one that only the other parent has comes from it."""
        take = rng.random(first.shape) < 0.5
        child, other = np.where(take, first, second), np.where(take, second, first)
        fill = np.where(other >= 0, other, self.random_values(rng, len(first)))
        return self.repair(child, fill)

    def neighbours(self, base: np.ndarray) -> np.ndarray:
        """Every canonical vector one move from ``base``; decisions that come into existence take option 0."""
        moves: list[tuple[int, int]] = []
        for slot in np.flatnonzero((base >= 0) & (self.card > 1)).tolist():
            current, card = int(base[slot]), int(self.card[slot])
            targets = [current - 1, current + 1] if self.ordered[slot] else range(card)
            moves.extend((slot, target) for target in targets if 0 <= target < card and target != current)
        if not moves:
            return np.zeros((0, self.num_slots), dtype=VECTOR_DTYPE)
        out = np.repeat(base[None, :], len(moves), axis=0)
        slots, targets = np.array(moves).T
        out[np.arange(len(moves)), slots] = targets
        return self.repair(out, np.zeros_like(out))

    # -- features ------------------------------------------------------------------------------

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """``n x num_features`` float32: one-hot columns per categorical decision, ``index / (options - 1)``
        for an ordered one; zeros where a decision does not exist."""
        array = np.asarray(vectors)
        array = array[None, :] if array.ndim == 1 else array
        out = np.zeros((len(array), self.num_features), dtype=np.float32)
        ordered = np.flatnonzero(self.ordered)
        scale = np.maximum(self.card[ordered] - 1, 1)
        out[:, self._feature_offset[ordered]] = np.maximum(array[:, ordered], 0) / scale
        categorical = np.flatnonzero(~self.ordered)
        values = array[:, categorical]
        rows, columns = np.nonzero(values >= 0)
        out[rows, self._feature_offset[categorical[columns]] + values[rows, columns]] = 1.0
        return out
