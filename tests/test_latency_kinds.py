"""Large-kernel and dilated depthwise convolutions: their kind, the dilation ``nas.cost`` records, and the
settings that price them on the ``dwconv`` group's kernels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from torch import nn

from nas import zoo
from nas.cost import Op, profile, profile_module
from nas.latency import get_target, list_targets
from nas.latency.kinds import KINDS, LARGE_DEPTHWISE_KERNEL, kind_of
from nas.latency.opmodel import evaluate, features, params_of
from nas.latency.optable import build_table

SETTINGS = [(name, setting) for name in list_targets() for setting in get_target(name).settings]
OWN_GROUP = {("iphone12", "coreml_predict")}  # the settings whose data gives dwconv_large a group of its own


def _convs(report_ops: tuple[Op, ...]) -> list[Op]:
    return [op for op in report_ops if op.op_class == "conv"]


def test_depthwise_kind_follows_kernel_size_and_dilation() -> None:
    k = LARGE_DEPTHWISE_KERNEL
    model = nn.Sequential(nn.Conv2d(16, 16, k - 2, padding="same", groups=16),
                          nn.Conv2d(16, 16, k, padding="same", groups=16),
                          nn.Conv2d(16, 16, 3, padding="same", dilation=3, groups=16),
                          nn.Conv2d(16, 16, k, padding="same"))
    convs = _convs(profile_module(model, (16, 28, 28)).ops)
    assert [op.dilation for op in convs] == [1, 1, 3, 1]
    assert [kind_of(op) for op in convs] == ["dwconv", "dwconv_large", "dwconv_large", "conv"]


def test_zoo_convnext_and_van_trace_their_large_and_dilated_depthwise_convolutions() -> None:
    convnext = _convs(profile(zoo.get("convnext_tiny")).ops)
    depthwise = [op for op in convnext if kind_of(op) in ("dwconv", "dwconv_large")]
    assert depthwise and all(kind_of(op) == "dwconv_large" for op in depthwise)  # ConvNeXt's 7x7
    van = _convs(profile(zoo.get("van_b0")).ops)
    assert any(op.dilation > 1 and kind_of(op) == "dwconv_large" for op in van)  # VAN's dilated 7x7
    assert all(op.dilation == 1 for op in convnext)


@pytest.mark.parametrize(("target", "setting"), SETTINGS)
def test_dwconv_large_prices_as_dwconv_unless_the_setting_lists_its_group(target: str, setting: str) -> None:
    chosen = get_target(target).setting(setting)
    report = profile(zoo.get("convnext_tiny"))
    table = build_table(report.ops, chosen, by_unit=False)
    large, small = KINDS.index("dwconv_large"), KINDS.index("dwconv")
    assert (table.kind == large).any()
    relabelled = dataclasses.replace(table, kind=np.where(table.kind == large, small, table.kind))
    params = params_of(chosen.fitted)
    as_large = float(evaluate(features(table, chosen), params)[0])
    as_small = float(evaluate(features(relabelled, chosen), params)[0])
    if (target, setting) in OWN_GROUP:
        assert chosen.priors.main.leaders == {}
        assert "compute_efficiency.dwconv_large" in chosen.free
        assert as_large != pytest.approx(as_small)
    else:
        assert chosen.priors.main.leaders == {"dwconv_large": "dwconv"}
        assert not any("dwconv_large" in name for name in chosen.fitted.names())
        assert as_large == as_small
