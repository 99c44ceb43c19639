"""Evolutionary search: NSGA-II (:class:`NSGA2Strategy`), its variation operators and its pre-selection screen."""

from __future__ import annotations

from nas.search.evolution.nsga2 import NSGA2Strategy
from nas.search.evolution.operators import Crossover, Mutation, SpaceCrossover, SpaceMutation
from nas.search.evolution.screen import RidgeModel, RidgeScreen, fit_ridge

__all__ = ["NSGA2Strategy", "Mutation", "Crossover", "SpaceMutation", "SpaceCrossover", "RidgeModel", "RidgeScreen",
           "fit_ridge"]
