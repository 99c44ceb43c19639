"""Fast scoring of predictor objectives: per-unit params/MACs, the batch latency path, the vector scorer.

Each fast path must give the numbers of the slow one it replaces (``nas.profile``, ``nas.latency.predict``,
``Scorer.evaluate`` on decoded Archs), whatever the process priced before. Random MetaFormer points, which
mix every mixer family, resolution and stem of the space.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nas
from nas.errors import NasError
from nas.latency import predict, predict_many
from nas.latency.batch import BatchPredictor, CostTable
from nas.latency.predict import resolve_setting
from nas.search import Objective, Scorer, make_scorer, parse_constraint
from nas.search.vector_scorer import VectorScorer

TARGET = "iphone12"
ALL_OBJECTIVES = ("accuracy", "latency", "params", "macs")


@pytest.fixture(scope="module")
def space() -> nas.Space:
    return nas.space.load_space("metaformer")


@pytest.fixture(scope="module")
def vectors(space: nas.Space) -> np.ndarray:
    return space.sample_vectors(np.random.default_rng(7), 24)


@pytest.fixture(scope="module")
def archs(space: nas.Space, vectors: np.ndarray) -> list[nas.Arch]:
    return [space.decode(vector) for vector in vectors]


def test_cost_table_equals_profile(archs: list[nas.Arch]) -> None:
    params, macs = CostTable()(archs)
    reports = [nas.profile(arch) for arch in archs]
    assert params.tolist() == [report.params for report in reports]
    assert macs.tolist() == [report.macs for report in reports]
    scores = make_scorer(target=TARGET, objectives=ALL_OBJECTIVES).evaluate(archs)
    np.testing.assert_allclose(scores.metrics["params_m"], [r.params_m for r in reports], rtol=1e-9, atol=0)
    np.testing.assert_allclose(scores.metrics["gmacs"], [r.gmacs for r in reports], rtol=1e-9, atol=0)


def test_batch_latency_equals_predict_in_any_order(archs: list[nas.Arch]) -> None:
    setting = resolve_setting(TARGET)
    forward = BatchPredictor(setting, 1)(archs)
    backward = BatchPredictor(setting, 1)(archs[::-1])[::-1]
    np.testing.assert_array_equal(forward, backward)
    single = [predict(arch, target=TARGET).latency_ms for arch in archs]
    np.testing.assert_allclose(forward, single, rtol=1e-12)


def test_the_head_is_priced_at_its_own_feature_size() -> None:
    # Regression: the head's signature once left out the feature size, so an Arch priced after the same
    # Arch at another resolution got that resolution's pooling cost.
    small = nas.zoo.get("poolformer_s12")
    large = dataclasses.replace(small, input=dataclasses.replace(small.input, resolution=288))
    predictor = BatchPredictor(resolve_setting(TARGET), 1)
    got = predictor([small, large, small])
    want = [predict(arch, target=TARGET).latency_ms for arch in (small, large, small)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_the_default_latency_objective_is_the_batch_path(archs: list[nas.Arch]) -> None:
    scorer = make_scorer(target=TARGET)
    assert not scorer.objectives[1].exact
    np.testing.assert_array_equal(scorer.evaluate(archs).metrics["latency_ms"], predict_many(archs, target=TARGET))


def test_vector_scorer_matches_the_arch_scorer(space: nas.Space, vectors: np.ndarray,
                                               archs: list[nas.Arch]) -> None:
    constraints = [parse_constraint("max_latency", "3ms"), parse_constraint("max_params", "20M")]
    slow = make_scorer(target=TARGET, objectives=("accuracy", "latency"), constraints=constraints)
    fast = VectorScorer(space, make_scorer(target=TARGET, objectives=("accuracy", "latency"),
                                           constraints=constraints))
    want, got = slow.evaluate(archs), fast.evaluate_vectors(vectors)
    assert list(got.metrics) == list(want.metrics) == ["proxy_score", "latency_ms", "params_m"]
    for column in want.metrics:
        np.testing.assert_allclose(got.metrics[column], want.metrics[column], rtol=1e-12, atol=0)
    np.testing.assert_allclose(got.violations, want.violations, rtol=1e-9, atol=1e-12)
    assert got.values.shape == (len(vectors), 2)
    misses = fast.misses
    again = fast.evaluate_vectors(vectors[::-1])
    assert fast.misses == misses, "a point seen before is priced from the part table"
    np.testing.assert_array_equal(again.values, got.values[::-1])
    assert fast.evaluate_vectors(vectors[:0]).values.shape == (0, 2)


def test_vector_scorer_shares_parts_between_points(space: nas.Space, vectors: np.ndarray) -> None:
    fast = VectorScorer(space, make_scorer(target=TARGET, objectives=ALL_OBJECTIVES))
    head = space.part_slots()[-1]
    flag = next(slot for slot in head if space.decisions[slot].path.endswith(".distillation"))
    parent = next(vector for vector in vectors if vector[flag] >= 0)  # a head that has the distillation flag
    fast.evaluate_vectors(parent[None])
    parts = fast.size()
    assert parts == len(space.part_slots()) - 1  # input, stem and stage 0 are one part
    child = parent.copy()
    child[flag] = 1 - child[flag]  # the head's distillation flag
    assert space.is_valid(child)
    got = fast.evaluate_vectors(child[None])
    assert fast.size() == parts + 1, "only the head is new"
    want = make_scorer(target=TARGET, objectives=ALL_OBJECTIVES).evaluate([space.decode(child)])
    np.testing.assert_allclose(got.values, want.values, rtol=1e-12, atol=0)


def test_vector_scorer_rejects_objectives_that_need_the_arch(space: nas.Space) -> None:
    class Blocks(Objective):
        kind = "blocks"
        column = "blocks"

        def evaluate(self, archs):  # noqa: ANN001, ANN202
            return np.array([arch.num_blocks for arch in archs], dtype=np.float64)

    with pytest.raises(NasError, match="blocks"):
        VectorScorer(space, Scorer([Blocks()]))


def test_part_slots_cover_every_decision_once_per_part(space: nas.Space) -> None:
    parts = space.part_slots()
    assert len(parts) == 2 + len(space.decode(space.sample_vectors(np.random.default_rng(0), 1)[0]).stages)
    covered = np.concatenate(parts)
    assert sorted(set(covered.tolist())) == list(range(space.num_slots))
