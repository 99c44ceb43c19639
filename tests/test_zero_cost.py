"""nas.supernet.zero_cost: NASWOT, synflow and grad-norm on tiny nets."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import nas
from nas.errors import ConfigError, UnknownKindError
from nas.supernet.zero_cost import DEFAULT_PROXY, PROXIES, ZeroCostError, default_batch, score, score_archs, score_many

TINY = Path(__file__).parent / "tiny"
MIXERS = sorted(TINY.glob("mixer_*.yaml"))



def _batch(size: int = 8, resolution: int = 32, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size, channels, resolution, resolution, generator=generator)
    return images, torch.randint(0, 10, (size,), generator=generator)


def _at_32(path: Path) -> tuple[nas.Arch, tuple[torch.Tensor, torch.Tensor]]:
    arch = nas.Arch.load(path)
    try:
        return arch.with_resolution(32), _batch()
    except ConfigError:  # a kind whose tiny file does not fit 32 px runs at its own resolution
        return arch, _batch(resolution=arch.input.resolution)


@pytest.mark.parametrize("path", MIXERS, ids=[p.stem for p in MIXERS])
def test_every_proxy_is_finite_on_tiny_mixers(path):
    arch, batch = _at_32(path)
    scores = score_archs([arch], batch)
    assert set(scores) == set(PROXIES.names())
    for name, (value,) in scores.items():
        assert math.isfinite(value), f"{name} on {path.stem}: {value}"


@pytest.mark.parametrize("proxy", PROXIES.names())
def test_deterministic_for_a_seed_and_leaves_the_rng_alone(proxy):
    arch, batch = _at_32(TINY / "mixer_pooling.yaml")
    state = torch.random.get_rng_state()
    first = score(arch, batch, proxy=proxy, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert score(arch, batch, proxy=proxy, seed=0) == first
    assert score(arch, batch, proxy=proxy, seed=1) != first  # another initialisation


@pytest.mark.parametrize("proxy", PROXIES.names())
def test_scores_differ_between_clearly_different_nets(proxy):
    batch = _batch()
    pooling = score(_at_32(TINY / "mixer_pooling.yaml")[0], batch, proxy=proxy)
    attention = score(_at_32(TINY / "mixer_attention.yaml")[0], batch, proxy=proxy)
    assert pooling != pytest.approx(attention, rel=1e-3)


def test_synflow_grows_with_width():
    arch = nas.Arch.load(TINY / "mixer_pooling.yaml").with_resolution(32)
    wide = arch.replace(stem=dataclasses.replace(arch.stem, dim=arch.stem.dim * 2),
                        stages=tuple(dataclasses.replace(stage, dim=stage.dim * 2) for stage in arch.stages))
    assert score(wide, _batch(), proxy="synflow") > score(arch, _batch(), proxy="synflow") + 0.3


def test_naswot_separates_distinct_inputs_from_identical_ones():
    arch = _at_32(TINY / "mixer_convnext.yaml")[0]
    images, _ = _batch()
    assert math.isfinite(score(arch, images, proxy="naswot"))
    assert score(arch, images[:1].expand(8, -1, -1, -1), proxy="naswot") == float("-inf")  # singular kernel


def test_naswot_unfolds_windows_folded_into_the_batch():
    arch = nas.Arch.load(TINY / "mixer_efficientvit.yaml")  # at 64 px its 4x4 map runs as 2x2 windows of 3
    value = score(arch, _batch(resolution=64), proxy="naswot")
    assert math.isfinite(value) and value > 0


def test_module_is_not_changed_and_matches_score_archs():
    arch, batch = _at_32(TINY / "mixer_attention.yaml")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nas.build(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = {name: score(model, batch, proxy=name) for name in PROXIES.names()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert score_archs([model, arch], batch) == {name: [values[name], values[name]] for name in PROXIES.names()}


def test_grey_batch_builds_the_arch_with_one_channel():
    arch = _at_32(TINY / "mixer_pooling.yaml")[0]
    assert math.isfinite(score(arch, _batch(channels=1), proxy="grad_norm"))


def test_score_many_uses_bundled_images_at_each_arch_input():
    archs = [_at_32(TINY / "mixer_pooling.yaml")[0], nas.Arch.load(TINY / "mixer_convnext.yaml")]  # 32 and 64 px
    images, labels = default_batch(resolution=64, channels=3, batch_size=16, seed=0)
    assert images.shape == (16, 3, 64, 64) and len(set(labels.tolist())) > 3  # shuffled, several classes
    values = score_many(archs, seed=0)
    assert values[1] == score(archs[1], (images, labels), proxy=DEFAULT_PROXY, seed=0)
    expected = score_archs(archs, _batch(), proxies=["naswot"])["naswot"]
    assert score_many(archs, proxy="naswot", batch=_batch()) == expected


def test_errors():
    arch, batch = _at_32(TINY / "mixer_pooling.yaml")
    with pytest.raises(UnknownKindError, match="naswot"):
        score(arch, batch, proxy="nswot")
    with pytest.raises(ZeroCostError, match="labels"):
        score(arch, batch[0], proxy="grad_norm")
    with pytest.raises(ZeroCostError, match="at least 2"):
        score(arch, batch[0][:1], proxy="naswot")
    with pytest.raises(ZeroCostError, match="B x C x H x W"):
        score(arch, batch[0][0], proxy="synflow")
