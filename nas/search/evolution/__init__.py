"""Evolutionary search: NSGA-II (:class:`NSGA2Strategy`) and its variation operators."""

from __future__ import annotations

from nas.search.evolution.nsga2 import NSGA2Strategy
from nas.search.evolution.operators import Crossover, Mutation, SpaceCrossover, SpaceMutation

__all__ = ["NSGA2Strategy", "Mutation", "Crossover", "SpaceMutation", "SpaceCrossover"]
