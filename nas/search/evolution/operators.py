"""Variation operators of the evolutionary strategy: tiny ABCs taking an explicit rng.

The defaults delegate to the space's own vector operations, which keep every
child a valid, canonical point: :meth:`nas.space.Space.mutate_vectors` (one
move: ordered decisions step to a neighbour, categorical ones jump) and
:meth:`nas.space.Space.crossover_vectors` (uniform crossover with conditional
decisions inherited from the parent that has them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.space import Space

__all__ = ["Mutation", "Crossover", "SpaceMutation", "SpaceCrossover"]


class Mutation(ABC):
    """Changes points a little."""

    @abstractmethod
    def mutate(self, space: Space, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``n x num_slots`` valid children, one per row of ``vectors``; draws only from ``rng``."""


class Crossover(ABC):
    """Mixes two parents."""

    @abstractmethod
    def crossover(self, space: Space, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``n x num_slots`` valid children of the row pairs ``(first[i], second[i])``; draws only from ``rng``."""


class SpaceMutation(Mutation):
    """``moves`` successive moves of :meth:`Space.mutate_vectors` per child.

    Args:
        moves: number of single-decision moves (>= 1).
    """

    def __init__(self, *, moves: int = 1):
        if isinstance(moves, bool) or not isinstance(moves, int) or moves < 1:
            raise ConfigError(f"moves must be an int >= 1, got {moves!r}")
        self.moves = moves

    def mutate(self, space: Space, vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = vectors
        for _ in range(self.moves):
            out = space.mutate_vectors(out, rng)
        return out


class SpaceCrossover(Crossover):
    """:meth:`Space.crossover_vectors` (uniform, validity-preserving)."""

    def crossover(self, space: Space, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return space.crossover_vectors(first, second, rng)
