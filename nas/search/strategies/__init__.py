"""The strategy registry: one name per strategy, created through :func:`create_strategy`.

Registered explicitly here (no import side effects elsewhere): ``evolution``
(NSGA-II, :mod:`nas.search.evolution`), ``random``, ``optuna-tpe``,
``optuna-nsga2``, ``optuna-gp`` and ``nni-evolution`` (an optional extra:
``pip install nas[nni]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from nas.registry import Registry
from nas.search.base import BaseStrategy
from nas.search.evolution.nsga2 import NSGA2Strategy
from nas.search.strategies.nni_evolution import NNIEvolutionStrategy
from nas.search.strategies.optuna_samplers import GPStrategy, NSGA2SamplerStrategy, TPEStrategy
from nas.search.strategies.random import RandomStrategy

if TYPE_CHECKING:
    from nas.space import Space

__all__ = ["STRATEGIES", "BaseStrategy", "create_strategy", "list_strategies", "get_strategy"]

STRATEGIES: Registry[type[BaseStrategy]] = Registry("strategy")
for _cls in (NSGA2Strategy, RandomStrategy, TPEStrategy, NSGA2SamplerStrategy, GPStrategy, NNIEvolutionStrategy):
    STRATEGIES.register(_cls.name)(_cls)


def list_strategies() -> list[str]:
    """Names of every strategy, sorted."""
    return STRATEGIES.names()


def get_strategy(name: str) -> type[BaseStrategy]:
    """The strategy class of ``name``.

    Raises:
        UnknownKindError: unknown name (the known ones are listed, closest first).
    """
    return STRATEGIES.get(name)


def create_strategy(name: str, space: Space, *, directions: Sequence[str], seed: int = 0, population_size: int = 32,
                    worker: int = 0, constrained: bool = False) -> BaseStrategy:
    """The only way to make a strategy by name.

    Args:
        name: a registered name (``list_strategies()``).
        constrained: whether the search has constraints (Optuna samplers then get a ``constraints_func``).

    Raises:
        UnknownKindError: unknown name.
        ConfigError: a bad argument.
        NasError: an optional dependency is missing (``nni-evolution`` without nni).

    Example:
        >>> import nas
        >>> strategy = create_strategy("random", nas.space.load_space("convnext"), directions=["minimize"])
        >>> strategy.name
        'random'
    """
    return get_strategy(name)(space, directions=directions, seed=seed, population_size=population_size, worker=worker,
                              constrained=constrained)
