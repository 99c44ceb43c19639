"""Pareto fronts, NSGA-II ranking and hypervolume on loss matrices (every objective minimised).

Every function takes an ``n x m`` float array of *losses*: maximised objectives
(accuracy) enter negated, so "smaller is better" holds in every column. NaN is
not allowed; a missing value should enter as ``+inf``.

* :func:`nondominated_mask`: 2-D fast path by one sort and a running minimum
  (as in Optuna's ``_is_pareto_front_2d``), otherwise a vectorised pairwise test.
* :func:`nondominated_ranks`: fast non-dominated sorting (Deb et al., "A fast and
  elitist multiobjective genetic algorithm: NSGA-II", IEEE TEC 2002), with
  Deb's *constraint domination*: a feasible point dominates an infeasible one,
  and of two infeasible points the one with the smaller total violation dominates.
* :func:`crowding_distance` and :func:`select_survivors` (rank, then crowding).
* :func:`hypervolume`: exact; 2-D by a sweep, more objectives by slicing along
  the last one (exponential in ``m``, fine for the few objectives of a search).
  The reference point is the caller's: :func:`reference_point` gives the rule
  runs and the benchmark use (the nadir pushed out by 10 % of the range).
* :func:`front_candidates`, :func:`front_mask`, :func:`front_reference`: which
  evaluations of a search history a run's front, its top and its reference point
  are taken over, so that ``nas.runs`` and ``nas.report`` count the same points.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "nondominated_mask",
    "nondominated_ranks",
    "crowding_distance",
    "rank_and_crowding",
    "select_survivors",
    "hypervolume",
    "hypervolume_curve",
    "reference_point",
    "front_candidates",
    "front_mask",
    "front_reference",
]

REFERENCE_MARGIN = 0.1


def _losses(losses: np.ndarray) -> np.ndarray:
    array = np.asarray(losses, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"losses must be an n x m array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("losses must not contain NaN (use +inf for a missing value)")
    return array


def _mask_2d(losses: np.ndarray) -> np.ndarray:
    """Non-dominated mask for two objectives: sort by (first, second), keep strict new minima of the second."""
    count = len(losses)
    order = np.lexsort((losses[:, 1], losses[:, 0]))
    second = losses[order, 1]
    best_before = np.concatenate([[math.inf], np.minimum.accumulate(second)[:-1]])
    keep = second < best_before
    # Equal points: all copies of a non-dominated point are non-dominated (none is strictly better).
    first = losses[order, 0]
    same_as_previous = np.zeros(count, dtype=bool)
    same_as_previous[1:] = (first[1:] == first[:-1]) & (second[1:] == second[:-1])
    for position in np.flatnonzero(same_as_previous):
        keep[position] = keep[position - 1]
    mask = np.zeros(count, dtype=bool)
    mask[order] = keep
    return mask


def _dominance(losses: np.ndarray) -> np.ndarray:
    """``n x n`` bool: ``[i, j]`` when point i dominates point j."""
    no_worse = (losses[:, None, :] <= losses[None, :, :]).all(axis=2)
    better = (losses[:, None, :] < losses[None, :, :]).any(axis=2)
    return np.asarray(no_worse & better, dtype=bool)


def nondominated_mask(losses: np.ndarray) -> np.ndarray:
    """Which rows are not dominated by any other row.

    Args:
        losses: ``n x m``, every column minimised.

    Returns:
        bool array of ``n``; duplicates of a non-dominated point are all kept.

    Example:
        >>> nondominated_mask(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 3.0]])).tolist()
        [True, True, False]
    """
    array = _losses(losses)
    if len(array) == 0:
        return np.zeros(0, dtype=bool)
    if array.shape[1] == 1:
        return np.asarray(array[:, 0] == array[:, 0].min(), dtype=bool)
    if array.shape[1] == 2:
        return _mask_2d(array)
    return np.asarray(~_dominance(array).any(axis=0), dtype=bool)


def _ranks_2d(losses: np.ndarray) -> np.ndarray:
    """Front index of each row for two objectives in O(n log n).

    Distinct points sorted by (first, second) are placed one by one in the first
    front whose smallest second objective so far is larger than theirs (an
    earlier point in the sort with a second objective no larger dominates them);
    those minima increase with the front index, so a bisection finds it.
    Identical points share a rank.
    """
    unique, inverse = np.unique(losses, axis=0, return_inverse=True)
    ranks = np.empty(len(unique), dtype=np.int64)
    front_min: list[float] = []
    for index, second in enumerate(unique[:, 1].tolist()):  # np.unique sorts rows lexicographically
        rank = bisect.bisect_right(front_min, second)
        if rank == len(front_min):
            front_min.append(second)
        else:
            front_min[rank] = second
        ranks[index] = rank
    return ranks[inverse.reshape(-1)]


def _ranks_unconstrained(losses: np.ndarray) -> np.ndarray:
    count = len(losses)
    ranks = np.full(count, -1, dtype=np.int64)
    if count == 0:
        return ranks
    if losses.shape[1] == 2:
        return _ranks_2d(losses)
    if losses.shape[1] == 1:
        _, dense = np.unique(losses[:, 0], return_inverse=True)
        return dense.astype(np.int64)
    dominance = _dominance(losses)
    dominated_by = dominance.sum(axis=0)
    rank = 0
    current = np.flatnonzero(dominated_by == 0)
    while len(current):
        ranks[current] = rank
        dominated_by[current] = -1
        dominated_by -= dominance[current].sum(axis=0)
        current = np.flatnonzero(dominated_by == 0)
        rank += 1
    return ranks


def nondominated_ranks(losses: np.ndarray, violations: np.ndarray | None = None) -> np.ndarray:
    """Front index of each row (0 = the Pareto front) under constraint domination.

    Args:
        losses: ``n x m``, every column minimised.
        violations: ``n`` total constraint violations (0 = feasible; see
            :func:`nas.search.records.violation_vector`), or None when unconstrained.

    Returns:
        int64 array of ``n`` ranks. Feasible rows are ranked by Pareto dominance;
        infeasible rows come after all of them, ranked by their violation (equal
        violations share a rank).

    Example:
        >>> nondominated_ranks(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 3.0], [0.0, 0.0]]),
        ...                    np.array([0.0, 0.0, 0.0, 5.0])).tolist()
        [0, 0, 1, 2]
    """
    array = _losses(losses)
    if violations is None:
        return _ranks_unconstrained(array)
    violation = np.asarray(violations, dtype=np.float64)
    if violation.shape != (len(array),):
        raise ValueError(f"violations must have {len(array)} entries, got shape {violation.shape}")
    feasible = violation <= 0
    ranks = np.empty(len(array), dtype=np.int64)
    ranks[feasible] = _ranks_unconstrained(array[feasible])
    offset = int(ranks[feasible].max()) + 1 if feasible.any() else 0
    if (~feasible).any():
        _, dense = np.unique(violation[~feasible], return_inverse=True)
        ranks[~feasible] = offset + dense
    return ranks


def crowding_distance(losses: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row within the set given (call it per front).

    For each objective the rows are sorted; the two extremes get ``inf`` and the
    others the gap between their neighbours divided by the objective's range.
    An objective with zero range contributes nothing. Rows are summed over
    objectives.

    Example:
        >>> crowding_distance(np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])).tolist()
        [inf, 1.5, 1.25, inf]
    """
    array = _losses(losses)
    count, objectives = array.shape
    distance = np.zeros(count)
    if count <= 2:
        distance[:] = math.inf
        return distance
    finite = np.where(np.isinf(array), np.nan, array)
    for column in range(objectives):
        order = np.argsort(array[:, column], kind="stable")
        ordered = finite[order, column]
        span = np.nanmax(ordered) - np.nanmin(ordered) if not np.isnan(ordered).all() else 0.0
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0 and np.isfinite(span):
            gaps = (ordered[2:] - ordered[:-2]) / span
            distance[order[1:-1]] += np.nan_to_num(gaps, nan=math.inf)
    return distance


def rank_and_crowding(losses: np.ndarray, violations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its front rank (:func:`nondominated_ranks`) and its crowding distance within that front.

    Vectorised over all fronts at once: per objective, one sort by (rank, value) puts each
    front's members next to each other, so neighbours are the adjacent rows of the same rank.
    """
    array = _losses(losses)
    ranks = nondominated_ranks(array, violations)
    count = len(array)
    crowding = np.zeros(count)
    if count == 0:
        return ranks, crowding
    finite = np.where(np.isfinite(array), array, np.nan)
    for column in range(array.shape[1]):
        order = np.lexsort((array[:, column], ranks))
        sorted_ranks = ranks[order]
        values = finite[order, column]
        first = np.ones(count, dtype=bool)
        first[1:] = sorted_ranks[1:] != sorted_ranks[:-1]
        last = np.ones(count, dtype=bool)
        last[:-1] = sorted_ranks[:-1] != sorted_ranks[1:]
        starts = np.flatnonzero(first)
        ends = np.flatnonzero(last)
        group = np.cumsum(first) - 1
        low = np.fmin.reduceat(values, starts)[group]
        high = np.fmax.reduceat(values, starts)[group]
        span = high - low
        previous = np.concatenate([[np.nan], values[:-1]])
        following = np.concatenate([values[1:], [np.nan]])
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = (following - previous) / span
        gap = np.where(span > 0, np.nan_to_num(gap, nan=math.inf), 0.0)
        gap[first | last] = math.inf
        small = (ends - starts + 1) <= 2
        gap[np.isin(group, np.flatnonzero(small))] = math.inf
        crowding[order] += gap
    return ranks, crowding


def select_survivors(losses: np.ndarray, violations: np.ndarray | None, count: int) -> np.ndarray:
    """Indices of the ``count`` best rows by NSGA-II's order: rank, then larger crowding distance.

    Ties (same rank and distance) keep the lower index first, so the result is deterministic.

    Returns:
        int64 array of ``min(count, n)`` indices, best first.
    """
    ranks, crowding = rank_and_crowding(losses, violations)
    order = np.lexsort((np.arange(len(ranks)), -crowding, ranks))
    return order[:count]


def _hv2(points: np.ndarray, reference: np.ndarray) -> float:
    points = points[nondominated_mask(points)]
    points = np.unique(points, axis=0)
    order = np.argsort(points[:, 0], kind="stable")
    x, y = points[order, 0], points[order, 1]
    heights = np.concatenate([[reference[1]], y[:-1]]) - y
    return float(np.sum((reference[0] - x) * heights))


def _hv(points: np.ndarray, reference: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:
        return _hv2(points, reference)
    points = points[nondominated_mask(points)]
    order = np.argsort(points[:, -1], kind="stable")
    points = points[order]
    volume = 0.0
    for index in range(len(points)):
        upper = points[index + 1, -1] if index + 1 < len(points) else reference[-1]
        depth = upper - points[index, -1]
        if depth > 0:
            volume += depth * _hv(points[: index + 1, :-1], reference[:-1])
    return volume


def hypervolume(losses: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by the rows and bounded by ``reference`` (every column minimised).

    Rows that do not strictly dominate the reference point in every column add nothing.

    Example:
        >>> hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0]))
        3.0
    """
    array = _losses(losses)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (array.shape[1],):
        raise ValueError(f"reference must have {array.shape[1]} entries, got shape {reference.shape}")
    inside = array[(array < reference[None, :]).all(axis=1)]
    return _hv(inside, reference)


def hypervolume_curve(losses: np.ndarray, reference: np.ndarray, feasible: np.ndarray | None = None) -> np.ndarray:
    """Hypervolume of the first ``k`` rows, for ``k = 1 .. n`` (infeasible rows add nothing).

    Only rows that enter the running front trigger a recomputation, so a long
    history with a small front costs little.
    """
    array = _losses(losses)
    reference = np.asarray(reference, dtype=np.float64)
    keep = np.ones(len(array), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    curve = np.zeros(len(array))
    front = np.zeros((0, array.shape[1]))
    volume = 0.0
    for index, point in enumerate(array):
        if keep[index] and (point < reference).all():
            dominated = len(front) and ((front <= point).all(axis=1)).any()
            if not dominated:
                front = np.vstack([front[~((point <= front).all(axis=1))], point])
                volume = _hv(front, reference)
        curve[index] = volume
    return curve


def reference_point(losses: np.ndarray, *, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The reference point used by runs and the benchmark: the nadir plus ``margin`` of each column's range.

    The nadir is the worst finite value per column over the rows given (the
    feasible ones, as a rule). A column with zero range is pushed out by
    ``margin * max(1, |nadir|)`` so that its points still count.
    """
    array = _losses(losses)
    if len(array) == 0:
        raise ValueError("a reference point needs at least one row")
    finite = np.where(np.isfinite(array), array, np.nan)
    worst = np.nanmax(finite, axis=0)
    best = np.nanmin(finite, axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(1.0, np.abs(worst)))
    return worst + margin * span


def front_candidates(losses: np.ndarray, feasible: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """The rows of a search history that may stand on its front: one per Arch, feasible and fully scored.

    Args:
        losses: ``n x m`` history in evaluation order (NaN allowed: an objective not scored).
        feasible: ``n`` bool, every constraint holds.
        keys: ``n`` Arch ids; an Arch evaluated twice counts once, by its first feasible evaluation.

    Returns:
        int64 indices, ascending, of each Arch's first feasible row, kept only if every loss is finite
        (:attr:`nas.search.records.Record.scored`: a source that could not score a candidate, such as a
        zero-cost proxy that overflows, leaves it off the front).
    """
    array = np.asarray(losses, dtype=np.float64)
    scored = np.isfinite(array).all(axis=1)
    seen: set[str] = set()
    chosen = []
    for index, key in enumerate(keys):
        if feasible[index] and key not in seen:
            seen.add(key)
            if scored[index]:
                chosen.append(index)
    return np.array(chosen, dtype=np.int64)


def front_mask(losses: np.ndarray, feasible: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """``n`` bool: the history's Pareto front, the non-dominated rows of :func:`front_candidates`."""
    chosen = front_candidates(losses, feasible, keys)
    mask = np.zeros(len(keys), dtype=bool)
    if len(chosen):
        mask[chosen[nondominated_mask(np.asarray(losses, dtype=np.float64)[chosen])]] = True
    return mask


def front_reference(losses: np.ndarray, feasible: np.ndarray, keys: Sequence[str]) -> np.ndarray | None:
    """The history's hypervolume reference point: :func:`reference_point` over :func:`front_candidates`;
    None when there is none."""
    chosen = front_candidates(losses, feasible, keys)
    return reference_point(np.asarray(losses, dtype=np.float64)[chosen]) if len(chosen) else None
