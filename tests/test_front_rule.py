"""One Pareto-front rule and reference point (nas.search.pareto.front_*), shared by nas.runs and nas.report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nas.report import pareto_info
from nas.search.pareto import front_candidates, front_mask, front_reference, reference_point
from tests.test_report import _make_run

LOSSES = np.array([[1.0, 5.0], [2.0, 2.0], [0.5, 9.0], [math.inf, 0.1], [2.0, 2.0], [3.0, 3.0], [np.nan, 1.0]])
FEASIBLE = np.array([True, True, False, True, True, True, True])
KEYS = ["a", "b", "c", "d", "b", "e", "f"]


def test_candidates_are_each_archs_first_feasible_scored_row() -> None:
    # c is infeasible, d and f have an objective not scored, the second b is a repeat
    assert front_candidates(LOSSES, FEASIBLE, KEYS).tolist() == [0, 1, 5]
    assert front_mask(LOSSES, FEASIBLE, KEYS).tolist() == [True, True, False, False, False, False, False]
    np.testing.assert_array_equal(front_reference(LOSSES, FEASIBLE, KEYS), reference_point(LOSSES[[0, 1, 5]]))
    assert front_reference(LOSSES, np.zeros(len(KEYS), dtype=bool), KEYS) is None
    assert front_mask(np.zeros((0, 2)), np.zeros(0, dtype=bool), []).tolist() == []


def test_run_and_plot_agree_when_a_feasible_candidate_is_not_scored(tmp_path: Path) -> None:
    history = [("a", 0.50, 1.0, True), ("b", 0.60, 2.0, True), ("c", -math.inf, 0.5, True), ("e", 0.70, 4.0, True)]
    run = _make_run(tmp_path, history)
    info = pareto_info(run, zoo_space=False)
    assert sorted(info.numbers[info.front].tolist()) == sorted(run.pareto()["number"].tolist()) == [0, 1, 3]
    assert {record.number for record, _ in run.top(5)} == {0, 1, 3}
    np.testing.assert_array_equal(info.hypervolume_reference, run.reference())
    np.testing.assert_allclose(info.hypervolume, run.hypervolume())
