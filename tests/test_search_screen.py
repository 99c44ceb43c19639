"""The evolution's pre-selection screen: ridge fits with leave-one-out regularisation, and which children it keeps."""

from __future__ import annotations

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.search import MemoryStore, create_strategy, hypervolume, optimize, reference_point
from nas.search.evolution import NSGA2Strategy, RidgeScreen, fit_ridge
from nas.search.pareto import nondominated_ranks
from tests.test_search import cheap_scorer, history, tiny_space  # noqa: F401  (the fixture)


def linear_problem(seed: int, count: int, features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Binary features and two conflicting losses that are exact linear functions of them."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(count, features)).astype(np.float64)
    weights = np.random.default_rng(99).normal(size=(features, 2))
    weights[:, 1] = -weights[:, 0] + 0.3 * weights[:, 1]
    return x, x @ weights


def test_ridge_predicts_unseen_points_of_a_linear_function() -> None:
    x, y = linear_problem(0, 60)
    test_x, test_y = linear_problem(1, 20)
    assert np.abs(fit_ridge(x, y)(test_x) - test_y).max() < 0.05


def test_ridge_regularises_more_when_the_targets_are_noise() -> None:
    x, _ = linear_problem(0, 40)
    noise = np.random.default_rng(3).normal(size=(40, 1))
    signal = x[:, :1] * 5.0
    flat = np.abs(fit_ridge(x, noise).weights).sum()
    steep = np.abs(fit_ridge(x, signal).weights).sum()
    assert flat < 0.5 * steep


def test_the_screen_keeps_children_predicted_on_the_front() -> None:
    seen, losses = linear_problem(0, 60)
    children, truth = linear_problem(2, 64)
    population = losses[:8]
    chosen = RidgeScreen(factor=8).choose(seen, losses, np.zeros((60, 0)), population, np.zeros(8), children, 8)
    assert len(set(chosen.tolist())) == 8
    ranks = nondominated_ranks(np.concatenate([population, truth]))[8:]
    assert ranks[chosen].mean() < ranks.mean() - 1.0, "the kept children rank better than the children bred"


def test_the_screen_avoids_children_predicted_to_break_a_constraint() -> None:
    seen, losses = linear_problem(0, 60)
    children, _ = linear_problem(2, 64)
    over = seen[:, :1] - 0.5  # > 0 (violated) exactly where feature 0 is set
    chosen = RidgeScreen().choose(seen, losses, over, losses[:8], np.maximum(over[:8, 0], 0.0), children, 8)
    assert (children[chosen, 0] == 0).all()


def test_the_screen_keeps_the_first_children_until_it_has_seen_enough() -> None:
    seen, losses = linear_problem(0, 10)
    children, _ = linear_problem(2, 40)
    chosen = RidgeScreen(min_points=16).choose(seen, losses, np.zeros((10, 0)), losses[:4], np.zeros(4), children, 5)
    assert chosen.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [{"factor": 0}, {"min_points": 0}, {"factor": 2.5}, {"factor": True}])
def test_screen_settings_are_checked(bad) -> None:
    with pytest.raises(ConfigError):
        RidgeScreen(**bad)


def run(space, screen, seed: int, budget: int):
    strategy = NSGA2Strategy(space, directions=["maximize", "minimize"], seed=seed, population_size=8, screen=screen)
    return optimize(space, strategy, cheap_scorer(), MemoryStore(), budget=budget)


def test_screened_evolution_beats_plain_evolution_at_equal_budget(tiny_space) -> None:  # noqa: F811
    runs = {name: [run(tiny_space, screen, seed, 40) for seed in range(4)]
            for name, screen in (("plain", None), ("screened", RidgeScreen()))}
    losses = {name: [np.array([r.values for r in records]) * np.array([-1.0, 1.0]) for records in many]
              for name, many in runs.items()}
    reference = reference_point(np.concatenate([*losses["plain"], *losses["screened"]]))
    volume = {name: np.mean([hypervolume(array, reference) for array in arrays]) for name, arrays in losses.items()}
    assert volume["screened"] > volume["plain"]


def test_evolution_screens_by_default_and_plain_nsga2_is_one_argument_away(tiny_space) -> None:  # noqa: F811
    default = create_strategy("evolution", tiny_space, directions=["maximize", "minimize"])
    assert isinstance(default.screen, RidgeScreen)
    plain, screened = run(tiny_space, None, 0, 24), run(tiny_space, RidgeScreen(), 0, 24)
    assert history(plain)[:8] == history(screened)[:8], "the first generation is random either way"
    assert history(plain)[8:] != history(screened)[8:]
