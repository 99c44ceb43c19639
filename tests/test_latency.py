"""Latency predictors: targets load, predictions are monotone and deterministic, stored figures reproduce."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch import nn

import nas
from nas.cli import main
from nas.errors import ConfigError, NasError, UnknownKindError
from nas.latency import UnsupportedOpError, get_target, list_targets, predict, predict_many
from nas.latency.calibration.dataset import rows_for
from nas.latency.calibration.validate import figures_from_stored, is_close
from nas.latency.kinds import KINDS
from nas.latency.targets import LOCAL, load_target
from tests.conftest import TINY_DIR

# Every packaged target, so a new one is tested as it lands. Read at collection, before conftest points NAS_HOME
# at a temporary folder: a ``local`` target the user profiled is left out.
TARGETS = tuple(name for name in list_targets() if name != LOCAL)
SETTINGS = [(target, setting) for target in TARGETS for setting in get_target(target).settings]


@pytest.fixture(scope="module")
def tiny() -> nas.Arch:
    return nas.Arch.load(TINY_DIR / "mixer_pooling.yaml")


def _with_stage(arch: nas.Arch, index: int, **changes: object) -> nas.Arch:
    stages = list(arch.stages)
    stages[index] = dataclasses.replace(stages[index], **changes)
    return arch.replace(stages=tuple(stages))


# -- targets ------------------------------------------------------------------------------------


def test_the_four_targets_are_packaged() -> None:
    assert {"iphone12", "v100", "xeon", "zcu104"} <= set(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_target_facts_have_sources_and_settings_their_regime(name: str) -> None:
    target = get_target(name)
    assert target.default_setting in target.settings
    for device in target.devices.values():
        assert device.sources and device.peak_tops and device.memory_bandwidth_gbs > 0
    for setting in target.settings.values():
        assert {"device", "runtime", "precision"} <= set(setting.calibration)
        assert setting.free, "a setting fits at least one coefficient"


def test_unknown_target_lists_the_known_ones_closest_first() -> None:
    with pytest.raises(UnknownKindError) as error:
        get_target("v10")
    message = str(error.value)
    assert "unknown target 'v10'" in message
    assert message.index("v100") < message.index("zcu104")


def test_unknown_setting_lists_the_known_ones() -> None:
    with pytest.raises(UnknownKindError, match="paddle_trt_fp32"):
        predict(nas.zoo.get("resnet50"), target="v100", setting="tensorrt")


def test_a_bad_target_file_names_file_line_and_field(tmp_path) -> None:
    text = get_target("iphone12").path.read_text().replace("memory_bandwidth_gbs: 34.1", "memory_bandwidth_gbs: -1")
    path = tmp_path / "iphone12.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"iphone12\.yaml:\d+: devices\.a14_ane\.memory_bandwidth_gbs"):
        load_target(path)


# -- predictions --------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_more_depth_or_width_never_predicts_faster(tiny: nas.Arch, target: str, setting: str) -> None:
    base = predict(tiny, target=target, setting=setting).latency_ms
    deeper = _with_stage(tiny, 1, blocks=tiny.stages[1].blocks * 2)
    wider = _with_stage(tiny, 1, dim=48)
    assert predict(deeper, target=target, setting=setting).latency_ms >= base
    assert predict(wider, target=target, setting=setting).latency_ms >= base


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_batch_8_is_never_faster_per_call_than_batch_1(tiny: nas.Arch, target: str, setting: str) -> None:
    one = predict(tiny, target=target, setting=setting, batch=1).latency_ms
    eight = predict(tiny, target=target, setting=setting, batch=8).latency_ms
    assert eight >= one


@pytest.mark.parametrize("target", TARGETS)
def test_prediction_is_deterministic_and_breakdown_adds_up(target: str) -> None:
    arch = nas.zoo.get("efficientformer_l1")
    first = predict(arch, target=target)
    second = predict(arch, target=target)
    assert first == second
    assert first.latency_ms > 0
    assert sum(first.breakdown.values()) == pytest.approx(first.latency_ms, rel=1e-9)
    assert all(value >= 0 for value in first.breakdown.values())
    assert set(first.breakdown) <= {*KINDS, "fixed", "input", "launch_bound", "transfer"}


def test_predict_many_matches_predict(tiny: nas.Arch) -> None:
    archs = [tiny, _with_stage(tiny, 1, dim=32), nas.zoo.get("deit_tiny"), tiny]
    for target in TARGETS:
        many = predict_many(archs, target=target)
        single = np.array([predict(arch, target=target).latency_ms for arch in archs])
        np.testing.assert_allclose(many, single, rtol=1e-9)
    assert predict_many([], target="v100").shape == (0,)


def test_predict_works_on_a_plain_module() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(16, 10))
    result = predict(net, (3, 32, 32), target="xeon")
    assert result.latency_ms > 0 and result.target == "xeon"
    # Batch norm and ReLU are fused into the convolution: no launch, no traffic, only their arithmetic.
    assert result.breakdown["conv"] > 10 * (result.breakdown["batchnorm"] + result.breakdown["act"])
    with pytest.raises(NasError, match="input_shape"):
        predict(net, target="xeon")
    with pytest.raises(NasError, match="input_shape"):
        predict(nas.zoo.get("resnet50"), (3, 224, 224), target="xeon")
    with pytest.raises(NasError, match="batch"):
        predict(net, (3, 32, 32), target="xeon", batch=0)


class _Attention(nn.Module):
    """Layer norm, attention (two activation matmuls and a softmax) and GELU: what a DPU cannot run."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(32)
        self.qkv = nn.Linear(32, 96)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        return self.act((q @ k.transpose(-1, -2)).softmax(-1) @ v)


def test_zcu104_models_the_cpu_fallback_explicitly() -> None:
    result = predict(_Attention(), (49, 32), target="zcu104")
    for kind in ("norm", "softmax", "bmm", "act_special", "transfer"):
        assert result.breakdown[kind] > 0, kind
    assert get_target("zcu104").setting().fallback.device.name == "a53"


class _Unclassed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.lgamma()  # an aten op nas.cost does not class


def test_an_op_the_target_cannot_run_is_rejected_not_priced_at_zero() -> None:
    with pytest.raises(UnsupportedOpError, match=r"zcu104/vitis_ai_2_5: aten\.lgamma \(other\)"):
        predict(_Unclassed(), (3, 16, 16), target="zcu104")
    assert predict(_Unclassed(), (3, 16, 16), target="v100").breakdown["other"] > 0


class _Spectral(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:])


@pytest.mark.parametrize("target", ["v100", "xeon", "iphone12", "zcu104"])
def test_ffts_are_priced_on_every_target_and_run_on_the_zcu104_cpu(target: str) -> None:
    result = predict(_Spectral(), (3, 16, 16), target=target)
    assert result.breakdown["fft"] > 0 and "other" not in result.breakdown
    assert ("transfer" in result.breakdown) == (target == "zcu104")  # the DPU has no FFT: the A53 runs it


def test_shared_kernels_price_linear_layers_with_the_1x1_convolution_efficiencies() -> None:
    from nas.cost import profile_module
    from nas.latency.opmodel import evaluate, features, params_of
    from nas.latency.optable import build_table

    setting = get_target("v100").setting("paddle_trt_fp32")
    assert setting.shared_kernels == {"matmul": "pwconv"}
    assert not any(name.endswith("efficiency.matmul") for name in setting.free)
    assert "launch_us.matmul" in setting.free  # launches stay per launch group
    report = profile_module(nn.Sequential(nn.Flatten(), nn.Linear(512, 512)), (512, 1, 1), batch=64)
    table = build_table(report.ops, setting, by_unit=False)
    feats = features(table, setting)
    # Linear layers run on Paddle's own kernels (the setting's fallback, predictors/v100.yaml), whose coefficients
    # are the host.* set: the sharing holds there as on the engine.
    assert table.host.all() and "matmul" in setting.fallback.kinds

    def latency(name: str, scale: float) -> float:
        value = setting.fitted.get(name)
        return float(evaluate(feats, params_of(setting.fitted.replace_values({name: value * scale})))[0])

    base = latency("host.compute_efficiency.pwconv", 1.0)
    assert latency("host.compute_efficiency.matmul", 0.01) == pytest.approx(base)  # its own coefficient is unused
    assert latency("host.compute_efficiency.pwconv", 0.01) > 2 * base


@pytest.mark.parametrize(("shared", "message"), [("{matmul: gemm}", "unknown compute group 'gemm'"),
                                                  ("{matmul: matmul}", "another group's own kernels"),
                                                  ("{matmul: pwconv, pwconv: conv}", "another group's own kernels")])
def test_a_bad_shared_kernels_entry_is_named(tmp_path, shared: str, message: str) -> None:
    text = get_target("v100").path.read_text().replace("shared_kernels: {matmul: pwconv}", f"shared_kernels: {shared}")
    path = tmp_path / "v100.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"v100\.yaml:\d+: settings\.paddle_trt_fp32\.shared_kernels.*{message}"):
        load_target(path)


@pytest.mark.parametrize("published", ["[]", "[ModelBench, 14]", "{text: ModelBench}"])
def test_a_bad_published_filter_is_named(tmp_path, published: str) -> None:
    text = get_target("iphone12").path.read_text().replace("measurement_tool: [ModelBench, XCode 14]",
                                                           f"measurement_tool: {published}")
    path = tmp_path / "iphone12.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"iphone12\.yaml:\d+: settings\.coreml_predict\.calibration\.published"):
        load_target(path)


def test_a_published_filter_with_alternatives_takes_the_rows_of_each() -> None:
    chosen = get_target("iphone12").setting("coreml_predict")
    tools = {row.published_columns["measurement_tool"].split()[0] for row in rows_for(chosen)}
    assert tools == {"ModelBench", "XCode", "Xcode"}  # the filter ignores case: Next-ViT's "Xcode 14.0" is XCode 14
    others = rows_for(get_target("iphone12").setting("coreml_ane"))
    assert others and not {row.line for row in others} & {row.line for row in rows_for(chosen)}


# -- validation figures -------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_stored_validation_figures_reproduce_from_stored_predictions(target: str, setting: str) -> None:
    chosen = get_target(target).setting(setting)
    assert chosen.coefficients is not None, f"{chosen.label} was never fitted"
    validation = chosen.validation
    assert validation["rows"] >= 1 and validation["families"]
    if validation["lofo"] is None:
        assert len(validation["families"]) == 1
        return
    recomputed = figures_from_stored(validation)
    stored = validation["lofo"]
    assert recomputed.rows == stored["rows"] == validation["rows"]
    assert is_close(recomputed.spearman_rho, stored["spearman_rho"], tolerance=1e-4)
    for name in ("mape_pct", "within_10_pct", "within_20_pct"):
        assert is_close(getattr(recomputed, name), stored[name], tolerance=0.01), name


@pytest.mark.slow
def test_leave_one_family_out_refit_reproduces_the_stored_predictions() -> None:
    from nas.latency.calibration.dataset import dataset_for
    from nas.latency.calibration.validate import validate

    setting = get_target("iphone12").setting()
    report = validate(dataset_for(setting))
    stored = {line: (measured, held_out) for line, measured, held_out in setting.validation["predictions"]}
    assert len(report.predictions) == len(stored)
    for line, measured, held_out in report.predictions:
        assert measured == pytest.approx(stored[line][0], rel=1e-5)
        assert held_out == pytest.approx(stored[line][1], rel=1e-5)


# -- command line ---------------------------------------------------------------------------------


def test_cli_predict_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "poolformer_s12", "--target", "iphone12", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"latency_ms", "target", "batch", "breakdown", "setting", "validation"} <= set(result)
    assert result["target"] == "iphone12" and result["batch"] == 1 and result["latency_ms"] > 0


def test_cli_predict_text_and_batch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(TINY_DIR / "mixer_pooling.yaml"), "--target", "v100", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "v100/paddle_trt_fp32, batch 4" in out and "predictor:" in out


def test_cli_unknown_target_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "poolformer_s12", "--target", "iphone13"]) == 2
    assert "unknown target 'iphone13'" in capsys.readouterr().err


def test_cli_targets_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(row["target"], row["setting"]) for row in rows} == set(SETTINGS)
    assert all(row["validation"] is not None for row in rows)


class _Dense(nn.Module):
    """Two DenseNet layers: each appends 4 channels to its input (the second concatenates the first's output)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(8, 4, 3, padding=1)
        self.second = nn.Conv2d(12, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x, self.first(x)), dim=1)
        return torch.cat((x, self.second(x)), dim=1)


def test_a_concatenation_of_a_concatenation_is_a_copy_where_concatenation_is_eliminated() -> None:
    from nas.cost import profile_module
    from nas.latency.optable import build_table

    setting = get_target("v100").setting("paddle_trt_fp32")
    assert "concat" in setting.eliminated
    table = build_table(profile_module(_Dense(), (8, 16, 16)).ops, setting, by_unit=False)
    concat = KINDS.index("concat")
    assert list(table.kind).count(concat) == 1  # the first concatenation is eliminated, the second copies its input
    copy = table.bytes[list(table.kind).index(concat)]
    assert copy == 2 * 4 * 16 * 16 * (12 + 4)  # reads and writes the 16 channels at float32


class _ConvActAdd(nn.Module):
    """conv + batch norm + activation, then a residual add: one kernel where everything fuses."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x))) + x


@pytest.mark.parametrize(("act", "kernels"), [(nn.ReLU(), 1), (nn.Hardswish(), 3), (nn.Hardswish(inplace=True), 3)])
def test_a_plugin_op_launches_its_own_kernel_and_nothing_fuses_into_it(act: nn.Module, kernels: int) -> None:
    from nas.cost import profile_module
    from nas.latency.optable import build_table

    setting = get_target("v100").setting("paddle_trt_fp32")
    assert setting.plugins == ("aten.hardswish",)
    table = build_table(profile_module(_ConvActAdd(act).eval(), (8, 16, 16)).ops, setting, by_unit=False)
    # ReLU and the add fuse into the convolution; hardswish runs alone, and the add, which fuses into an
    # activation, does not fuse into the plugin either: conv, hardswish, add.
    assert table.launch.sum() == kernels


@pytest.mark.parametrize("plugins", ["hardswish", "[hardswish]", "[aten.no_such_op]", "[3]"])
def test_a_bad_plugins_entry_is_named(tmp_path, plugins: str) -> None:
    text = get_target("v100").path.read_text().replace("plugins: [aten.hardswish]", f"plugins: {plugins}")
    path = tmp_path / "v100.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"v100\.yaml:\d+: settings\.paddle_trt_fp32\.plugins"):
        load_target(path)


def test_an_in_place_plugin_name_means_its_op(tmp_path) -> None:
    text = get_target("v100").path.read_text().replace("plugins: [aten.hardswish]", "plugins: [aten.hardswish_]")
    path = tmp_path / "v100.yaml"
    path.write_text(text)
    assert load_target(path).setting("paddle_trt_fp32").plugins == ("aten.hardswish",)
