"""Issue 26: the transformer calibration families, the CNN / transformer split of the validation figures,
which coefficients rest on priors, and a finite, positive price for every zoo model on every setting."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import nas
from nas.cli import main
from nas.latency import get_target, list_targets, predict_many
from nas.latency.calibration.architectures import ARCHITECTURES, family_architectures
from nas.latency.calibration.measurements import load_measurements
from nas.latency.calibration.models import REFERENCE_MODELS
from nas.latency.calibration.validate import figures, is_close
from nas.latency.provenance import coefficient_sources, compact_names
from nas.latency.targets import LOCAL

TARGETS = tuple(name for name in list_targets() if name != LOCAL)
SETTINGS = [(target, setting) for target in TARGETS for setting in get_target(target).settings]


def test_the_issue_26_families_have_reference_models_with_published_params() -> None:
    wanted = {"twins", "pvtv2", "nextvit", "tinyvit", "tome", "repnext"}
    models = [REFERENCE_MODELS.get(name) for name in REFERENCE_MODELS.names()]
    models = [model for model in models if model.family in wanted]
    assert {model.family for model in models} == wanted
    # Each one's parameters are checked against this figure by test_latency_reference.py's registry-wide test.
    assert all(model.params_m is not None and model.source for model in models)


def test_a_family_is_a_transformer_family_when_its_models_attend() -> None:
    rows = [row for row in load_measurements("iphone12") if row.family in {"nextvit", "repnext", "mobileone",
                                                                            "fastvit"}]
    assert family_architectures(rows) == {"fastvit": "transformer", "mobileone": "cnn", "nextvit": "transformer",
                                          "repnext": "cnn"}


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_stored_cnn_and_transformer_figures_reproduce_from_stored_predictions(target: str, setting: str) -> None:
    validation = get_target(target).setting(setting).validation
    architectures = validation["architectures"]
    assert set(architectures) == set(validation["families"])
    assert set(architectures.values()) <= set(ARCHITECTURES)
    if validation["lofo"] is None:
        assert validation["lofo_by_architecture"] == {}
        return
    family_of = {row.line: row.family for row in load_measurements(target)}
    stored = validation["lofo_by_architecture"]
    for architecture in ARCHITECTURES:
        rows = [row for row in validation["predictions"] if architectures[family_of[row[0]]] == architecture]
        if not rows:
            assert architecture not in stored
            continue
        recomputed = figures([row[1] for row in rows], [row[2] for row in rows])
        assert recomputed.rows == stored[architecture]["rows"]
        assert is_close(recomputed.spearman_rho, stored[architecture]["spearman_rho"], tolerance=1e-4)
        assert is_close(recomputed.mape_pct, stored[architecture]["mape_pct"], tolerance=0.01)


def test_the_default_v100_and_iphone12_settings_are_validated_on_transformer_families() -> None:
    for target in ("v100", "iphone12"):
        validation = get_target(target).setting().validation
        transformers = [family for family, kind in validation["architectures"].items() if kind == "transformer"]
        assert len(transformers) >= 3, (target, transformers)
        assert validation["lofo_by_architecture"]["transformer"]["rows"] > 0


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_every_zoo_model_has_a_finite_positive_price(target: str, setting: str) -> None:
    archs = [nas.zoo.get(name) for name in nas.zoo.list_zoo()]
    latencies = predict_many(archs, target=target, setting=setting)
    bad = [(arch.name, value) for arch, value in zip(archs, latencies, strict=True)
           if not (math.isfinite(value) and value > 0)]
    assert not bad


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_coefficients_are_fitted_priors_or_unused_exactly_once(target: str, setting: str) -> None:
    chosen = get_target(target).setting(setting)
    sources = coefficient_sources(chosen)
    names = chosen.priors.names()
    assert sorted([*sources.fitted, *sources.priors, *sources.unused, *sources.measured]) == sorted(names)
    assert set(sources.fitted) == set(chosen.free) - set(sources.unused)


def test_the_zcu104_cpu_fallback_for_softmax_norms_and_attention_rests_on_priors() -> None:
    for setting in get_target("zcu104").settings.values():
        sources = coefficient_sources(setting)
        assert {"norm", "softmax", "bmm"} <= set(sources.fallback_kinds)
        assert sources.fallback_device == "a53"
        # softmax and norms: the special group, launched as vector ops; attention matmuls: bmm, launched as matmul.
        assert {"host.compute_efficiency.special", "host.memory_efficiency.special", "host.launch_us.vector",
                "host.compute_efficiency.bmm", "host.memory_efficiency.bmm", "host.launch_us.matmul",
                "switch_us"} <= set(sources.fallback_priors)
        assert not any(name.startswith("host.") for name in sources.fitted)


def test_a_setting_never_fitted_is_all_priors() -> None:
    setting = dataclasses.replace(get_target("v100").setting(), coefficients=None)
    sources = coefficient_sources(setting)
    assert sources.fitted == () and sources.priors and "compute_efficiency.conv" in sources.priors


def test_shared_kernel_efficiencies_are_unused_not_priors() -> None:
    sources = coefficient_sources(get_target("v100").setting("paddle_trt_fp32"))
    assert {"compute_efficiency.matmul", "memory_efficiency.matmul"} <= set(sources.unused)
    assert "compute_efficiency.matmul" not in sources.priors


def test_compact_names_stars_only_complete_groups() -> None:
    every = ("a.x", "a.y", "b.x", "b.y", "h.a.x", "h.k", "top")
    assert compact_names(("a.x", "a.y", "b.x", "h.a.x", "h.k", "top"), every) == ["a.*", "b.x", "h.*", "top"]
    assert compact_names(("h.a.x",), every) == ["h.a.*"]


def test_cli_targets_prints_the_cnn_transformer_split_and_the_fallback_priors(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "CNN" in header and "transformer" in header and "fitted/priors" in header
    assert "zcu104/vitis_ai_2_5: ops on the fallback processor a53" in out
    assert "priced on priors only: host.*, switch_us" in out
    v100 = next(line for line in out.splitlines() if "paddle_trt_fp32" in line)
    split = get_target("v100").setting().validation["lofo_by_architecture"]
    assert f"{split['transformer']['spearman_rho']:.3f} / {split['transformer']['mape_pct']:.1f}" in v100


def test_cli_targets_json_carries_the_split_and_the_coefficient_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "--json"]) == 0
    rows = {(row["target"], row["setting"]): row for row in json.loads(capsys.readouterr().out)}
    zcu104 = rows["zcu104", "vitis_ai_2_5"]
    assert "host.compute_efficiency.special" in zcu104["coefficients"]["fallback"]["priors"]
    # The V100's fallback is Paddle's own kernels, fitted on the transformer rows: nothing there rests on priors.
    assert rows["v100", "paddle_trt_fp32"]["coefficients"]["fallback"] == {
        "device": "v100", "kinds": ["bmm", "softmax", "norm", "matmul"], "priors": []}
    assert set(rows["v100", "paddle_trt_fp32"]["validation"]["lofo_by_architecture"]) == set(ARCHITECTURES)
    assert np.isfinite(rows["iphone12", "coreml_predict"]["validation"]["lofo_by_architecture"]["cnn"]["mape_pct"])


def test_cli_predict_says_how_much_of_a_zcu104_transformer_rests_on_priors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "efficientformer_l1", "--target", "zcu104"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("priors:"))
    share = float(line.split("(")[1].split("%")[0])
    assert 0 < share <= 100 and "a53" in line
    assert main(["predict", "efficientformer_l1", "--target", "v100"]) == 0
    assert "priors:" not in capsys.readouterr().out
