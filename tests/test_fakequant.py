"""Fake quantisation: exact on each format's grid, its ranges, rounding and saturation by definition, straight-through
gradients, quantised builds that keep the float parameters, and ``nas train --precision``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.arch import NumberFormat, Precision
from nas.blocks.common import set_training_progress
from nas.blocks.fakequant import (
    FLOAT_DTYPES,
    QuantizedLayer,
    Quantizer,
    apply_precision,
    fake_quantize,
    float_max,
    integer_range,
    quantized_layers,
)
from nas.blocks.ofq import QatOptions, configure_qat, finish_qat
from nas.blocks.registry import ffn_parts
from nas.build import build, plan
from nas.cli import main
from nas.errors import ConfigError
from nas.supernet import ModelJob, TrainSettings
from nas.supernet.jobs import precision_label
from nas.supernet.proxy import ProxyScale
from tests.conftest import tiny_files

INTEGER_FORMATS = ["int8", "int4", "int8:affine", "int4:affine"]
FP8 = ["fp8_e4m3", "fp8_e5m2"]


def _format(spec: str) -> NumberFormat:
    return NumberFormat.parse(spec, "test")


def _grid(fmt: NumberFormat) -> torch.Tensor:
    low, high = integer_range(fmt)
    return torch.arange(low, high + 1, dtype=torch.float32)


def _fp8_values(name: str) -> torch.Tensor:
    """Every finite value of an fp8 format, ascending, from its 256 bit patterns."""
    values = torch.arange(256, dtype=torch.uint8).view(FLOAT_DTYPES[name]).float()
    return values[torch.isfinite(values)].unique()


# ---------------------------------------------------------------------------
# the formats' definitions


def test_integer_grids_are_the_formats_definitions() -> None:
    assert integer_range(_format("int8")) == (-128, 127)
    assert integer_range(_format("int4")) == (-8, 7)
    assert integer_range(_format("int8:affine")) == (0, 255)
    assert integer_range(_format("int4:affine")) == (0, 15)
    assert float_max(_format("fp8_e4m3")) == 448.0 and float_max(_format("fp8_e5m2")) == 57344.0


@pytest.mark.parametrize("spec", INTEGER_FORMATS)
def test_integer_fake_quant_is_exact_at_every_grid_point(spec: str) -> None:
    fmt = _format(spec)
    scale, zero = torch.tensor(0.125), torch.tensor(3 if fmt.affine else 0, dtype=torch.int32)
    values = (_grid(fmt) - zero) * scale
    assert torch.equal(fake_quantize(values, fmt, scale, zero), values)


@pytest.mark.parametrize("spec", ["int8:channel", "int4:channel:affine"])
def test_per_channel_integer_fake_quant_is_exact_at_every_grid_point_of_each_channel(spec: str) -> None:
    fmt = _format(spec)
    grid = _grid(fmt)
    scale = torch.tensor([0.5, 0.0625, 2.0])
    zero = torch.tensor([1, 0, 5] if fmt.affine else [0, 0, 0], dtype=torch.int32)
    values = (grid[None, :] - zero[:, None]) * scale[:, None]  # channels along axis 0
    assert torch.equal(fake_quantize(values, fmt, scale, zero, axis=0), values)
    assert torch.equal(fake_quantize(values.T, fmt, scale, zero, axis=-1), values.T)


@pytest.mark.parametrize("spec", INTEGER_FORMATS)
def test_integer_rounding_is_half_to_even_and_the_ends_saturate(spec: str) -> None:
    fmt = _format(spec)
    low, high = integer_range(fmt)
    scale = torch.tensor(0.25)
    halves = torch.arange(low, high, dtype=torch.float32) + 0.5  # every midpoint between two grid points
    nearest_even = torch.where(halves.floor() % 2 == 0, halves.floor(), halves.ceil())
    assert torch.equal(fake_quantize(halves * scale, fmt, scale), nearest_even * scale)
    beyond = torch.tensor([low - 1.0, low - 1000.0, high + 1.0, high + 1000.0]) * scale
    assert torch.equal(fake_quantize(beyond, fmt, scale), torch.tensor([low, low, high, high]) * scale)


@pytest.mark.parametrize("name", FP8)
def test_fp8_fake_quant_is_exact_at_every_representable_value(name: str) -> None:
    fmt = _format(name)
    values = _fp8_values(name)
    assert torch.equal(fake_quantize(values, fmt, torch.tensor(1.0)), values)
    assert torch.equal(fake_quantize(values * 4, fmt, torch.tensor(4.0)), values * 4)  # scaled by a power of 2


@pytest.mark.parametrize("name", FP8)
def test_fp8_rounds_half_to_even_and_saturates_at_its_largest_finite_value(name: str) -> None:
    fmt = _format(name)
    values = _fp8_values(name)
    positive = values[values > 0]
    lower, upper = positive[:-1], positive[1:]
    codes = positive.to(FLOAT_DTYPES[name]).view(torch.uint8).long()
    even_mantissa = torch.where(codes[:-1] % 2 == 0, lower, upper)  # adjacent codes: one even, one odd
    assert torch.equal(fake_quantize((lower + upper) / 2, fmt, torch.tensor(1.0)), even_mantissa)
    top = float_max(fmt)
    assert top == float(values.max())
    beyond = torch.tensor([top * 1.01, top * 1e3, -top * 1e3])
    assert torch.equal(fake_quantize(beyond, fmt, torch.tensor(1.0)), torch.tensor([top, top, -top]))


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_half_formats_are_exact_at_their_values_round_like_a_cast_and_saturate(name: str) -> None:
    fmt, dtype = _format(name), FLOAT_DTYPES[name]
    values = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 100
    representable = values.to(dtype).float()
    assert torch.equal(fake_quantize(representable, fmt), representable)
    assert torch.equal(fake_quantize(values, fmt), representable)  # the cast's own round-half-to-even
    top = float_max(fmt)
    beyond = torch.finfo(torch.float32).max  # rounds to infinity in either cast
    assert torch.equal(fake_quantize(torch.tensor([beyond, -beyond]), fmt), torch.tensor([top, -top]))


def test_fp32_is_the_identity() -> None:
    values = torch.randn(10)
    assert fake_quantize(values, _format("fp32")) is values
    assert Quantizer(_format("fp32"))(values) is values


# ---------------------------------------------------------------------------
# straight-through gradients


@pytest.mark.parametrize("spec, scale, inside, outside", [
    ("int8", 0.5, [-64.0, -3.3, 0.0, 10.1, 63.5], [-64.6, 64.0, 100.0]),
    ("int4:affine", 1.0, [-3.0, 0.2, 12.0], [-3.6, 12.6, 50.0]),  # zero point 3: the grid spans [-3, 12]
    ("fp8_e4m3", 0.5, [-224.0, 0.01, 200.0], [-225.0, 230.0]),
    ("fp8_e5m2", 1.0, [-57344.0, 1.0], [-60000.0, 1e6]),
    ("fp16", 1.0, [-65504.0, 3.3], [70000.0]),
])
def test_gradients_pass_straight_through_inside_the_range_and_are_zero_outside(spec: str, scale: float,
                                                                               inside: list[float],
                                                                               outside: list[float]) -> None:
    fmt = _format(spec)
    values = torch.tensor(inside + outside, requires_grad=True)
    zero = torch.tensor(3 if fmt.affine else 0, dtype=torch.int32)
    fake_quantize(values, fmt, torch.tensor(scale), zero).sum().backward()
    assert values.grad is not None
    assert torch.equal(values.grad, torch.tensor([1.0] * len(inside) + [0.0] * len(outside)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("spec", ["int8:channel", "int4:affine", "fp8_e4m3:channel", "fp8_e5m2", "fp16", "bf16"])
def test_fake_quant_on_cuda_matches_the_cpu(spec: str) -> None:
    fmt = _format(spec)
    values = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 10
    quantizer = Quantizer(fmt, channels=3, axis=0)
    on_cuda = quantizer.to("cuda")(values.to("cuda"))
    assert torch.equal(on_cuda.cpu(), Quantizer(fmt, channels=3, axis=0)(values))


# ---------------------------------------------------------------------------
# the quantiser module


def test_an_uncalibrated_quantiser_takes_each_tensors_range_per_channel() -> None:
    weight = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    quantizer = Quantizer(_format("int4:channel"), channels=6, axis=0)
    out = quantizer(weight)
    rows = torch.arange(6)
    largest = weight.abs().argmax(1)  # each row's largest magnitude is a grid point of its own row's scale
    torch.testing.assert_close(out[rows, largest], weight[rows, largest])  # to (amax / 7) * 7's rounding
    assert (out - weight).abs().max() <= (weight.abs().amax(1) / 7 / 2).max() + 1e-6


def test_a_calibrated_quantiser_keeps_its_range_and_saturates_beyond_it() -> None:
    quantizer = Quantizer(_format("int8:affine"))
    quantizer.set_range(-1.0, 3.0)
    assert bool(quantizer.calibrated) and quantizer.zero_point.item() == round(255 / 4)
    out = quantizer(torch.tensor([-5.0, 0.0, 10.0]))
    scale, zero = quantizer.scale, quantizer.zero_point.float()
    assert torch.allclose(out, torch.stack([-zero * scale, torch.tensor(0.0), (255 - zero) * scale]))


def test_a_quantiser_state_loads_and_a_float_checkpoint_leaves_it_uncalibrated() -> None:
    calibrated = Quantizer(_format("int8:channel"), channels=4)
    calibrated.set_range(torch.full((4,), -2.0), torch.arange(1.0, 5.0))
    fresh = Quantizer(_format("int8:channel"), channels=4)
    fresh.load_state_dict(calibrated.state_dict())
    assert bool(fresh.calibrated) and torch.equal(fresh.scale, calibrated.scale)
    untouched = Quantizer(_format("int8:channel"), channels=4)
    untouched.load_state_dict({})  # strict: the quantiser's entries alone may be absent
    assert not bool(untouched.calibrated)


# ---------------------------------------------------------------------------
# quantised builds


def _proxy(name: str) -> nas.Arch:
    return ProxyScale(width=0.125, resolution=32, num_classes=10).apply(nas.zoo.get(name))


def _seeded_build(arch: nas.Arch) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(arch)


def _is_depthwise(layer: torch.nn.Module) -> bool:
    return isinstance(layer, torch.nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


@pytest.mark.parametrize("name, has_layer", [("efficientformer_l1", lambda layer: isinstance(layer, torch.nn.Linear)),
                                             ("mobilenetv2_100", _is_depthwise)], ids=["attention", "depthwise"])
def test_an_int8_zoo_model_keeps_the_float_parameters_and_trains(name: str, has_layer: Callable[..., bool]) -> None:
    arch = _proxy(name)
    float_model = _seeded_build(arch)
    model = _seeded_build(arch.with_precision(Precision.from_spec("int8:channel/int8:affine")))
    assert [key for key, _ in model.named_parameters()] == [key for key, _ in float_model.named_parameters()]
    layers = dict(quantized_layers(model))
    assert layers and all(isinstance(layer.input_quantizer, Quantizer) for layer in layers.values())
    assert any(has_layer(layer) for layer in layers.values())
    model.load_state_dict(float_model.state_dict())  # strict: only the quantisers' entries are missing
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    float_model.eval(), model.eval()
    with torch.no_grad():
        quantised, reference = model(images), float_model(images)
    assert not torch.equal(quantised, reference)
    assert torch.allclose(quantised, reference, atol=0.1 * float(reference.abs().max()))
    model.train()
    model(images).sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_float_models_are_built_as_before() -> None:
    arch = _proxy("efficientformer_l1")
    model = _seeded_build(arch)
    assert not list(quantized_layers(model))
    assert not any(isinstance(sub, Quantizer) for sub in model.modules())
    same = _seeded_build(arch.with_precision(Precision()))
    assert list(same.state_dict()) == list(model.state_dict())
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.eval(), same.eval()
    assert torch.equal(model(images), same(images))
    default = arch.with_precision(Precision())
    assert [unit.key for unit in plan(arch).units] == [unit.key for unit in plan(default).units]


def test_a_precision_changes_the_block_units_signatures_only() -> None:
    arch = _proxy("efficientformer_l1")
    quantised = arch.with_precision(Precision.from_spec("int8"))
    for unit, other in zip(plan(arch).units, plan(quantised).units, strict=True):
        assert (unit.key == other.key) == (unit.role not in ("block", "clustered"))


def test_the_ffn_override_covers_the_ffn_layers_only() -> None:
    arch = _proxy("efficientformer_l1")
    mixed = arch.with_precision(Precision(weights="int8", activations="int8", ffn_weights="int4:channel",
                                          ffn_activations="fp16"))
    model = build(mixed)
    formats = {(layer.weight_quantizer.fmt.name, layer.input_quantizer.fmt.name)
               for _, layer in quantized_layers(model)}
    assert formats == {("int8", "int8"), ("int4", "fp16")}
    ffn = [name for name, _ in ffn_parts(model)]
    for name, layer in quantized_layers(model):
        in_ffn = any(name.startswith(outer + ".") for outer in ffn)
        assert (layer.weight_quantizer.fmt.name == "int4") == in_ffn
    ffn_only = build(arch.with_precision(Precision(ffn_weights="int4")))
    names = [name for name, _ in quantized_layers(ffn_only)]
    assert names and all(any(name.startswith(outer + ".") for outer in ffn) for name in names)
    assert {layer.weight_quantizer.fmt.name for _, layer in quantized_layers(ffn_only)} == {"int4"}


@pytest.mark.parametrize("path", tiny_files(), ids=lambda path: path.stem)
def test_every_kind_builds_and_trains_at_int8(path: Path) -> None:
    arch = nas.Arch.load(path).with_precision(Precision.from_spec("int8:channel/int8:affine"))
    model = build(arch)
    resolution, channels = arch.input.resolution, arch.input.channels
    out = model(torch.randn(2, channels, resolution, resolution, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_apply_precision_leaves_a_float_block_untouched() -> None:
    block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Conv2d(4, 4, 3))
    assert apply_precision(block, Precision()) is block
    assert not any(isinstance(sub, QuantizedLayer) for sub in block.modules())


# ---------------------------------------------------------------------------
# nas train --precision


TRAIN = ["train", "poolformer_s12", "--proxy-width", "0.125", "--max-steps", "2", "--json"]


def test_train_with_precision_runs_records_it_and_refuses_another_on_resume(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TRAIN, "--out", str(tmp_path / "run"), "--precision", "int8"]) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["precision"] == "int8/int8"
    assert any(key.endswith("weight_quantizer.scale") for key in checkpoint["model"])
    capsys.readouterr()
    for other in (["--precision", "int4"], []):
        assert main([*TRAIN, "--out", str(tmp_path / "run"), "--resume", *other]) == 2
        assert "precision: checkpoint 'int8/int8'" in capsys.readouterr().err


def test_a_bad_precision_is_refused_naming_the_flag_and_writes_nothing(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for spec in ("int9", "int8:chanel", "fp16:affine"):
        with pytest.raises(SystemExit) as exited:
            main([*TRAIN, "--out", str(tmp_path / "bad"), "--precision", spec])
        assert exited.value.code == 2
        assert "--precision" in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_a_float_run_records_fp32_and_an_older_checkpoint_without_it_resumes(tmp_path: Path) -> None:
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["precision"] == "fp32"
    del checkpoint["precision"]  # a checkpoint written before precisions existed resumes as float32
    torch.save(checkpoint, tmp_path / "run" / "checkpoint.pt")
    assert main([*TRAIN[:-3], "--max-steps", "3", "--json", "--out", str(tmp_path / "run"), "--resume"]) == 0


# ---------------------------------------------------------------------------
# OFQ's remedies (arXiv:2302.02210)


def _int4_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build(_proxy("efficientformer_l1").with_precision(Precision.from_spec("int4:channel/int8:affine")))


def _weight_quantizers(model: torch.nn.Module) -> list[Quantizer]:
    return [layer.weight_quantizer for _, layer in quantized_layers(model)]


def test_statsq_takes_the_weight_range_from_the_weights_mean_magnitude() -> None:
    model = _int4_model()
    assert configure_qat(model, QatOptions(statsq=True)) == len(_weight_quantizers(model))
    for _, layer in quantized_layers(model):
        rows = layer.weight.detach().flatten(1).abs().mean(1)
        scale, _ = layer.weight_quantizer.qparams(layer.weight)
        torch.testing.assert_close(scale, 2 * rows / 7)  # +-2 mean|w| over int4's 7 positive steps


def test_confidence_guided_annealing_freezes_confident_weights_late_in_training() -> None:
    model = _int4_model()
    configure_qat(model, QatOptions(cga=0.25, cga_boundary=0.1))
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    set_training_progress(model, 0.5)
    model(images).sum().backward()
    assert not any(bool(quantizer.calibrated) or quantizer.frozen.any() for quantizer in _weight_quantizers(model))
    set_training_progress(model, 0.8)
    model.zero_grad()
    model(images).sum().backward()
    frozen = [quantizer.frozen.float().mean().item() for quantizer in _weight_quantizers(model)]
    assert all(bool(quantizer.calibrated) for quantizer in _weight_quantizers(model))
    assert 0.6 < sum(frozen) / len(frozen) < 1.0  # about 80%: all but the weights within 0.1 step of a boundary
    for _, layer in quantized_layers(model):
        assert layer.weight.grad is not None and not layer.weight.grad[layer.weight_quantizer.frozen].any()
    with torch.no_grad():  # BatchNorm recalibration runs in training mode without gradients: nothing freezes
        before = [quantizer.frozen.clone() for quantizer in _weight_quantizers(model)]
        model(images)
        assert all(torch.equal(old, quantizer.frozen) for old, quantizer in zip(before, _weight_quantizers(model),
                                                                                strict=True))


def test_finishing_qat_keeps_the_outputs_and_leaves_a_plain_model() -> None:
    model = _int4_model()
    configure_qat(model, QatOptions(statsq=True, cga=0.5))
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    set_training_progress(model, 0.9)
    model(images).sum().backward()
    with torch.no_grad():
        for parameter in model.parameters():  # a step after freezing: frozen weights keep their grid points
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval()
    with torch.no_grad():
        trained = model(images)
        finish_qat(model)
        assert torch.equal(model(images), trained)
    assert all(type(quantizer) is Quantizer and bool(quantizer.calibrated) for quantizer in _weight_quantizers(model))
    _int4_model().load_state_dict(model.state_dict())  # a plain build of the same arch takes the state as it is


def test_ofq_options_are_omitted_from_old_settings_and_refused_without_integer_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not {"statsq", "cga", "cga_boundary"} & set(TrainSettings().to_dict())
    assert TrainSettings(cga=0.1).to_dict()["cga"] == 0.1
    with pytest.raises(ConfigError, match="cga_boundary"):
        TrainSettings(cga_boundary=0.5)
    assert main([*TRAIN, "--out", str(tmp_path / "float"), "--statsq"]) == 2
    assert "--statsq/--cga" in capsys.readouterr().err and not (tmp_path / "float").exists()
    with pytest.raises(SystemExit):
        main([*TRAIN, "--out", str(tmp_path / "bad"), "--precision", "int4", "--cga", "1"])
    assert "--cga" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_train_with_ofq_anneals_and_exports_a_plain_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 4
    np.savez(tmp_path / "small.npz", x=(rng.random((96, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8),
             y=labels)
    argv = ["train", "poolformer_s12", "--data", str(tmp_path / "small.npz"), "--proxy-width", "0.125",
            "--resolution", "16", "--batch-size", "16", "--epochs", "2", "--precision", "int4:channel/int8",
            "--statsq", "--cga", "0.5", "--json", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["settings"]["cga"] == 0.5 and checkpoint["settings"]["statsq"]
    assert any(value.any() for key, value in checkpoint["model"].items() if key.endswith("weight_quantizer.frozen"))
    exported = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    build(nas.Arch.load(tmp_path / "run" / "arch.yaml")).load_state_dict(exported["state_dict"])


def test_qat_starts_from_a_float_run_and_refuses_weights_of_another_arch(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TRAIN, "--out", str(tmp_path / "float")]) == 0
    float_state = torch.load(tmp_path / "float" / "checkpoint.pt", weights_only=True)["model"]
    job = ModelJob(nas.zoo.get("poolformer_s12").with_precision(Precision.from_spec("int8")),
                   ProxyScale(width=0.125, num_classes=10), seed=1, init=str(tmp_path / "float"))
    assert all(torch.equal(job.module.state_dict()[key], value) for key, value in float_state.items())
    assert main([*TRAIN, "--out", str(tmp_path / "qat"), "--precision", "int8", "--init", str(tmp_path / "float")]) == 0
    assert torch.load(tmp_path / "qat" / "checkpoint.pt", weights_only=True)["job"]["init"] == str(tmp_path / "float")
    capsys.readouterr()
    other = ["train", "efficientformer_l1", "--proxy-width", "0.125", "--max-steps", "1", "--json"]
    assert main([*other, "--out", str(tmp_path / "other"), "--init", str(tmp_path / "float")]) == 2
    assert f"--init {tmp_path / 'float'}" in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_an_arch_with_its_own_block_precisions_trains_them_and_labels_each_block() -> None:
    arch = nas.zoo.get("efficientformer_l1")
    first = arch.stages[0]
    block = dataclasses.replace(first.blocks[0], precision=Precision(weights="int4:channel", activations="int8"))
    mixed = arch.replace(stages=(dataclasses.replace(first, blocks=(block, *first.blocks[1:])), *arch.stages[1:]))
    job = ModelJob(mixed, ProxyScale(width=0.125, num_classes=10), seed=0)
    assert {name.split(".")[:3] == ["stages", "0", "0"] for name, _ in quantized_layers(job.module)} == {True}
    assert job.precision == ["int4:channel/int8"] + ["fp32"] * (arch.num_blocks - 1)
    assert precision_label(arch.with_precision(Precision(ffn_weights="int8"))) == "fp32/fp32, ffn int8/fp32"
