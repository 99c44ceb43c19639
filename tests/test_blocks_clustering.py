"""Token clustering and reconstruction (arXiv:2210.01035) on a zoo isotropic model: exactness and pricing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import nas
from nas.arch import TokenClustering
from nas.blocks.clustering import ClusteredRun, TokenClusterer
from nas.build import plan
from nas.errors import ConfigError, NasError
from nas.space import load_space
from nas.supernet.elastic import Layouts
from tests.conftest import seeded_generator


def _clustered(arch: nas.Arch, clustering: TokenClustering) -> nas.Arch:
    return arch.replace(stages=(dataclasses.replace(arch.stages[0], clustering=clustering),))


def test_cluster_count_equal_to_token_count_is_the_plain_model() -> None:
    arch = nas.Arch.load("tests/tiny/mixer_attention.yaml")  # 8x8 tokens and a class token
    clustered = _clustered(arch, TokenClustering(depth=1, grid=8, temperature=1e-3))
    torch.manual_seed(0)
    plain = nas.build(arch).eval()
    model = nas.build(clustered).eval()
    model.load_state_dict(plain.state_dict())  # the trained model's checkpoint, as it is
    x = torch.randn(2, 3, 64, 64, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)


def test_reconstruction_returns_the_original_token_count() -> None:
    run = ClusteredRun(TokenClustering(depth=0, grid=3, neighbours=4), [torch.nn.Identity()], size=(6, 6),
                       prefix_tokens=1)
    x = torch.randn(2, 1 + 36, 8, generator=seeded_generator())
    centres, weights = run.cluster(x[:, 1:])
    assert centres.shape == (2, 9, 8) and weights.shape == (2, 36, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 36))  # each token a convex mix of its centres
    out = run(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, :1], x[:, :1])  # the class token passes through


def test_clustering_without_iterations_is_the_average_pool() -> None:
    clusterer = TokenClusterer(TokenClustering(depth=0, grid=2, iterations=0, neighbours=2), (4, 4))
    tokens = torch.randn(1, 16, 3, generator=seeded_generator())
    centres, _ = clusterer(tokens)
    expected = tokens.reshape(1, 2, 2, 2, 2, 3).mean((2, 4)).reshape(1, 4, 3)
    torch.testing.assert_close(centres, expected)


def test_clustering_reduces_the_predicted_latency_on_every_target() -> None:
    arch = nas.zoo.get("deit_base")
    clustered = _clustered(arch, TokenClustering(depth=4, grid=8))
    assert [unit.role for unit in plan(clustered).units].count("clustered") == 1
    for target in nas.latency.list_targets():
        before, after = (nas.latency.predict(item, target=target).latency_ms for item in (arch, clustered))
        assert after < before, target
        assert nas.latency.predict_many([clustered], target=target)[0] == pytest.approx(after)
    report = nas.cost.profile(clustered)
    assert report.macs < nas.cost.profile(arch).macs
    assert not [op.name for op in report.ops if op.op_class == "other"]  # every op of the layers has a class
    assert nas.cost.profile(clustered).params == nas.cost.profile(arch).params  # the layers have no parameters


def test_clustering_keeps_other_ids_and_round_trips() -> None:
    arch = nas.zoo.get("deit_tiny")
    clustered = _clustered(arch, TokenClustering(depth=6, grid=7))
    assert "clustering" not in arch.to_yaml()
    assert clustered.id != arch.id
    assert nas.Arch.from_yaml(clustered.to_yaml()) == clustered


@pytest.mark.parametrize(("clustering", "field"), [
    (TokenClustering(depth=12, grid=7), "depth"),
    (TokenClustering(depth=2, grid=15), "grid"),
    (TokenClustering(depth=2, grid=2, neighbours=5), "neighbours"),
    (TokenClustering(depth=2, grid=7, temperature=0.0), "temperature"),
])
def test_bad_clustering_is_refused_with_its_path(clustering: TokenClustering, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _clustered(nas.zoo.get("deit_tiny"), clustering)
    assert caught.value.path == f"stages[0].clustering.{field}"


def test_supernet_refuses_clustering() -> None:
    clustered = _clustered(nas.zoo.get("deit_tiny"), TokenClustering(depth=6, grid=7))
    with pytest.raises(NasError, match="clustering"):
        Layouts().of(clustered)


def test_a_clustered_model_saves_and_loads_its_own_weights() -> None:
    clustered = _clustered(nas.Arch.load("tests/tiny/mixer_attention.yaml"), TokenClustering(depth=0, grid=4))
    torch.manual_seed(0)
    model, copy = nas.build(clustered).eval(), nas.build(clustered).eval()
    copy.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=seeded_generator())
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))


def test_a_clustered_arch_is_no_point_of_a_space() -> None:
    space = load_space("isotropic")
    arch = nas.zoo.get("deit_tiny")
    assert space.contains(arch)[0]
    inside, why = space.contains(_clustered(arch, TokenClustering(depth=6, grid=7)))
    assert not inside and "clustering" in why
