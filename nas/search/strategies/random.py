"""Random search: each batch is ``population_size`` fresh points drawn by the space (uniform per decision).

The baseline every strategy must beat; the benchmark also runs it with ten times the budget.
"""

from __future__ import annotations

from nas.search.base import BaseStrategy
from nas.search.records import Proposal

__all__ = ["RandomStrategy"]


class RandomStrategy(BaseStrategy):
    """Valid points drawn by :meth:`nas.space.Space.sample_vectors`, never repeating an evaluated one
    (a repeat is redrawn a few times; in a space of 10^30 points it practically never happens).

    Example:
        >>> import nas
        >>> strategy = RandomStrategy(nas.space.load_space("convnext"), directions=["maximize", "minimize"])
        >>> len(strategy.ask(4))
        4
    """

    name = "random"
    warm_start = True

    def _next_batch(self, batch: int) -> list[Proposal]:
        if batch == 0:
            return self._proposals(self._first_batch(self.rng(batch)), batch)
        return self._proposals(self._fresh_samples(self.rng(batch), self.population_size), batch)
