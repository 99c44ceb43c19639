"""OFQ's query-key reparameterisation (``qk_merged``): the plain kind's outputs in float, a merged weight on the
integer grid when quantised, the merged path priced, ``nas train --qkr`` end to end, and its errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nas
from nas.arch import NumberFormat, Precision
from nas.blocks.attention import Attention, AttentionCfg
from nas.blocks.common import set_training_progress
from nas.blocks.fakequant import Quantizer, apply_precision, integer_range, quantized_layers
from nas.blocks.ofq import AnnealedQuantizer, QatOptions, StatisticalQuantizer, configure_qat, finish_qat
from nas.blocks.qkr import MergeableQkv, MergedQkv, merge_query_key
from nas.blocks.swin import WindowAttention, WindowAttentionCfg
from nas.build import build
from nas.cli import main
from nas.errors import NasError
from nas.latency import predict, predict_many
from nas.quantization.analyze import layer_statistics
from nas.quantization.calibrate import CalibrationSettings, quantize_model
from nas.supernet import ProxyScale, Supernet, proxy
from tests.conftest import TINY_DIR

INT8 = Precision.from_spec("int8:channel")
DIM, HEADS, TOKENS = 32, 4, 16


def _attention_pair(**options: object) -> tuple[Attention, Attention]:
    """A plain global attention and a ``qk_merged`` one holding the same weights."""
    torch.manual_seed(0)
    cfg = AttentionCfg(heads=HEADS, **options)  # type: ignore[arg-type]
    plain = Attention(cfg, dim=DIM, size=(4, 4))
    merged = Attention(dataclasses.replace(cfg, qk_merged=True), dim=DIM, size=(4, 4))
    merged.load_state_dict(plain.state_dict())
    return plain, merged


def _merged_in_float(mixer: torch.nn.Module) -> MergedQkv:
    """Make ``mixer``'s ``qkv`` a :class:`MergedQkv` whose quantisers are the identity: the merged path in float."""
    qkv = mixer.qkv
    qkv.quantize_to(NumberFormat("int8"), NumberFormat("fp32"))
    qkv.weight_quantizer = Quantizer(NumberFormat("fp32"), channels=qkv.weight_quantizer.channels)
    assert isinstance(qkv, MergedQkv)
    return qkv


# ---------------------------------------------------------------------------
# float: the plain kind


@pytest.mark.parametrize("options", [{}, {"qkv_bias": False}, {"clip_zeta": 1.1, "clip_gamma": -0.05, "gated": True}])
def test_merged_attention_keeps_the_plain_parameters_and_outputs_in_float(options: dict[str, object]) -> None:
    plain, merged = _attention_pair(**options)
    assert list(merged.state_dict()) == list(plain.state_dict())
    assert isinstance(merged.qkv, MergeableQkv)
    x = torch.randn(2, TOKENS, DIM)
    assert torch.equal(merged(x), plain(x))  # float weights: the plain computation itself
    _merged_in_float(merged)
    torch.testing.assert_close(merged(x), plain(x), rtol=1e-5, atol=1e-5)  # the merged logits, unrounded


def test_merged_window_attention_with_its_bias_and_shift_mask_equals_the_plain_one_in_float() -> None:
    torch.manual_seed(0)
    cfg = WindowAttentionCfg(heads=2, window=4, shift=2)
    plain = WindowAttention(cfg, dim=16, size=(8, 8))
    merged = WindowAttention(dataclasses.replace(cfg, qk_merged=True), dim=16, size=(8, 8))
    merged.load_state_dict(plain.state_dict())
    _merged_in_float(merged)
    x = torch.randn(2, 64, 16)
    torch.testing.assert_close(merged(x), plain(x), rtol=1e-5, atol=1e-5)


def test_the_option_is_written_only_when_set_so_every_existing_arch_keeps_its_id() -> None:
    deit = nas.zoo.get("deit_tiny")
    assert "qk_merged" not in AttentionCfg().to_dict()
    merged = merge_query_key(deit.with_precision(INT8))
    assert merged.stages[0].blocks[0].mixer.to_dict()["qk_merged"] is True
    assert merged.id != deit.with_precision(INT8).id
    assert nas.Arch.from_yaml(merged.to_yaml()).id == merged.id


# ---------------------------------------------------------------------------
# integer weights: the merged matrix on the grid


def test_quantised_logits_come_from_a_merged_weight_on_the_grid_of_rank_above_head_dim() -> None:
    plain, merged = _attention_pair()
    apply_precision(merged, Precision.from_spec("int4:channel/int8"))
    qkv = merged.qkv
    assert isinstance(qkv, MergedQkv) and dict(quantized_layers(merged)).keys() == {"qkv", "proj"}
    weight = qkv.weight_quantizer(qkv.deployed_weight()).detach()
    assert weight.shape == ((HEADS + 1) * DIM, DIM)
    steps = weight / qkv.weight_quantizer.qparams(qkv.deployed_weight())[0][:, None]
    low, high = integer_range(NumberFormat("int4"))
    assert torch.equal(steps.round(), steps.round().clamp(low, high))
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # every entry on int4's grid, row by row
    head_dim = DIM // HEADS
    for head in range(HEADS):
        block = weight[head * DIM:(head + 1) * DIM]
        assert torch.linalg.matrix_rank(block) > head_dim  # a product of head_dim-row matrices could not be

    x = torch.randn(2, TOKENS, DIM)
    with torch.no_grad():  # the logits by hand, from that weight and the input quantised once
        quantized = qkv.input_quantizer(x)
        projected = F.linear(quantized, weight, qkv.deployed_bias())
        merged_rows, value = projected.split([HEADS * DIM, DIM], dim=-1)
        logits = merged_rows.unflatten(-1, (HEADS, DIM)).transpose(1, 2) @ quantized.unsqueeze(1).transpose(-1, -2)
        mixed = (logits * head_dim ** -0.5).softmax(-1) @ value.unflatten(-1, (HEADS, head_dim)).transpose(1, 2)
        expected = merged.proj(mixed.transpose(1, 2).flatten(-2))
        torch.testing.assert_close(merged(x), expected)
        assert (merged(x) - plain(x)).abs().max() > 0  # and it is not the float model


def test_non_integer_weights_quantise_the_plain_rows_unmerged() -> None:
    plain, merged = _attention_pair()
    apply_precision(plain, Precision.from_spec("fp8_e4m3"))
    apply_precision(merged, Precision.from_spec("fp8_e4m3"))
    assert not isinstance(merged.qkv, MergedQkv)
    x = torch.randn(2, TOKENS, DIM)
    assert torch.equal(merged(x), plain(x))


def test_statsq_covers_the_merged_product_and_annealing_leaves_it_alone() -> None:
    _, merged = _attention_pair()
    apply_precision(merged, INT8)
    assert configure_qat(merged, QatOptions(statsq=True)) == 2
    assert isinstance(merged.qkv.weight_quantizer, StatisticalQuantizer)
    scale, _ = merged.qkv.weight_quantizer.qparams(merged.qkv.deployed_weight())
    torch.testing.assert_close(scale, 2 * merged.qkv.deployed_weight().detach().abs().mean(1) / 127)
    _, annealed = _attention_pair()
    apply_precision(annealed, INT8)
    configure_qat(annealed, QatOptions(statsq=True, cga=0.5))
    assert isinstance(annealed.proj.weight_quantizer, AnnealedQuantizer)
    assert type(annealed.qkv.weight_quantizer) is StatisticalQuantizer


def test_finishing_qat_of_a_merged_model_keeps_its_outputs_and_a_build_of_its_arch_loads_it() -> None:
    arch = merge_query_key(nas.Arch.load(TINY_DIR / "mixer_attention.yaml").with_precision(INT8))
    torch.manual_seed(0)
    model = build(arch)
    configure_qat(model, QatOptions(statsq=True, cga=0.5))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    set_training_progress(model, 0.9)
    model(images).sum().backward()
    for _, layer in quantized_layers(model):  # the latent q and k rows train through the merged product
        if isinstance(layer, MergedQkv):
            dim = layer.in_features
            assert all(layer.weight.grad[rows].abs().sum() > 0 for rows in (slice(0, dim), slice(dim, 2 * dim)))
    model.eval()
    with torch.no_grad():
        trained = model(images)
        finish_qat(model)
        assert torch.equal(model(images), trained)
        fresh = build(arch).eval()
        fresh.load_state_dict(model.state_dict())
        assert torch.equal(fresh(images), trained)
    assert all(type(layer.weight_quantizer) is Quantizer for _, layer in quantized_layers(model))


@pytest.mark.parametrize("name", ["mixer_attention.yaml", "mixer_window_attention.yaml"])
def test_the_supernet_shares_the_plain_weights_with_a_merged_subnet(tmp_path: Path, name: str) -> None:
    arch = merge_query_key(nas.Arch.load(TINY_DIR / name).with_precision(INT8))
    (tmp_path / name).write_text(arch.to_yaml())
    scale = ProxyScale(width=0.5, resolution=32)
    supernet = Supernet.create(str(tmp_path / name), scale=scale, scan=1).eval()
    small = proxy(arch, width=scale.width, resolution=scale.resolution)
    built = build(small).eval()
    built.load_state_dict(supernet.extract(arch).state_dict())
    assert any(isinstance(layer, MergedQkv) for _, layer in quantized_layers(built))
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(supernet(images, arch), built(images), rtol=0, atol=1e-5)


def test_ptq_calibrates_the_merged_weight_and_analysis_lists_the_merged_layer() -> None:
    arch = merge_query_key(nas.Arch.load(TINY_DIR / "mixer_attention.yaml").with_precision(INT8))
    float_arch = arch.with_precision(Precision())
    torch.manual_seed(0)
    model = build(float_arch).eval()
    images = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) for seed in range(2)]
    settings = CalibrationSettings(batches=2, weights="mse", noisy_bias=True)
    quantized = quantize_model(model, float_arch, INT8, images, settings).module
    qkv = quantized.stages[0][0][0].fn.qkv
    assert isinstance(qkv, MergedQkv) and qkv.weight_quantizer.is_calibrated and qkv.input_quantizer.is_calibrated
    with torch.no_grad():
        reference = model(images[0])
        assert (quantized(images[0]) - reference).abs().max() < 0.1 * reference.abs().max()
    table = layer_statistics(quantized, images, batches=1)
    assert list(table["type"]).count("MergedQkv") == arch.num_blocks


# ---------------------------------------------------------------------------
# pricing


def _block_ops(arch: nas.Arch) -> list[tuple[str, tuple[tuple[int, ...], ...], int, str]]:
    return [(op.name, op.in_shapes, op.flops, op.precision) for op in nas.profile(arch).ops
            if op.unit == "stages[0].blocks[0]"]


def test_the_merged_path_is_priced_only_when_the_weights_are_integer() -> None:
    source = nas.Arch.load(TINY_DIR / "mixer_attention.yaml")
    stage = source.stages[0]
    blocks = tuple(dataclasses.replace(block, mixer=dataclasses.replace(block.mixer, heads=HEADS))
                   for block in stage.blocks)
    arch = source.replace(stages=(dataclasses.replace(stage, blocks=blocks),))
    merged = merge_query_key(arch.with_precision(INT8))
    merged_float = merged.with_precision(Precision())
    assert merged_float.stages[0].blocks[0].mixer.qk_merged
    assert _block_ops(merged_float) == _block_ops(arch)  # float: the plain ops
    plain_int8, merged_int8 = nas.profile(arch.with_precision(INT8)), nas.profile(merged)
    assert plain_int8.params == merged_int8.params
    dim = arch.stages[0].dim
    tokens = 1 + (arch.input.resolution // 8) ** 2  # patch 8 and a class token
    head_dim = dim // HEADS
    projection = tokens * dim * ((HEADS + 1) * dim - 3 * dim)  # C -> (heads + 1) C instead of C -> 3C
    logits = HEADS * tokens * tokens * (dim - head_dim)  # inner dimension C instead of head_dim
    assert merged_int8.macs - plain_int8.macs == arch.num_blocks * (projection + logits)
    ops = [op for op in merged_int8.ops if op.unit == "stages[0].blocks[0]" and op.op_class == "matmul"]
    assert ops[0].in_shapes[2] == (dim, (HEADS + 1) * dim) and ops[1].in_shapes[1][-2:] == (dim, tokens)
    assert {op.precision for op in ops} == {"int8"}


def test_latency_targets_price_the_merged_path_alike_one_by_one_and_in_batches() -> None:
    plain = nas.zoo.get("deit_tiny").with_precision(INT8)
    merged = merge_query_key(plain)
    one = predict(merged, target="xeon").latency_ms
    assert one != predict(plain, target="xeon").latency_ms
    np.testing.assert_allclose(predict_many([merged, plain], target="xeon"),
                               [one, predict(plain, target="xeon").latency_ms], rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------
# nas train --qkr


def _small_data(path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 4
    np.savez(path, x=(rng.random((48, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8), y=labels)
    return path


def test_train_with_qkr_resumes_only_with_it_records_it_in_the_arch_and_exports_a_merged_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _small_data(tmp_path / "small.npz")
    argv = ["train", str(TINY_DIR / "mixer_attention.yaml"), "--data", str(data), "--proxy-width", "0.5",
            "--resolution", "16", "--batch-size", "16", "--epochs", "1", "--precision", "int8:channel", "--qkr",
            "--statsq", "--json", "--out", str(tmp_path / "run")]
    assert main([*argv, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main([*[arg for arg in argv if arg != "--qkr"], "--resume"]) == 2  # the arch recorded is merged
    assert "qk_merged" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0
    arch = nas.Arch.load(tmp_path / "run" / "arch.yaml")
    assert all(block.mixer.qk_merged for block in arch.stages[0].blocks)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    dim = arch.stages[0].dim
    assert checkpoint["model"]["stages.0.0.0.fn.qkv.weight_quantizer.scale"].shape == ((2 + 1) * dim,)
    exported = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    model = build(arch)
    model.load_state_dict(exported["state_dict"])
    assert sum(isinstance(layer, MergedQkv) for _, layer in quantized_layers(model)) == arch.num_blocks


@pytest.mark.parametrize(("arch", "precision", "message"), [
    (str(TINY_DIR / "mixer_attention.yaml"), [], "no attention block of tiny_attention quantises its weights"),
    (str(TINY_DIR / "mixer_attention.yaml"), ["--precision", "fp16"], "integer weight formats"),
    ("poolformer_s12", ["--precision", "int8"], "poolformer_s12 has no block whose mixer takes it"),
])
def test_qkr_is_refused_without_integer_weights_or_attention_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], arch: str, precision: list[str], message: str) -> None:
    argv = ["train", arch, "--proxy-width", "0.125", "--max-steps", "1", "--json", *precision, "--qkr"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(NasError, match="--qkr"):
        merge_query_key(nas.Arch.load(TINY_DIR / "mixer_attention.yaml"))


def test_an_int8_merged_model_exports_to_onnx_and_torch_within_their_tolerances(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from nas.export import export

    arch = merge_query_key(nas.Arch.load(TINY_DIR / "mixer_attention.yaml").with_precision(INT8))
    for fmt in ("onnx", "torch"):  # each checked against the eager model (int8 tolerance for QDQ), or refused
        result = export(arch, tmp_path / fmt, format=fmt)
        assert result.files[0].exists() and result.max_abs_diff is not None
