"""Search: objectives and constraints, strategies behind one ask/tell base, Pareto fronts and hypervolume.

The pieces, each with its own module:

* :mod:`nas.search.objectives`: objective kinds (``accuracy``, ``latency``, ``params``, ``macs``);
* :mod:`nas.search.accuracy`: the accuracy sources (``supernet``, ``zero-cost``, ``short-train``, ``proxy``);
* :mod:`nas.search.constraints`: bounds on a metric (``--max-latency 2ms``) and the early feasibility probe;
* :mod:`nas.search.scorer`: the batch :class:`Scorer`, measuring every objective and constraint once per Arch;
* :mod:`nas.search.strategies`: :class:`BaseStrategy` (ask/tell life cycle) and the registry
  (``evolution``, ``random``, ``optuna-tpe``, ``optuna-nsga2``, ``optuna-gp``, ``nni-evolution``);
* :mod:`nas.search.evolution`: NSGA-II with the space's mutation and crossover, screening bred children by a
  ridge model of the points evaluated so far;
* :mod:`nas.search.pareto`: non-dominated sorting, crowding, hypervolume;
* :mod:`nas.search.loop`: :func:`optimize` over a history store (a run directory, :mod:`nas.runs`, or memory).

Example:
    >>> import nas
    >>> from nas.search import create_strategy, list_strategies
    >>> "evolution" in list_strategies()
    True
"""

from __future__ import annotations

from nas.search.accuracy import list_accuracy_sources
from nas.search.constraints import Constraint, parse_constraint, parse_quantity
from nas.search.evolution import Crossover, Mutation, NSGA2Strategy, SpaceCrossover, SpaceMutation
from nas.search.loop import HistoryStore, MemoryStore, ReplayError, evaluate, optimize, replay
from nas.search.objectives import Objective, list_objectives, make_objective
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
from nas.search.scorer import Scorer, Scores, make_scorer
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
