"""The fast pricing path a search scores candidates with (``VectorScorer``: part tables over the batch unit
tables) gives ``nas.latency.predict``'s latency to 1e-12 relative on every target, for the metaformer zoo
models and random points, whatever order the points arrive in; a point the target cannot run is refused as
``predict`` refuses it. The batch unit tables price points with per-block precisions (mixed formats, FFN
overrides) as ``predict`` does too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nas
from nas.latency import list_targets, predict, predict_many
from nas.latency.optable import UnsupportedOpError
from nas.search import make_scorer
from nas.search.vector_scorer import VectorScorer


@pytest.fixture(scope="module")
def space() -> nas.Space:
    return nas.space.load_space("metaformer")


@pytest.fixture(scope="module")
def vectors(space: nas.Space) -> np.ndarray:
    """The space's zoo models, then random points (a part seen in one is reused by the others)."""
    zoo = [nas.zoo.get(name) for name in nas.zoo.list_zoo()]
    members = [space.encode(arch) for arch in zoo if space.contains(arch)[0]]
    assert len(members) >= 10
    return np.concatenate([np.stack(members), space.sample_vectors(np.random.default_rng(23), 12)])


@pytest.mark.parametrize("target", list_targets())
def test_the_vector_path_prices_like_predict_on_every_target(target: str, space: nas.Space,
                                                             vectors: np.ndarray) -> None:
    want: list[float | None] = []
    for vector in vectors:
        try:
            want.append(predict(space.decode(vector), target=target).latency_ms)
        except UnsupportedOpError:
            want.append(None)
    runnable = np.array([value is not None for value in want])
    assert runnable.sum() >= len(vectors) // 2
    fast = VectorScorer(space, make_scorer(target=target, objectives=("accuracy", "latency")))
    got = fast.evaluate_vectors(vectors[runnable]).metrics["latency_ms"]
    np.testing.assert_allclose(got, [value for value in want if value is not None], rtol=1e-12, atol=0)
    again = VectorScorer(space, make_scorer(target=target, objectives=("accuracy", "latency")))
    np.testing.assert_allclose(again.evaluate_vectors(vectors[runnable][::-1]).metrics["latency_ms"], got[::-1],
                               rtol=1e-12, atol=0)
    for vector in vectors[~runnable]:
        with pytest.raises(UnsupportedOpError):
            fast.evaluate_vectors(vector[None])


_FORMATS = ("int8", "int8:channel/int8:affine", "fp16", "bf16", "fp8_e4m3", "int4/int8", "int8/fp16")


def _mixed(arch: nas.Arch, rng: np.random.Generator) -> nas.Arch:
    """``arch`` with each block at a precision drawn from :data:`_FORMATS` (or float32), some FFNs apart."""
    stages = []
    for stage in arch.stages:
        blocks = []
        for block in stage.blocks:
            draw = int(rng.integers(len(_FORMATS) + 1))
            precision = nas.arch.Precision() if draw == len(_FORMATS) else \
                nas.arch.Precision.from_spec(_FORMATS[draw])
            if rng.random() < 0.3:
                precision = dataclasses.replace(precision, ffn_weights="int8", ffn_activations="int8")
            blocks.append(dataclasses.replace(block, precision=precision))
        stages.append(dataclasses.replace(stage, blocks=tuple(blocks)))
    return dataclasses.replace(arch, stages=tuple(stages))


@pytest.mark.parametrize("target", list_targets())
def test_the_batch_path_prices_mixed_precision_like_predict_on_every_target(target: str, space: nas.Space,
                                                                            vectors: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    archs = [_mixed(space.decode(vector), rng) for vector in vectors[::3]]
    want: list[float | None] = []
    for arch in archs:
        try:
            want.append(predict(arch, target=target).latency_ms)
        except UnsupportedOpError:
            want.append(None)
    assert any(value is not None for value in want)
    for arch, value in zip(archs, want, strict=True):
        if value is None:
            with pytest.raises(UnsupportedOpError):
                predict_many([arch], target=target)
        else:
            np.testing.assert_allclose(predict_many([arch], target=target), [value], rtol=1e-12, atol=0)
