"""Search: objectives and constraints, strategies behind one ask/tell base, Pareto fronts and hypervolume.

The pieces, each with its own module:

* :mod:`nas.search.objectives`: objective kinds (``accuracy`` from a source, ``latency``, ``params``,
  ``macs``), constraints (``--max-latency 2ms``) and the batch :class:`Scorer`;
* :mod:`nas.search.strategies`: :class:`BaseStrategy` (ask/tell life cycle) and the registry
  (``evolution``, ``random``, ``optuna-tpe``, ``optuna-nsga2``, ``optuna-gp``, ``nni-evolution``);
* :mod:`nas.search.evolution`: NSGA-II with the space's mutation and crossover;
* :mod:`nas.search.pareto`: non-dominated sorting, crowding, hypervolume;
* :mod:`nas.search.loop`: :func:`optimize` over a history store (a run directory, :mod:`nas.runs`, or memory).

Example:
    >>> import nas
    >>> from nas.search import create_strategy, list_strategies
    >>> "evolution" in list_strategies()
    True
"""

from __future__ import annotations

from nas.search.evolution import Crossover, Mutation, NSGA2Strategy, SpaceCrossover, SpaceMutation
from nas.search.loop import HistoryStore, MemoryStore, ReplayError, evaluate, optimize, replay
from nas.search.objectives import (
    Constraint,
    Objective,
    Scorer,
    Scores,
    list_accuracy_sources,
    list_objectives,
    make_objective,
    make_scorer,
    parse_constraint,
    parse_quantity,
)
from nas.search.pareto import (
    crowding_distance,
    hypervolume,
    hypervolume_curve,
    nondominated_mask,
    nondominated_ranks,
    rank_and_crowding,
    reference_point,
    select_survivors,
)
from nas.search.records import Proposal, Record
from nas.search.strategies import BaseStrategy, create_strategy, get_strategy, list_strategies

__all__ = [
    "BaseStrategy",
    "Constraint",
    "Crossover",
    "HistoryStore",
    "MemoryStore",
    "Mutation",
    "NSGA2Strategy",
    "Objective",
    "Proposal",
    "Record",
    "ReplayError",
    "Scorer",
    "Scores",
    "SpaceCrossover",
    "SpaceMutation",
    "create_strategy",
    "crowding_distance",
    "evaluate",
    "get_strategy",
    "hypervolume",
    "hypervolume_curve",
    "list_accuracy_sources",
    "list_objectives",
    "list_strategies",
    "make_objective",
    "make_scorer",
    "nondominated_mask",
    "nondominated_ranks",
    "optimize",
    "parse_constraint",
    "parse_quantity",
    "rank_and_crowding",
    "reference_point",
    "replay",
    "select_survivors",
]
