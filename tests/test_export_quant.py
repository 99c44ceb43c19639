"""Int8 points as QDQ ONNX: onnxruntime runs them with int8 kernels and matches the fake-quantised torch model
within quantisation tolerance; formats ONNX cannot carry are refused, naming the block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
import nas.export as export_module
from nas.arch import Precision
from nas.blocks.fakequant import quantized_layers
from nas.cli import main
from nas.errors import NasError
from nas.export import export
from nas.qdq import check_onnx_precision, freeze_ranges, has_int8, int8_kernels, int8_tolerance
from tests.conftest import TINY_DIR

INT8 = Precision.from_spec("int8:channel")
AFFINE = Precision.from_spec("int8:channel/int8:affine")


def _with_block_precision(arch: nas.Arch, precisions: dict[tuple[int, int], Precision]) -> nas.Arch:
    """``arch`` with the blocks at ``(stage, block)`` set to the given precisions (the others unchanged)."""
    stages = tuple(dataclasses.replace(stage, blocks=tuple(
        dataclasses.replace(block, precision=precisions.get((s, b), block.precision))
        for b, block in enumerate(stage.blocks))) for s, stage in enumerate(arch.stages))
    return dataclasses.replace(arch, stages=stages)


def _reference(arch: nas.Arch, example: torch.Tensor) -> torch.nn.Module:
    """What an export without a checkpoint holds: ``build`` under seed 0, ranges fixed on the check input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nas.build(arch).eval()
    freeze_ranges(model, example)
    return model


def _run(path: Path, images: torch.Tensor) -> np.ndarray:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": images.numpy()})[0]


@pytest.mark.parametrize(("name", "precision"), [("mixer_pooling.yaml", INT8),  # convolutions
                                                 ("mixer_attention.yaml", INT8),  # linear layers on tokens
                                                 ("mixer_pooling.yaml", AFFINE)])  # activations with a zero point
def test_int8_qdq_export_runs_int8_kernels_and_matches_the_fake_quant_model(tmp_path: Path, name: str,
                                                                            precision: Precision) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    arch = nas.Arch.load(TINY_DIR / name).with_precision(precision)
    result = export(arch, tmp_path, format="onnx")
    graph = onnx.load(result.files[0]).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops

    example = export_module._check_input(arch, 2)
    model = _reference(arch, example)
    with torch.no_grad():
        quantized = model(example).numpy()
    output = _run(result.files[0], example)
    tolerance = int8_tolerance(quantized)
    assert np.abs(output - quantized).max() <= tolerance
    assert result.max_abs_diff == pytest.approx(float(np.abs(output - quantized).max()), abs=1e-6)
    # the batch stays dynamic: one image gives that image's logits
    assert np.abs(_run(result.files[0], example[:1]) - quantized[:1]).max() <= tolerance
    # every int8 layer runs as an int8 kernel, none dequantised to a float one
    kernels = int8_kernels(result.files[0].read_bytes())
    assert sum(kernels.values()) == len(list(quantized_layers(model))) > 0
    assert any("onnxruntime runs int8 kernels" in note for note in result.notes)
    assert any("not calibrated" in note for note in result.notes)


def test_mixed_precision_export_quantises_only_the_int8_blocks(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    arch = nas.Arch.load(TINY_DIR / "mixer_convnext.yaml")
    mixed = _with_block_precision(arch, {(0, 0): INT8})
    assert has_int8(mixed) and not has_int8(arch)
    result = export(mixed, tmp_path, format="onnx")
    model = _reference(mixed, export_module._check_input(mixed, 2))
    layers = list(quantized_layers(model))
    assert layers and all(name.startswith("stages.0.0.") for name, _ in layers)
    assert sum(int8_kernels(result.files[0].read_bytes()).values()) == len(layers)


def test_a_calibrated_checkpoint_keeps_its_ranges(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    arch = nas.Arch.load(TINY_DIR / "mixer_pooling.yaml").with_precision(Precision.from_spec("int8"))
    example = export_module._check_input(arch, 2)
    model = _reference(arch, example)
    _, layer = next(iter(quantized_layers(model)))
    layer.input_quantizer.set_range(-0.5, 0.5)  # narrower than the check input's: the export must keep it
    result = export(arch, tmp_path, format="onnx", checkpoint=model.state_dict())
    assert not any("not calibrated" in note for note in result.notes)
    with torch.no_grad():
        expected = model(example).numpy()
    assert np.abs(_run(result.files[0], example) - expected).max() <= int8_tolerance(expected)


@pytest.mark.parametrize(("spec", "field", "named"), [
    ("int4", "weights", "int4"), ("fp8_e4m3", "weights", "fp8_e4m3"), ("int8/fp16", "activations", "fp16")])
def test_a_format_onnx_cannot_carry_is_refused_naming_the_block(tmp_path: Path, spec: str, field: str,
                                                                named: str) -> None:
    arch = _with_block_precision(nas.Arch.load(TINY_DIR / "mixer_pooling.yaml"), {(0, 1): Precision.from_spec(spec)})
    message = rf"stages\[0\]\.blocks\[1\]\.precision\.{field}: {named} cannot be exported to ONNX"
    with pytest.raises(NasError, match=message):
        check_onnx_precision(arch)
    with pytest.raises(NasError, match=message):
        export(arch, tmp_path / "out", format="onnx")
    assert not (tmp_path / "out").exists()
    export(arch, tmp_path / "config", format="yaml")  # the config file carries any precision


def test_cli_refuses_an_int4_point_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = nas.Arch.load(TINY_DIR / "mixer_pooling.yaml").with_precision(Precision.from_spec("int4"))
    source = tmp_path / "int4.yaml"
    arch.save(source)
    assert main(["export", str(source), "--format", "onnx", "--out", str(tmp_path / "out")]) != 0
    assert "stages[0].blocks[0].precision.weights: int4 cannot be exported to ONNX" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("calibrate", [False, True])
def test_torch_export_carries_an_int8_point(tmp_path: Path, calibrate: bool) -> None:
    """torch.export traces a quantiser whether or not it is calibrated: it branches on a Python flag, not
    on a buffer's value (which would be a data-dependent guard torch.export refuses)."""
    arch = nas.Arch.load(TINY_DIR / "mixer_pooling.yaml").with_precision(INT8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nas.build(arch).eval()
    if calibrate:
        for _, layer in quantized_layers(model):
            layer.input_quantizer.set_range(-0.5, 0.5)
    result = export(arch, tmp_path, format="torch", checkpoint=model.state_dict())
    program = torch.export.load(str(result.files[0]))
    example = export_module._check_input(arch, 1)
    with torch.no_grad():
        assert torch.equal(program.module()(example), model(example))
