"""Surrogate-assisted pre-selection: breed more children than are evaluated, and evaluate those a model likes best.

Why: an evaluation is the expensive step of a search (60 training steps in the main job), while breeding a child
costs microseconds. So each generation :class:`~nas.search.evolution.nsga2.NSGA2Strategy` breeds ``factor``
times the children it will evaluate; :class:`RidgeScreen` predicts every objective (and constraint) of each from
the points evaluated so far and keeps the children that would rank best among the population: non-dominated rank
first, then crowding distance, so the kept children spread along the predicted front. This is pre-selection as
in surrogate-assisted evolutionary algorithms (Jin, "Surrogate-assisted evolutionary computation", Swarm Evol.
Comput. 1(2), 2011), and the predictor-guided proposals of BANANAS (White, Neiswanger, Savani, AAAI 2021).

The model is ridge regression on :meth:`nas.space.Space.features` (one-hot kinds, scaled ordered options), one
per column, its regularisation chosen per column by the exact leave-one-out error over a grid (one SVD of the
evaluated points per generation). It is deterministic: the same told records give the same choice, so a resumed
run proposes what the uninterrupted one did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nas.errors import ConfigError
from nas.search.pareto import rank_and_crowding

__all__ = ["RidgeModel", "RidgeScreen", "fit_ridge"]

ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class RidgeModel:
    """``features -> targets``: ``(features - feature_mean) @ weights + target_mean``."""

    feature_mean: np.ndarray
    target_mean: np.ndarray
    weights: np.ndarray  # num_features x num_targets

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.feature_mean) @ self.weights + self.target_mean


def fit_ridge(features: np.ndarray, targets: np.ndarray, alphas: tuple[float, ...] = ALPHAS) -> RidgeModel:
    """Ridge regression of each column of ``targets`` (``n x m``) on ``features`` (``n x f``), with an intercept;
    each column takes the ``alpha`` of ``alphas`` with the least leave-one-out squared error.

    Example:
        >>> x = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]
        >>> model = fit_ridge(x, (x @ np.array([1.0, 2.0, 3.0, 4.0]))[:, None])
        >>> np.round(model(np.eye(4)[[3]]), 1).tolist()
        [[4.0]]
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    feature_mean, target_mean = x.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(x - feature_mean, full_matrices=False)
    projected = u.T @ (y - target_mean)  # rank x m
    squares = s * s
    weights = np.empty((x.shape[1], y.shape[1]))
    for column in range(y.shape[1]):
        best = (np.inf, alphas[0])
        for alpha in alphas:
            shrink = squares / (squares + alpha)
            fitted = u @ (shrink * projected[:, column])
            leverage = (u * u) @ shrink + 1.0 / len(x)  # the intercept's share too
            residual = (y[:, column] - target_mean[column] - fitted) / np.maximum(1.0 - leverage, 1e-9)
            best = min(best, (float(np.mean(residual * residual)), alpha))
        alpha = best[1]
        weights[:, column] = vt.T @ (s / (squares + alpha) * projected[:, column])
    return RidgeModel(feature_mean, target_mean, weights)


class RidgeScreen:
    """Chooses which bred children to evaluate (see the module docstring).

    Args:
        factor: children bred per child evaluated (>= 1; 1 screens nothing).
        min_points: evaluated points needed before the model is trusted; until then the first children are kept.
    """

    def __init__(self, *, factor: int = 32, min_points: int = 16):
        for name, value in (("factor", factor), ("min_points", min_points)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        self.factor = factor
        self.min_points = min_points

    def choose(self, seen: np.ndarray, seen_losses: np.ndarray, seen_constraints: np.ndarray,
               population_losses: np.ndarray, population_violations: np.ndarray, children: np.ndarray,
               count: int) -> np.ndarray:
        """Indices of the ``count`` children to evaluate, best first.

        Args:
            seen: features of the evaluated points; ``seen_losses`` their losses (every objective minimised) and
                ``seen_constraints`` their raw constraint values (``value - limit``, > 0 violated; no columns when
                unconstrained). Rows with a non-finite value (unscored) are not learnt from.
            population_losses, population_violations: the current population's losses and total violations
                (:func:`nas.search.records.violation_vector`): what a child must rank among.
            children: features of the bred children.
            count: how many to keep.
        """
        targets = np.concatenate([seen_losses, seen_constraints], axis=1)
        finite = np.isfinite(targets).all(axis=1)
        if finite.sum() < self.min_points or len(children) <= count:
            return np.arange(min(count, len(children)))
        predicted = fit_ridge(seen[finite], targets[finite])(children)
        objectives = seen_losses.shape[1]
        losses = np.concatenate([population_losses, predicted[:, :objectives]])
        violations = np.concatenate([population_violations, np.maximum(predicted[:, objectives:], 0.0).sum(axis=1)])
        ranks, crowding = rank_and_crowding(losses, violations)
        mine = slice(len(population_losses), None)
        return np.lexsort((np.arange(len(children)), -crowding[mine], ranks[mine]))[:count]
