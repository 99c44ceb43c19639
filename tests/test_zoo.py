"""Every zoo model matches its published parameter count (1%) and MACs (3%)."""

from __future__ import annotations

import pytest

import nas

PARAMS_TOLERANCE = 0.01
MACS_TOLERANCE = 0.03

NAMES = nas.zoo.list_zoo()


def test_zoo_is_populated() -> None:
    assert len(NAMES) >= 1
    assert all(nas.zoo.get(name).name == name for name in NAMES), "a zoo file's name must match its file name"


@pytest.mark.parametrize("name", NAMES)
def test_matches_published_figures(name: str) -> None:
    arch = nas.zoo.get(name)
    assert arch.published is not None, f"{name}: no published figures"
    assert arch.published.source.strip(), f"{name}: published figures need a source"
    report = nas.cost.profile(arch)
    model = nas.build(arch, device="meta")
    params = sum(p.numel() for p in model.parameters())
    assert report.params == params
    params_error = params / 1e6 / arch.published.params_m - 1
    assert abs(params_error) <= PARAMS_TOLERANCE, (
        f"{name}: {params / 1e6:.3f}M params vs published {arch.published.params_m}M ({100 * params_error:+.2f}%)")
    if arch.published.gmacs is None:  # the source gives no MACs; its notes must say so
        assert "no MACs" in (arch.published.notes or ""), f"{name}: gmacs is null but the notes do not say why"
        return
    macs = nas.cost.comparable_macs(report, arch.published)
    macs_error = macs / 1e9 / arch.published.gmacs - 1
    assert abs(macs_error) <= MACS_TOLERANCE, (
        f"{name}: {macs / 1e9:.3f} GMACs vs published {arch.published.gmacs} ({100 * macs_error:+.2f}%)")


def test_unknown_zoo_name_lists_close_names() -> None:
    with pytest.raises(nas.UnknownKindError, match=r"unknown zoo model 'poolformer_s13'; known: poolformer_s\d\d, "):
        nas.zoo.get("poolformer_s13")
