"""Issue 26 on the V100: PaddleClas's static-shape TensorRT engines leave attention to Paddle's own kernels.

``predictors/v100.yaml`` (``paddle_trt_fp32``, its fallback's notes give the sources) places attention
products, softmax, norms and linear layers on a fallback processor that is the V100 itself: Paddle's CUDA
kernels, issued op by op, each run of them an engine boundary. A CNN's convolutions stay in the engine.
"""

from __future__ import annotations

import numpy as np

import nas
from nas.latency import get_target, predict
from nas.latency.kinds import KINDS
from nas.latency.optable import OpTable, build_table

FALLBACK_KINDS = ("bmm", "softmax", "norm", "matmul")


def _table(name: str, setting: str = "paddle_trt_fp32") -> OpTable:
    return build_table(nas.profile(nas.zoo.get(name)).ops, get_target("v100").setting(setting), by_unit=True)


def _kinds(table: OpTable, host: bool) -> set[str]:
    return {KINDS[index] for index in table.kind[table.host == host]}


def test_the_trt_setting_runs_attention_on_paddle_kernels_of_the_same_gpu() -> None:
    setting = get_target("v100").setting("paddle_trt_fp32")
    assert setting.fallback is not None and setting.fallback.device is setting.device
    assert set(setting.fallback.kinds) == set(FALLBACK_KINDS)


def test_a_vit_leaves_the_engine_for_attention_norms_and_linear_layers_only() -> None:
    table = _table("deit_tiny")
    assert _kinds(table, host=True) == set(FALLBACK_KINDS)
    assert _kinds(table, host=False).isdisjoint(FALLBACK_KINDS) and "elementwise" in _kinds(table, host=False)
    assert table.switches.sum() > 0 and np.all(table.switches % 2 == 0)  # each block leaves and re-enters


def test_a_cnn_leaves_the_engine_for_its_classifier_only() -> None:
    table = _table("resnet50")
    assert _kinds(table, host=True) == {"matmul"} and table.host.sum() == 1
    assert table.switches.sum() == 2 and "conv" in _kinds(table, host=False)


def test_the_engine_boundaries_are_priced_and_the_other_v100_setting_has_none() -> None:
    vit = predict(nas.zoo.get("deit_tiny"), target="v100")
    assert vit.breakdown["transfer"] > 0
    amp = _table("deit_tiny", "pytorch_amp_b2048")
    assert not amp.host.any() and amp.switches.sum() == 0


def test_paddle_issues_its_ops_dearer_than_the_engine() -> None:
    coefficients = get_target("v100").setting().fitted
    assert coefficients.host is not None and coefficients.switch_us > 0
    for group in ("matmul", "vector"):  # attention products and linear layers; softmax and norms
        assert coefficients.host.launch_us[group] > coefficients.main.launch_us[group]


def test_group_norms_leave_the_engine_too() -> None:
    # op_teller.cc refuses group_norm without dynamic shapes, as it does multihead_matmul.
    assert "norm" in _kinds(_table("poolformer_s12"), host=True)
