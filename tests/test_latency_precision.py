"""Precision per op: the cost op list names each op's number format, and every target prices it.

A quantised block is traced as its float module and its ops annotated (``nas.op_precision``); a target runs
each format where its device file says (``formats``): the ZCU104's DPU computes int8 only and sends every
float format to its A53 fallback, Xeon runs int8 and bf16 at their own peaks, the iPhone's Neural Engine
computes everything in fp16, and the V100 refuses bf16 and fp8. Float32 models are priced as before.
"""

from __future__ import annotations

import dataclasses

import pytest

import nas
from nas.arch import NumberFormat, Precision
from nas.blocks.registry import ffn_parts
from nas.build import plan
from nas.cost import profile, profile_module
from nas.latency import predict, predict_many
from nas.latency.optable import UnsupportedOpError, UnsupportedPrecisionError, build_table
from nas.latency.targets import get_target
from nas.op_precision import compute_format, op_format
from nas.search.objectives import LatencyObjective

INT8 = Precision.from_spec("int8")
FP16 = Precision.from_spec("fp16")


@pytest.fixture(scope="module")
def resnet() -> nas.Arch:
    """A conv-heavy zoo model (every MAC of ResNet-50 is a convolution but the classifier's)."""
    return nas.zoo.get("resnet50")


def _with_block(arch: nas.Arch, stage: int, index: int, precision: Precision) -> nas.Arch:
    blocks = list(arch.stages[stage].blocks)
    blocks[index] = dataclasses.replace(blocks[index], precision=precision)
    stages = list(arch.stages)
    stages[stage] = dataclasses.replace(stages[stage], blocks=tuple(blocks))
    return dataclasses.replace(arch, stages=tuple(stages))


def _fmt(spec: str) -> NumberFormat:
    return NumberFormat.parse(spec, "test")


def test_compute_format_rules() -> None:
    assert compute_format(_fmt("int8"), _fmt("int8")) == "int8"
    assert compute_format(_fmt("int4"), _fmt("int8")) == "int8"
    assert compute_format(_fmt("int4"), _fmt("int4")) == "int4"
    assert compute_format(_fmt("int8:channel"), _fmt("fp16")) == "fp16"  # weight-only compression
    assert compute_format(_fmt("fp16"), _fmt("int8")) == "fp16"
    assert compute_format(_fmt("int4"), _fmt("fp32")) == "fp32"
    assert compute_format(_fmt("fp8_e4m3"), _fmt("fp8_e5m2")) == "fp8_e5m2"  # a tie goes to the activations
    mixed = Precision("int8", "fp16")
    assert op_format("conv", "aten.convolution", mixed, "block") == "fp16"
    assert op_format("matmul", "aten.bmm", Precision("int4", "int8"), "block") == "int8"  # activation x activation
    assert op_format("norm", "aten.native_layer_norm", Precision("int4", "int8"), "block") == "int8"


def test_the_cost_report_names_each_ops_format(resnet: nas.Arch) -> None:
    float_report = profile(resnet)
    assert {op.precision for op in float_report.ops} == {"fp32"}
    mixed = _with_block(resnet, 1, 0, INT8)
    report = profile(mixed)
    assert [dataclasses.replace(op, precision="fp32") for op in report.ops] == list(float_report.ops)
    inside = [op for op in report.ops if op.unit == "stages[1].blocks[0]"]
    assert inside and {op.precision for op in inside} == {"int8"}
    assert {op.precision for op in report.ops if op.unit != "stages[1].blocks[0]"} == {"fp32"}
    frame = report.to_frame()
    assert list(frame.loc[frame["unit"] == "stages[1].blocks[0]", "precision"].unique()) == ["int8"]


def test_the_ffn_override_changes_only_the_ffn_ops() -> None:
    arch = nas.zoo.get("poolformer_s12").with_resolution(64)
    overridden = _with_block(arch, 0, 1, Precision(ffn_weights="int8", ffn_activations="int8"))
    ops = [op for op in profile(overridden).ops if op.unit == "stages[0].blocks[1]"]
    unit = next(unit for unit in plan(arch).units if unit.path == "stages[0].blocks[1]")
    module = unit.make(device="meta")
    parts = [name for name, _ in ffn_parts(module)]
    assert parts
    reference = profile_module(module, unit.in_shape).ops  # each op attributed to its submodule
    assert [op.name for op in reference] == [op.name for op in ops]
    in_ffn = [any(op.unit == part or op.unit.startswith(part + ".") for part in parts) for op in reference]
    assert any(in_ffn) and not all(in_ffn)
    assert [op.precision for op in ops] == ["int8" if inside else "fp32" for inside in in_ffn]


def test_float_models_are_priced_as_before(resnet: nas.Arch) -> None:
    for target in ("zcu104", "xeon", "v100", "iphone12"):
        before = predict(resnet, target=target)
        again = predict(resnet.with_precision(Precision()), target=target)
        assert again.latency_ms == before.latency_ms and again.breakdown == before.breakdown
        assert not any("[" in key for key in before.breakdown)


def test_a_conv_model_is_faster_at_int8_than_at_fp32_on_the_zcu104(resnet: nas.Arch) -> None:
    int8 = resnet.with_precision(INT8)
    default = predict(int8, target="zcu104")
    assert default.latency_ms == predict(resnet, target="zcu104").latency_ms  # Vitis AI deploys a float model at int8
    kept = predict(resnet, target="zcu104", setting="vitis_ai_2_5+fp32")  # float32 kept: the A53 runs it
    assert default.latency_ms < kept.latency_ms
    assert predict(int8, target="zcu104", setting="vitis_ai_2_5+fp32").latency_ms < kept.latency_ms
    assert any(key.endswith("[fp32 on a53]") for key in kept.breakdown)


def test_a_conv_model_is_faster_at_int8_than_at_fp32_on_xeons_int8_setting(resnet: nas.Arch) -> None:
    int8 = resnet.with_precision(INT8)
    for setting in ("tensorflow_int8+fp32", "pytorch_int8+fp32", "onnxruntime_int8+fp32", "onnxruntime_fp32"):
        assert predict(int8, target="xeon", setting=setting).latency_ms < \
            predict(resnet, target="xeon", setting=setting).latency_ms, setting
    breakdown = predict(int8, target="xeon", setting="tensorflow_int8").breakdown
    assert "conv [int8]" in breakdown and "pwconv [int8]" in breakdown


def test_a_non_int8_block_on_the_zcu104_runs_on_the_fallback_and_says_so(resnet: nas.Arch) -> None:
    mixed = _with_block(resnet, 2, 1, FP16)
    setting = get_target("zcu104").setting()
    report = profile(mixed)
    table = build_table(report.ops, setting, by_unit=True)
    segment = table.segment_names.index("stages[2].blocks[1]")
    in_block = table.segment == segment
    assert table.host[in_block].all() and not table.host[~in_block & (table.kind <= 3)].any()
    assert table.switches[segment] >= 2
    prediction = predict(mixed, target="zcu104")
    assert prediction.latency_ms > predict(resnet, target="zcu104").latency_ms
    fallback = {key for key in prediction.breakdown if key.endswith("[fp16 on a53]")}
    assert any(key.startswith("conv") for key in fallback) and prediction.breakdown["transfer"] > 0


def test_the_neural_engine_computes_integer_formats_in_fp16(resnet: nas.Arch) -> None:
    float_ms = predict(resnet, target="iphone12").latency_ms
    int8 = predict(resnet.with_precision(INT8), target="iphone12")
    assert int8.latency_ms == pytest.approx(float_ms, rel=1e-12)
    assert "conv [int8 as fp16]" in int8.breakdown
    with pytest.raises(UnsupportedPrecisionError, match="fp32"):
        predict(resnet, target="iphone12", setting="coreml_predict+fp32")


def test_fp8_and_bf16_are_refused_on_the_v100_naming_the_op_and_format(resnet: nas.Arch) -> None:
    for spec in ("fp8_e4m3", "fp8_e5m2", "bf16"):
        arch = _with_block(resnet, 0, 0, Precision.from_spec(spec))
        with pytest.raises(UnsupportedPrecisionError, match=rf"aten\.convolution .* stages\[0\]\.blocks\[0\] runs "
                                                            rf"at {spec}"):
            predict(arch, target="v100")
        with pytest.raises(UnsupportedOpError):  # the batch path refuses it too (search marks it infeasible)
            predict_many([arch], target="v100")
    int4 = predict(resnet.with_precision(Precision.from_spec("int4")), target="v100")
    assert int4.latency_ms == predict(resnet.with_precision(INT8), target="v100").latency_ms  # DP4A int8
    assert "conv [int4 as int8]" in int4.breakdown


def test_the_batch_predictor_prices_mixed_precision_like_predict(resnet: nas.Arch) -> None:
    archs = [_with_block(resnet, 1, 0, INT8), _with_block(resnet, 2, 3, FP16), resnet.with_precision(INT8), resnet]
    for target, setting in (("zcu104", None), ("xeon", "tensorflow_int8"), ("xeon", None), ("v100", None),
                            ("iphone12", None), ("zcu104", "vitis_ai_2_5+fp32")):
        want = [predict(arch, target=target, setting=setting).latency_ms for arch in archs]
        got = predict_many(archs, target=target, setting=setting)
        assert got == pytest.approx(want, rel=1e-12, abs=0), (target, setting)


def test_search_objectives_price_in_the_chosen_setting(resnet: nas.Arch) -> None:
    archs = [resnet, resnet.with_precision(INT8)]
    objective = LatencyObjective(target="xeon", setting="tensorflow_int8+fp32")
    got = objective.evaluate(archs)
    assert list(got) == pytest.approx([predict(arch, target="xeon", setting="tensorflow_int8+fp32").latency_ms
                                       for arch in archs], rel=1e-12)
    assert got[1] < got[0] and "xeon/tensorflow_int8+fp32" in objective.label
    with pytest.raises(nas.errors.UnknownKindError, match="tensorflow_int8"):
        LatencyObjective(target="xeon", setting="tensorflow_int9")
