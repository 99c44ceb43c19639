"""nas.search: Pareto ranking and crowding on hand-checked fronts, hypervolume, strategies' ask/tell contract.

The strategy tests score candidates with two cheap objectives computed from the Arch itself (no predictor),
on a small space written here, so they run in seconds.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import nas
from nas.errors import ConfigError, NasError, UnknownKindError
from nas.search import (
    MemoryStore,
    Objective,
    Scorer,
    create_strategy,
    crowding_distance,
    get_strategy,
    hypervolume,
    hypervolume_curve,
    list_strategies,
    nondominated_mask,
    nondominated_ranks,
    optimize,
    parse_constraint,
    reference_point,
    replay,
    select_survivors,
)
from nas.search.constraints import Constraint, parse_quantity
from nas.search.strategies import nni_evolution
from nas.search.strategies.optuna_samplers import decision_names

TINY_SPACE = """\
schema: 1
name: tiny_search
description: A small space for the search tests (64 px, two stages, a conditional mixer choice).
input: {resolution: {ordinal: [64, 96]}, channels: 3}
stem: {kind: overlap, kernel: 7, stride: 4}
stages:
  - dim: {ordinal: [16, 24, 32]}
    downsample: null
    blocks:
      repeat: {range: [1, 2]}
      block:
        mixer: {choice: [{kind: pooling, pool_size: {choice: [3, 5]}}, {kind: attention, heads: {choice: [1, 3]}}]}
        ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}
        norm: layernorm
        layer_scale: {choice: [null, 1.0e-5]}
  - dim: {ordinal: [32, 48]}
    downsample: {kind: conv, kernel: 3, stride: 2}
    blocks:
      repeat: {range: [1, 2]}
      block: {mixer: identity, ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}, norm: batchnorm}
head: {kind: linear, num_classes: 10}
"""

STRATEGIES = list_strategies()
# Strategies that keep their own state re-propose a stored history exactly on replay (strict replay) and never
# propose a point twice; those living in an Optuna study (uses_study) rebuild from the study instead.
OWN_STRATEGIES = [name for name in STRATEGIES if not get_strategy(name).uses_study]


def write_tiny_space(folder: Path) -> Path:
    """The test space as a file (heads 3 divides only width 24, so some points are invalid)."""
    path = folder / "tiny_search.yaml"
    path.write_text(TINY_SPACE)
    return path


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> nas.Space:
    return nas.space.load_space(str(write_tiny_space(tmp_path_factory.mktemp("space"))))


class Capacity(Objective):
    """A stand-in 'accuracy': widths times depths, plus resolution (maximised)."""

    kind = "capacity"
    column = "capacity"
    direction = "maximize"

    def evaluate(self, archs):
        return np.array([sum(stage.dim * len(stage.blocks) for stage in arch.stages) + arch.input.resolution / 8
                         for arch in archs], dtype=np.float64)


class Cost(Objective):
    """A stand-in 'latency' (minimised), larger for attention and high resolution."""

    kind = "cost"
    column = "cost"
    direction = "minimize"

    def evaluate(self, archs):
        out = []
        for arch in archs:
            total = (arch.input.resolution / 64) ** 2
            for stage in arch.stages:
                for block in stage.blocks:
                    total += stage.dim ** 2 / 1000 * (2.0 if block.mixer.kind == "attention" else 1.0)
            out.append(total)
        return np.array(out, dtype=np.float64)


def cheap_scorer(max_cost: float | None = None) -> Scorer:
    constraints = [] if max_cost is None else [Constraint("max_cost", "cost", "cost", max_cost, str(max_cost))]
    return Scorer([Capacity(), Cost()], constraints)


def history(records) -> list[tuple]:
    return [(r.key, r.arch_id, r.values, r.generation, r.parents) for r in records]


# -- Pareto, ranks, crowding, hypervolume ---------------------------------------------------------------------

FRONT = np.array([[1.0, 5.0], [2.0, 3.0], [4.0, 1.0], [3.0, 4.0], [5.0, 5.0], [2.0, 6.0]])


def test_ranks_of_a_hand_checked_front() -> None:
    # A(1,5) B(2,3) C(4,1) are mutually non-dominated; D(3,4) and F(2,6) are dominated only by front 0
    # (B dominates both); E(5,5) is dominated by D as well.
    assert nondominated_ranks(FRONT).tolist() == [0, 0, 0, 1, 2, 1]
    assert nondominated_mask(FRONT).tolist() == [True, True, True, False, False, False]


def test_ranks_general_path_matches_the_2d_path() -> None:
    rng = np.random.default_rng(0)
    points = rng.integers(0, 6, size=(60, 2)).astype(float)
    padded = np.concatenate([points, np.zeros((60, 1))], axis=1)  # a constant third column changes nothing
    assert nondominated_ranks(points).tolist() == nondominated_ranks(padded).tolist()
    assert nondominated_mask(points).tolist() == nondominated_mask(padded).tolist()


def test_duplicates_share_a_rank() -> None:
    assert nondominated_ranks(np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])).tolist() == [0, 0, 1]


def test_crowding_distance_hand_checked() -> None:
    # front 0 of FRONT: ranges 3 (x) and 4 (y); B's neighbours span the whole range in both.
    assert crowding_distance(FRONT[:3]).tolist() == [np.inf, 2.0, np.inf]
    four = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    # second point: x gap (3 - 0) / 4, y gap (4 - 1) / 4; third: (4 - 1) / 4 + (2 - 0) / 4
    assert crowding_distance(four).tolist() == [np.inf, 1.5, 1.25, np.inf]


def test_constraint_domination() -> None:
    losses = np.array([[5.0, 5.0], [0.0, 0.0], [1.0, 9.0], [0.0, 1.0]])
    violations = np.array([0.0, 3.0, 0.0, 1.0])
    # feasible points first (ranked among themselves), then infeasible by violation, whatever their losses
    assert nondominated_ranks(losses, violations).tolist() == [0, 2, 0, 1]
    assert select_survivors(losses, violations, 3).tolist()[:2] in ([0, 2], [2, 0])
    assert 1 not in select_survivors(losses, violations, 3)


def test_an_unscored_candidate_survives_after_every_scored_one() -> None:
    from nas.search.records import Record, loss_matrix, violation_vector

    def record(index: int, accuracy: float, latency: float) -> Record:
        return Record(index, f"0:0:{index}", 0, np.array([index], dtype=np.int16), f"a{index}", 0, (),
                      (accuracy, latency))

    # the fastest candidate could not be scored (a zero-cost proxy overflowed): -inf accuracy
    records = [record(0, 0.8, 3.0), record(1, 0.6, 2.0), record(2, -np.inf, 1.0), record(3, 0.5, 2.5)]
    signs = np.array([-1.0, 1.0])
    assert violation_vector(records).tolist() == [0.0, 0.0, np.inf, 0.0]
    # as a bare +inf loss it is on the front (nothing is faster), so it would take a place a scored point needs
    assert 2 in select_survivors(loss_matrix(records, signs), None, 3)
    chosen = select_survivors(loss_matrix(records, signs), violation_vector(records), 3).tolist()
    assert sorted(chosen) == [0, 1, 3]


def test_survivors_prefer_rank_then_crowding() -> None:
    chosen = select_survivors(FRONT, None, 4).tolist()
    assert set(chosen[:3]) == {0, 1, 2}
    assert chosen[3] in (3, 5)  # rank 1, both extremes of their front (infinite crowding): lower index first
    assert chosen[3] == 3


def test_hypervolume_2d_by_hand() -> None:
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0])) == 3.0
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0], [2.5, 2.5]]), np.array([3.0, 3.0])) == 3.0
    assert hypervolume(np.array([[4.0, 0.0]]), np.array([3.0, 3.0])) == 0.0  # outside the box


def test_hypervolume_3d_counts_unit_cubes() -> None:
    rng = np.random.default_rng(1)
    points = rng.integers(0, 5, size=(7, 3)).astype(float)
    reference = np.array([5.0, 5.0, 5.0])
    cells = itertools.product(range(5), repeat=3)
    expected = sum(any((p <= np.array(cell)).all() for p in points) for cell in cells)
    assert hypervolume(points, reference) == pytest.approx(expected)


def test_hypervolume_curve_is_monotone_and_ends_at_the_total() -> None:
    rng = np.random.default_rng(2)
    points = rng.random((40, 2))
    reference = reference_point(points)
    curve = hypervolume_curve(points, reference)
    assert (np.diff(curve) >= -1e-12).all()
    assert curve[-1] == pytest.approx(hypervolume(points, reference))
    feasible = np.arange(40) % 2 == 0
    assert hypervolume_curve(points, reference, feasible)[-1] == pytest.approx(hypervolume(points[feasible], reference))


def test_nan_losses_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        nondominated_mask(np.array([[np.nan, 1.0]]))


# -- constraints --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "text", "limit"), [
    ("max_latency", "2ms", 2.0), ("max_latency", "500us", 0.5), ("max_latency", "0.01s", 10.0),
    ("max_latency", "3", 3.0), ("max_params", "10M", 10.0), ("max_params", "500k", 0.5),
    ("max_macs", "1G", 1.0), ("max_macs", "300MMACs", 0.3),
])
def test_constraint_units(name: str, text: str, limit: float) -> None:
    assert parse_constraint(name, text).limit == pytest.approx(limit)


@pytest.mark.parametrize("text", ["2 parsecs", "-1ms", "0ms", "ms", "1e400ms"])
def test_bad_constraint_values(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-latency"):
        parse_constraint("max_latency", text)


def test_unknown_constraint_lists_the_known_ones() -> None:
    with pytest.raises(UnknownKindError, match="max_latency"):
        parse_constraint("max_lat", "1ms")
    with pytest.raises(ConfigError):
        parse_quantity("10 flops", "count")


# -- strategies -----------------------------------------------------------------------------------------------


def test_registry_lists_every_strategy_and_rejects_unknown(tiny_space) -> None:
    assert {"evolution", "random", "optuna-tpe", "optuna-nsga2", "optuna-gp", "nni-evolution"} <= set(STRATEGIES)
    assert all(get_strategy(name).name == name for name in STRATEGIES), "each class is registered under its name"
    with pytest.raises(UnknownKindError, match="known: evolution"):
        create_strategy("evolutoin", tiny_space, directions=["maximize", "minimize"])


@pytest.mark.parametrize("bad", [{"population_size": 1}, {"seed": -1}, {"directions": ["up"]}])
def test_constructor_arguments_are_checked(tiny_space, bad) -> None:
    options = {"directions": ["maximize", "minimize"], **bad}
    with pytest.raises(ConfigError):
        create_strategy("evolution", tiny_space, **options)


def test_nni_guard_names_the_extra(tiny_space, monkeypatch) -> None:
    monkeypatch.setattr(nni_evolution, "nni_available", lambda: False)
    with pytest.raises(NasError, match=r"pip install 'nas\[nni\]'"):
        create_strategy("nni-evolution", tiny_space, directions=["maximize", "minimize"])


def available(name: str) -> None:
    """Skip the test when the strategy's optional extra is not installed."""
    if name == "nni-evolution" and not nni_evolution.nni_available():
        pytest.skip("optional extra not installed: pip install 'nas[nni]'")


def run_memory(space, name: str, *, seed: int, budget: int, scorer: Scorer | None = None):
    strategy = create_strategy(name, space, directions=["maximize", "minimize"], seed=seed, population_size=8)
    return optimize(space, strategy, scorer or cheap_scorer(), MemoryStore(), budget=budget)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_contract(tiny_space, name: str) -> None:
    available(name)
    budget = 10 if name == "optuna-gp" else 24  # GP's first 10 trials are its random start-up
    first = run_memory(tiny_space, name, seed=5, budget=budget)
    assert len(first) == budget
    assert all(tiny_space.is_valid(record.vector) for record in first)
    assert history(first) == history(run_memory(tiny_space, name, seed=5, budget=budget)), "same seed, same run"
    assert history(first) != history(run_memory(tiny_space, name, seed=6, budget=budget)), "the seed matters"
    if name in OWN_STRATEGIES:
        vectors = {record.vector.tobytes() for record in first}
        assert len(vectors) == budget, "no point is evaluated twice"


@pytest.mark.parametrize("name", OWN_STRATEGIES)
@pytest.mark.parametrize("cut", [1, 8, 13])
def test_replay_resumes_exactly(tiny_space, name: str, cut: int) -> None:
    available(name)
    whole = run_memory(tiny_space, name, seed=3, budget=30)
    store = MemoryStore()
    first = create_strategy(name, tiny_space, directions=["maximize", "minimize"], seed=3, population_size=8)
    optimize(tiny_space, first, cheap_scorer(), store, budget=cut)
    fresh = create_strategy(name, tiny_space, directions=["maximize", "minimize"], seed=3, population_size=8)
    resumed = optimize(tiny_space, fresh, cheap_scorer(), store, budget=30)
    assert history(resumed) == history(whole)


def test_replay_detects_a_foreign_history(tiny_space) -> None:
    records = run_memory(tiny_space, "evolution", seed=1, budget=8)
    other = create_strategy("evolution", tiny_space, directions=["maximize", "minimize"], seed=2, population_size=8)
    with pytest.raises(NasError, match="does not match"):
        replay(other, records)


def test_evolution_children_record_their_parents(tiny_space) -> None:
    records = run_memory(tiny_space, "evolution", seed=0, budget=24)
    ids = {record.arch_id for record in records}
    later = [record for record in records if record.generation > 0]
    assert later and all(record.parents and set(record.parents) <= ids for record in later)
    assert all(not record.parents for record in records if record.generation == 0)


def test_evolution_improves_on_its_first_generation(tiny_space) -> None:
    records = run_memory(tiny_space, "evolution", seed=0, budget=64)
    losses = np.array([record.values for record in records]) * np.array([-1.0, 1.0])
    reference = reference_point(losses)
    assert hypervolume(losses, reference) > hypervolume(losses[:8], reference)


def test_evolution_respects_constraints(tiny_space) -> None:
    records = run_memory(tiny_space, "evolution", seed=0, budget=48, scorer=cheap_scorer(max_cost=2.0))
    late = [record.feasible for record in records[24:]]
    early = [record.feasible for record in records[:8]]
    assert sum(late) / len(late) >= sum(early) / len(early)
    assert all(len(record.violations) == 1 for record in records)


def test_optuna_trials_suggest_only_existing_decisions(tiny_space) -> None:
    strategy = create_strategy("optuna-tpe", tiny_space, directions=["maximize", "minimize"], seed=0)
    store = MemoryStore()
    optimize(tiny_space, strategy, cheap_scorer(), store, budget=12)
    names = decision_names(tiny_space)
    for trial in store.study().get_trials(deepcopy=False):
        vector = np.asarray(trial.user_attrs["vector"]) if "vector" in trial.user_attrs else None
        if vector is None:  # a rejected point: told FAIL, never a candidate
            assert trial.user_attrs.get("rejected") and trial.state.name == "FAIL"
            continue
        assert set(trial.params) == {names[slot] for slot in np.flatnonzero(vector >= 0)}
        assert all(trial.params[names[slot]] == vector[slot] for slot in np.flatnonzero(vector >= 0))


def test_accuracy_sources_name_their_columns(tiny_space) -> None:
    from nas.search import make_scorer

    archs = [tiny_space.decode(vector) for vector in tiny_space.sample_vectors(np.random.default_rng(0), 1)]
    zero_cost = make_scorer(target="iphone12", accuracy="zero-cost", objectives=("accuracy",))
    assert zero_cost.columns == ["zero_cost_score"]
    scores = zero_cost.evaluate(archs)
    assert np.isfinite(scores.values).all()
    assert (zero_cost.evaluate(archs).values == scores.values).all(), "deterministic, and cached per Arch"
    proxy = make_scorer(target="iphone12", accuracy="proxy", objectives=("accuracy", "params", "macs"))
    values = proxy.evaluate(archs).values
    assert np.allclose(values[:, 0], np.log10(values[:, 2] * 1e9))  # the proxy is log10 MACs
    with pytest.raises(NasError, match="--supernet CHECKPOINT"):
        make_scorer(target="iphone12", accuracy="supernet")


def test_zero_cost_source_scores_an_arch_its_proxy_cannot_score_as_the_worst(tiny_space, monkeypatch) -> None:
    from nas.search import make_scorer
    from nas.supernet import zero_cost

    archs = [tiny_space.decode(vector) for vector in tiny_space.sample_vectors(np.random.default_rng(0), 2)]
    real, calls = zero_cost.score_many, []

    def overflow_on_the_second(candidates, *, batch, seed):
        calls.append(candidates[0])
        if len(calls) == 2:
            raise zero_cost.ZeroCostError("synflow is NaN (the flow overflows float64)")
        return real(candidates, batch=batch, seed=seed)

    monkeypatch.setattr(zero_cost, "score_many", overflow_on_the_second)
    scores = make_scorer(target="iphone12", accuracy="zero-cost", objectives=("accuracy",)).evaluate(archs).values
    assert np.isfinite(scores[0, 0]) and scores[1, 0] == -np.inf
    assert calls[0].input.resolution == 32 and calls[0].stages[0].dim < archs[0].stages[0].dim  # the proxy scale


def test_short_train_source_trains_candidates_at_the_default_supernets_scale_once(tiny_space, tmp_path,
                                                                                  monkeypatch) -> None:
    import nas.supernet
    from nas.runs.supernets import DEFAULT_RECIPE
    from nas.search import make_scorer
    from nas.search.accuracy import PROXY_RESOLUTION, PROXY_WIDTH

    monkeypatch.setenv("NAS_HOME", str(tmp_path))
    archs = [tiny_space.decode(vector) for vector in tiny_space.sample_vectors(np.random.default_rng(0), 2)]

    def scorer_of(steps: int):
        scorer = make_scorer(target="iphone12", accuracy="short-train", objectives=("accuracy",), seed=0)
        scorer.measures[0].source.steps = steps  # the test's budget; the search trains DEFAULT_SHORT_STEPS
        return scorer

    scorer = scorer_of(20)
    source = scorer.measures[0].source
    assert (source.scale.width, source.scale.resolution) == (DEFAULT_RECIPE.width, DEFAULT_RECIPE.resolution)
    assert (PROXY_WIDTH, PROXY_RESOLUTION) == (DEFAULT_RECIPE.width, DEFAULT_RECIPE.resolution)
    scores = scorer.evaluate(archs).values[:, 0]
    assert scorer.columns == ["accuracy"] and ((scores > 0.1) & (scores <= 1)).all()  # 10 classes: above chance
    assert source.cache_file.is_file() and source.cache_file.parent.parent == tmp_path

    trained = []
    real = nas.supernet.short_train_scores
    monkeypatch.setattr(nas.supernet, "short_train_scores",
                        lambda candidates, *args, **options: trained.extend(candidates) or real(candidates, *args,
                                                                                                 **options))
    assert (scorer_of(20).evaluate(archs).values[:, 0] == scores).all() and not trained, "a new search reuses them"
    scorer_of(3).evaluate(archs[:1])
    assert trained == archs[:1], "another recipe is another cache"

    def does_not_fit(candidates, *args, **options):
        raise nas.supernet.ProxyError("window 7 does not fit a 1x1 feature map")

    monkeypatch.setattr(nas.supernet, "short_train_scores", does_not_fit)
    scorer = scorer_of(4)
    assert scorer.evaluate(archs[:1]).values[0, 0] == -np.inf  # not measured: off the front, ranked last
    assert not scorer.measures[0].source.cache_file.exists(), "a candidate not measured is not cached"


def test_short_train_scores_do_not_depend_on_the_number_of_workers(tiny_space, tmp_path, monkeypatch) -> None:
    """Worker processes train one candidate each in one thread, as the source does in process with one CPU."""
    import torch

    from nas.search.accuracy import ShortTrainAccuracy

    archs = [tiny_space.decode(vector) for vector in tiny_space.sample_vectors(np.random.default_rng(3), 3)]
    scores = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    for workers in (1, 2):
        monkeypatch.setenv("NAS_HOME", str(tmp_path / f"workers{workers}"))
        source = ShortTrainAccuracy(steps=3, workers=workers)
        scores[workers] = source.evaluate(archs)
        assert source.cache_file.is_file() and (source._pool is not None) == (workers > 1)
    assert np.isfinite(scores[1]).all() and (scores[1] == scores[2]).all()
    assert torch.get_num_threads() == 2, "the in-process path trains in one thread, then restores the count"
    torch.set_num_threads(threads)
    assert "3 training steps" in source.label


def test_short_train_trains_where_the_placement_says_in_process_and_in_workers(tiny_space, tmp_path,
                                                                               monkeypatch) -> None:
    """``nas search --amp bf16`` reaches the workers: their scores equal the in-process ones, kept apart from
    float32's in the cache."""
    import torch

    from nas.search.accuracy import ShortTrainAccuracy
    from nas.supernet.device import Placement

    archs = [tiny_space.decode(vector) for vector in tiny_space.sample_vectors(np.random.default_rng(3), 2)]
    bf16 = Placement(torch.device("cpu"), "bf16")
    scores, files = {}, {}
    for workers, placement in ((1, bf16), (2, bf16), (1, None)):
        monkeypatch.setenv("NAS_HOME", str(tmp_path / f"workers{workers}"))
        source = ShortTrainAccuracy(steps=3, workers=workers, placement=placement)
        scores[workers, placement] = source.evaluate(archs)
        files[workers, placement] = source.cache_file.name
    assert (scores[1, bf16] == scores[2, bf16]).all()
    assert files[1, bf16] == files[2, bf16] != files[1, None]


def test_warm_start_opens_the_first_generation(tiny_space) -> None:
    seeds = tiny_space.sample_vectors(np.random.default_rng(9), 3)
    strategy = create_strategy("evolution", tiny_space, directions=["maximize", "minimize"], population_size=8)
    strategy.start_with(np.concatenate([seeds, seeds[:1]]))  # a repeat is dropped
    first = strategy.ask(8)
    assert [p.vector.tolist() for p in first[:3]] == seeds.tolist()
    assert len({p.vector.tobytes() for p in first}) == 8
    with pytest.raises(NasError, match="warm start"):
        create_strategy("optuna-tpe", tiny_space, directions=["maximize", "minimize"]).start_with(seeds)


def test_replay_with_a_warm_start(tiny_space) -> None:
    seeds = tiny_space.sample_vectors(np.random.default_rng(4), 5)

    def strategy():
        made = create_strategy("evolution", tiny_space, directions=["maximize", "minimize"], seed=2, population_size=8)
        made.start_with(seeds)
        return made

    whole = optimize(tiny_space, strategy(), cheap_scorer(), MemoryStore(), budget=20)
    store = MemoryStore()
    optimize(tiny_space, strategy(), cheap_scorer(), store, budget=3)
    assert history(optimize(tiny_space, strategy(), cheap_scorer(), store, budget=20)) == history(whole)
