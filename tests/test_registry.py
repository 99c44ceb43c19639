"""Registry-wide checks: every registered kind is exercised by a tiny arch, and every tiny arch
builds, runs, back-propagates into every parameter and builds on ``meta``."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.arch import ROLES, list_kinds
from nas.blocks.registry import register
from nas.errors import UnknownKindError
from tests.conftest import tiny_files

TINY = {path.stem: path for path in tiny_files()}


def _kinds_used(arch: nas.Arch) -> set[tuple[str, str]]:
    used = {("stem", arch.stem.kind), ("head", arch.head.kind)}
    for stage in arch.stages:
        if stage.downsample is not None:
            used.add(("downsample", stage.downsample.kind))
        for block in stage.blocks:
            used |= {("mixer", block.mixer.kind), ("ffn", block.ffn.kind), ("norm", block.norm.kind)}
    for component in (arch.stem, arch.head, *(s.downsample for s in arch.stages if s.downsample)):
        norm = getattr(component, "norm", None)
        if isinstance(norm, str):
            used.add(("norm", norm))
    return used


def test_every_registered_kind_has_a_tiny_arch() -> None:
    used: set[tuple[str, str]] = set()
    for path in TINY.values():
        used |= _kinds_used(nas.Arch.load(path))
    missing = [f"{role}:{kind}" for role in ROLES for kind in list_kinds(role) if (role, kind) not in used]
    assert not missing, f"kinds without a tiny arch in tests/tiny/: {missing}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_arch_forward_backward_meta(name: str) -> None:
    arch = nas.Arch.load(TINY[name])
    torch.manual_seed(0)
    model = nas.build(arch)
    resolution, channels = arch.input.resolution, arch.input.channels
    x = torch.randn(2, channels, resolution, resolution)
    out = model(x)
    num_classes = arch.head.num_classes  # type: ignore[attr-defined]
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    no_grad = [pname for pname, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"

    model.eval()
    with torch.no_grad():
        reference = model(x)
        again = model(x)
        maps = model.forward_features(x)
    assert torch.equal(reference, again)
    assert len(maps) == len(arch.stages) == len(model.feature_info)
    for feature, info in zip(maps, model.feature_info, strict=True):
        assert feature.shape[:2] == (2, info["num_chs"])
        assert feature.shape[-1] == resolution // info["reduction"]

    meta = nas.build(arch, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert meta(torch.empty(2, channels, resolution, resolution, device="meta")).shape == (2, num_classes)
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in model.parameters())


def test_duplicate_registration_raises() -> None:
    from nas.blocks.pooling import PoolingCfg

    with pytest.raises(ValueError, match="already registered"):
        register("mixer", "pooling", PoolingCfg)(type("Again", (), {}))


def test_reset_classifier(tiny_pooling: nas.Arch) -> None:
    model = nas.build(tiny_pooling)
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_kind_error_is_a_nas_error() -> None:
    with pytest.raises(UnknownKindError) as caught:
        nas.arch.config_type("head", "lineer")
    assert str(caught.value).startswith("unknown head kind 'lineer'; known: linear")
