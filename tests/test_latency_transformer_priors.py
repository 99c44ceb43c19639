"""Issue 26: the Xeon attention and softmax / norm / GELU coefficients set from kernels timed here
(bench/xeon_transformer_ratios.py), and how Core ML places attention on the iPhone 12's Neural Engine."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from nas.cli import main
from nas.cost import profile_module
from nas.errors import ConfigError
from nas.latency import get_target
from nas.latency.kinds import KINDS
from nas.latency.optable import build_table
from nas.latency.provenance import coefficient_sources, measured_names

ROOT = Path(__file__).resolve().parents[1]
TRANSFORMER_GROUPS = ("compute_efficiency.bmm", "compute_efficiency.special")


def _bench():
    path = ROOT / "bench" / "xeon_transformer_ratios.py"
    spec = importlib.util.spec_from_file_location("xeon_transformer_ratios", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the module runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(get_target("xeon").settings))
def test_xeon_attention_and_special_groups_are_set_from_local_measurement_not_priors(name: str) -> None:
    setting = get_target("xeon").setting(name)
    sources = coefficient_sources(setting)
    assert set(TRANSFORMER_GROUPS) <= set(sources.measured)
    assert not set(TRANSFORMER_GROUPS) & set(sources.priors)
    # Not fitted, so the values priced are the hand-set ones, and the block says how and when.
    for coefficient in TRANSFORMER_GROUPS:
        assert setting.coefficients.get(coefficient) == setting.priors.get(coefficient)
    assert {"method", "command", "date", "machine", "factors"} <= set(setting.measurement)


def test_a_measured_coefficient_must_be_one_the_fit_leaves_out() -> None:
    setting = get_target("xeon").setting("onnxruntime_fp32")
    for wrong in ("compute_efficiency.conv", "compute_efficiency.nothing", "compute_efficiency.matmul"):
        with pytest.raises(ConfigError, match="measurement.coefficients"):
            measured_names(dataclasses.replace(setting, measurement={"coefficients": [wrong]}))
    assert measured_names(dataclasses.replace(setting, measurement=None)) == ()


def test_cli_targets_names_the_coefficients_set_from_local_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    measured = next(line for line in lines if "xeon/onnxruntime_fp32: set from local measurement" in line)
    assert "bench/xeon_transformer_ratios.py" in measured and "compute_efficiency.bmm" in measured
    priors = next(line for line in lines if "xeon/onnxruntime_fp32: priors, not fitted" in line)
    assert "compute_efficiency.special" not in priors and "compute_efficiency.vector" in priors


def test_the_bench_factor_recovers_a_known_efficiency_ratio() -> None:
    """Probes timed exactly as a setting computes them whose bmm and special groups run at half the linear layers'
    compute efficiency give factors of one half."""
    bench = _bench()
    xeon = get_target("xeon").setting("pytorch_fp32")
    # No per-kernel constant: it would add the same microseconds to a probe at either efficiency.
    setting = dataclasses.replace(xeon, coefficients=xeon.coefficients.replace_values({"kernel_us": 1e-9}))
    linear = setting.coefficients.get("compute_efficiency.pwconv")  # linear layers run as pwconv (shared_kernels)
    halved = setting.coefficients.replace_values({f"compute_efficiency.{group}": linear / 2
                                                  for group in bench.REFERENCE_GROUP})
    every = bench.probes()
    groups = [bench._group(probe) for probe in every]
    timed = [bench.model_us(probe, setting, bench.compute_only(halved)) for probe in every]
    for group in bench.REFERENCE_GROUP:
        found = bench.factors(setting, group, every, groups, timed)
        assert found == pytest.approx([0.5] * groups.count(group), rel=1e-4)


class _Scores(nn.Module):
    """Attention scores with a scale and an additive bias, then a softmax: the element-wise ops follow the product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2) * 0.125 + 1.0
        return scores.softmax(-1)


@pytest.mark.parametrize("name", ["coreml_predict", "coreml_ane"])
def test_core_ml_fuses_the_attention_scores_scale_and_bias_into_their_product(name: str) -> None:
    table = build_table(profile_module(_Scores(), (4, 49, 32)).ops, get_target("iphone12").setting(name),
                        by_unit=False)
    kinds = [KINDS[index] for index in table.kind]
    assert kinds == ["bmm", "elementwise", "elementwise", "softmax"]
    assert list(table.launch) == [1.0, 0.0, 0.0, 1.0]
    # The Xeon runtimes list no such rule: the same ops launch one by one there.
    xeon = build_table(profile_module(_Scores(), (4, 49, 32)).ops, get_target("xeon").setting(), by_unit=False)
    assert list(xeon.launch) == [1.0, 1.0, 1.0, 1.0]
