"""Scaled-dot-product attention: the trace marks each call's ops, and a setting that fuses it prices one kernel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.cost import profile_module
from nas.latency import get_target, list_targets
from nas.latency.fused_attention import FUSED_ATTENTION_NAME, fused_attention_calls
from nas.latency.kinds import KINDS, kind_of
from nas.latency.local import _setting_entry
from nas.latency.measure import Protocol
from nas.latency.optable import build_table

HEADS, TOKENS, HEAD_DIM = 2, 16, 8


class _TwoCalls(nn.Module):
    """Two attention calls between ordinary ops; ``shape`` splits heads (4-D) or also windows (5-D)."""

    def __init__(self, shape: tuple[int, ...] = (1, HEADS, TOKENS, HEAD_DIM), value_dim: int = HEAD_DIM,
                 mask: bool = False):
        super().__init__()
        self.shape, self.value_dim, self.mask = shape, value_dim, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = (x * 2).reshape(self.shape)
        value = torch.cat([query] * (self.value_dim // HEAD_DIM), dim=-1)
        mask = torch.zeros(self.shape[-2], self.shape[-2], device=x.device) if self.mask else None
        out = F.scaled_dot_product_attention(query, query, value, attn_mask=mask)
        out = F.scaled_dot_product_attention(out[..., :HEAD_DIM] + 1, query, query)
        return out.relu()


def _ops(module: nn.Module) -> tuple[nas.cost.Op, ...]:
    return profile_module(module, (HEADS * TOKENS * HEAD_DIM,)).ops


def _fused(setting_name: str = "onnxruntime_fp32") -> nas.latency.Setting:
    return dataclasses.replace(get_target("xeon").setting(setting_name), fused_attention=True)


def test_the_trace_names_the_attention_call_each_op_runs_in() -> None:
    ops = _ops(_TwoCalls())
    calls = [op.attention_call for op in ops]
    assert set(calls) == {0, 1, 2}
    first, second = ([op for op in ops if op.attention_call == call] for call in (1, 2))
    assert [op.name for op in first].count("aten.bmm") == 2 and [op.name for op in second].count("aten.bmm") == 2
    assert any(op.op_class == "softmax" for op in first)
    outside = [op.name for op in ops if not op.attention_call]
    assert "aten.mul" in outside and "aten.relu" in outside and "aten.bmm" not in outside
    assert max(i for i, op in enumerate(ops) if op.attention_call == 1) < min(
        i for i, op in enumerate(ops) if op.attention_call == 2)


def test_an_arch_marks_its_attention_calls_and_a_cnn_has_none() -> None:
    vit = nas.profile(nas.zoo.get("deit_tiny")).ops
    marked = [op for op in vit if op.attention_call]
    assert marked and {op.name for op in marked} >= {"aten.bmm"}
    assert all(op.name != "aten.bmm" for op in vit if not op.attention_call)
    assert not any(op.attention_call for op in nas.profile(nas.zoo.get("poolformer_s12")).ops)


def test_a_fusing_setting_prices_each_4d_call_as_one_launch_without_the_scores() -> None:
    ops = _ops(_TwoCalls())
    plain = build_table(ops, get_target("xeon").setting("onnxruntime_fp32"), by_unit=False)
    fused = build_table(ops, _fused(), by_unit=False)
    kernels = [op for op in ops if op.attention_call]
    scores_bytes = 4 * HEADS * TOKENS * TOKENS
    assert KINDS.index("softmax") in plain.kind and KINDS.index("softmax") not in fused.kind
    bmm = fused.kind == KINDS.index("bmm")
    assert bmm.sum() == 2 and np.all(fused.launch[bmm] == 1.0)
    assert len(plain) - len(fused) == sum(1 for op in kernels if kind_of(op)) - 2
    tensor = 4 * HEADS * TOKENS * HEAD_DIM  # q, k, v and the output each have this many bytes
    assert np.all(fused.bytes[bmm] == 4 * tensor) and np.all(fused.bytes[bmm] < scores_bytes + 4 * tensor)
    products = plain.flops[plain.kind == KINDS.index("bmm")]  # padded to the channel tile as the kernel is
    assert fused.flops[bmm].sum() == pytest.approx(products.sum())
    assert plain.launch.sum() - fused.launch.sum() == len(plain) - len(fused)


def test_the_fused_kernel_reads_the_mask_once() -> None:
    fused = build_table(_ops(_TwoCalls(mask=True)), _fused(), by_unit=False)
    bmm = fused.bytes[fused.kind == KINDS.index("bmm")]
    tensor = 4 * HEADS * TOKENS * HEAD_DIM
    assert bmm[0] == 4 * tensor + 4 * TOKENS * TOKENS and bmm[1] == 4 * tensor


def test_5d_calls_fail_the_cpu_flash_kernels_shape_check_and_run_op_by_op() -> None:
    ops = _ops(_TwoCalls(shape=(1, HEADS, 2, TOKENS // 2, HEAD_DIM)))
    plain = build_table(ops, get_target("xeon").setting("onnxruntime_fp32"), by_unit=False)
    fused = build_table(ops, _fused(), by_unit=False)
    assert (fused.kind == KINDS.index("softmax")).sum() == 2
    assert np.array_equal(fused.kind, plain.kind) and np.array_equal(fused.bytes, plain.bytes)


def test_a_value_dim_unlike_the_querys_fails_the_head_dim_check() -> None:
    ops = _ops(_TwoCalls(value_dim=2 * HEAD_DIM))  # the first call only; the second is fused
    fused = build_table(ops, _fused(), by_unit=False)
    assert (fused.kind == KINDS.index("softmax")).sum() == 1 and (fused.kind == KINDS.index("bmm")).sum() == 3


def test_the_kernel_carries_the_cpu_kernels_name() -> None:
    ops = _ops(_TwoCalls())
    kernels = [op for op in fused_attention_calls(ops).values() if op is not None]
    assert sum(op.flops for op in kernels) == sum(op.flops for op in ops if op.name == "aten.bmm")
    assert [op.name for op in kernels] == [FUSED_ATTENTION_NAME] * 2
    assert all(op.op_class == "attention" and op.out_shapes == ((1, HEADS, TOKENS, HEAD_DIM),) for op in kernels)


def test_packaged_settings_do_not_fuse_and_price_marked_ops_as_unmarked() -> None:
    ops = nas.profile(nas.zoo.get("deit_tiny")).ops
    unmarked = [dataclasses.replace(op, attention_call=0) for op in ops]
    for target in list_targets():
        if target == "local":
            continue
        for setting in get_target(target).settings.values():
            assert not setting.fused_attention
            assert np.array_equal(build_table(ops, setting, by_unit=True).bytes,
                                  build_table(unmarked, setting, by_unit=True).bytes)


def test_only_the_local_eager_torch_setting_fuses() -> None:
    def entry(runtime: str) -> dict:
        return _setting_entry(Protocol(runtime=runtime), "cpu", "a cpu", {"torch": "2", "onnxruntime": "1"})

    assert entry("torch")["fused_attention"] is True
    assert entry("onnxruntime")["fused_attention"] is False
