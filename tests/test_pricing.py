"""The fast pricing path a search scores candidates with (``VectorScorer``: part tables over the batch unit
tables) gives ``nas.latency.predict``'s latency to 1e-12 relative on every target, for the metaformer zoo
models and random points, whatever order the points arrive in; a point the target cannot run is refused as
``predict`` refuses it.
"""

from __future__ import annotations

import numpy as np
import pytest

import nas
from nas.latency import list_targets, predict
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
