"""PTQ: range estimators, observers, NoisyQuant's noisy bias, `nas quantize` and `nas analyze` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.arch import NumberFormat
from nas.blocks.fakequant import quantize_layer, quantized_layers
from nas.cli import main
from nas.errors import NasError
from nas.export import export
from nas.quantization import (
    CalibrationSettings,
    add_noisy_bias,
    float_mode,
    load_quantized,
    minmax_range,
    mse_range,
    percentile_range,
    quantize_model,
)
from nas.quantization.calibrate import Observer, range_quantize
from nas.quantization.noisy_bias import NoisyBias, noisy_bias_layers
from tests.conftest import TINY_DIR

TINY = TINY_DIR / "mixer_attention.yaml"


def _heavy_tailed(generator: torch.Generator, size: int = 20_000) -> torch.Tensor:
    """Laplace values (exponential tails: kurtosis 6, twice the Gaussian's)."""
    magnitude = -torch.log(torch.rand(size, generator=generator))
    return torch.where(torch.rand(size, generator=generator) < 0.5, magnitude, -magnitude)


# ---------------------------------------------------------------------------
# estimators


def test_minmax_is_the_extremes_per_tensor_and_per_channel() -> None:
    values = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    low, high = minmax_range(values, None)
    assert float(low) == float(values.min()) and float(high) == float(values.max())
    low, high = minmax_range(values, 1)
    assert low.shape == high.shape == (5,)
    assert torch.equal(high, values.amax(dim=(0, 2))) and torch.equal(low, values.amin(dim=(0, 2)))


def test_percentile_clips_outliers_and_keeps_the_bulk() -> None:
    values = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    values[:5] = torch.tensor([100.0, 90.0, -80.0, 120.0, -110.0])
    low, high = percentile_range(values, None, 99.9)
    assert 2.0 < float(high) < 10.0 and -10.0 < float(low) < -2.0
    assert float(percentile_range(values, None, 100.0)[1]) == float(values.max())
    per_channel = percentile_range(values.reshape(4, -1).T, 1, 99.0)[1]
    assert per_channel.shape == (4,) and bool((per_channel < 5.0).all())


@pytest.mark.parametrize("fmt", ["int8", "int4", "int8:affine", "fp8_e4m3"])
def test_mse_is_no_worse_than_minmax_on_a_heavy_tailed_tensor(fmt: str) -> None:
    number_format = NumberFormat.parse(fmt, "fmt")
    quantize = range_quantize(number_format)
    values = _heavy_tailed(torch.Generator().manual_seed(2))

    def error(low: torch.Tensor, high: torch.Tensor) -> float:
        return float((quantize(values, low, high) - values).pow(2).mean())

    minmax, mse = error(*minmax_range(values, None)), error(*mse_range(values, None, quantize))
    assert mse <= minmax
    if number_format.name == "int4":  # 16 levels: clipping the rare tail pays for a finer step for the bulk
        assert mse < 0.5 * minmax


def test_mse_picks_a_range_per_channel() -> None:
    generator = torch.Generator().manual_seed(3)
    values = torch.stack([torch.randn(5_000, generator=generator), _heavy_tailed(generator, 5_000)])
    low, high = mse_range(values, 0, range_quantize(NumberFormat("int4")))
    assert low.shape == (2,)
    assert float(high[1]) < float(values[1].max()) and float(high[0]) > 0.5 * float(values[0].max())


def test_observer_keeps_exact_extremes_and_a_bounded_sample() -> None:
    generator = torch.Generator().manual_seed(4)
    observer = Observer(-1, per_batch=50, generator=generator)
    batches = [torch.randn(2, 30, 6, generator=generator) for _ in range(4)]
    for batch in batches:
        observer.observe(batch)
    everything = torch.cat(batches)
    assert torch.equal(observer.high, everything.amax(dim=(0, 1)))
    assert torch.equal(observer.low, everything.amin(dim=(0, 1)))
    assert sum(sample.shape[-1] for sample in observer.samples) <= 4 * (50 + 2)


# ---------------------------------------------------------------------------
# NoisyQuant


def _quantized_linear(in_features: int, out_features: int, weights: str = "int8") -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(in_features, out_features)
    quantize_layer(layer, NumberFormat.parse(weights, "weights"), NumberFormat("int8"))
    return layer


def _noisy(layer: nn.Linear) -> NoisyBias:
    """A noisy bias installed the way :func:`add_noisy_bias` does, always kept (amplitude 1 only)."""
    from nas.quantization.noisy_bias import _install

    return _install(layer)


@torch.no_grad()
def test_noise_cancels_in_float() -> None:
    layer = _quantized_linear(16, 8)
    x = torch.randn(32, 5, 16)
    layer.input_quantizer.set_range(x.min(), x.max())
    expected = F.linear(x, layer.weight, layer.bias)
    module = _noisy(layer)
    with float_mode(layer):
        module.set_noise(layer, (torch.rand(16) - 0.5) * layer.input_quantizer.scale)
        assert float(module.noise.abs().max()) > 0
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(F.linear(x + module.noise, layer.weight, layer.bias), expected, atol=1e-3)


@torch.no_grad()
def test_noisy_bias_lowers_the_error_on_gelu_activations_with_outlier_channels() -> None:
    """The paper's case: post-GELU activations (a dense cluster near 0 and a tail) whose step is set by a few
    outlier channels; with the step a few times the bulk's spread the fixed noise breaks the systematic rounding
    of the cluster. (Where the step is much larger or smaller than that it can hurt, which is why
    :func:`add_noisy_bias` searches the amplitude per layer.)"""
    generator = torch.Generator().manual_seed(0)
    x = F.gelu(torch.randn(4096, 64, generator=generator))
    x[:, :2] *= 10.0
    layer = _quantized_linear(64, 32, weights="fp32")
    layer.input_quantizer.set_range(x.min(), x.max())
    reference = F.linear(x, layer.weight, layer.bias)
    plain_error = float((layer(x) - reference).pow(2).mean())
    module = _noisy(layer)
    module.set_noise(layer, (torch.rand(64, generator=generator) - 0.5) * layer.input_quantizer.scale)
    noisy_error = float((layer(x) - reference).pow(2).mean())
    assert noisy_error < 0.9 * plain_error


@torch.no_grad()
def test_amplitude_search_never_raises_a_layers_error() -> None:
    generator = torch.Generator().manual_seed(5)
    x = F.gelu(torch.randn(512, 64, generator=generator))
    x[:, :2] *= 30.0  # a step too large for the noise to help: the search must leave the layer bare
    layer = _quantized_linear(64, 32)
    layer.input_quantizer.set_range(x.min(), x.max())
    reference = F.linear(x, layer.weight, layer.bias)
    before = float((layer(x) - reference).pow(2).mean())

    def in_float(inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, layer.weight, layer.bias)

    chosen = add_noisy_bias([("layer", layer, in_float)], {"layer": [x]}, generator=generator)
    after = float((layer(x) - reference).pow(2).mean())
    assert after <= before
    assert ("layer" in chosen) == hasattr(layer, "noisy_bias")


# ---------------------------------------------------------------------------
# calibrating a model


def test_quantize_model_calibrates_every_quantiser_and_stays_close_to_float() -> None:
    arch = nas.Arch.load(TINY)
    torch.manual_seed(0)
    model = nas.build(arch).eval()
    images = [torch.randn(4, 3, 64, 64) for _ in range(2)]
    result = quantize_model(model, arch, nas.Precision.from_spec("int8:channel/int8"), images,
                            CalibrationSettings(method="mse", batches=2, noisy_bias=True))
    layers = list(quantized_layers(result.module))
    assert layers and all(bool(layer.input_quantizer.calibrated) and bool(layer.weight_quantizer.calibrated)
                          for _, layer in layers)
    assert set(noisy_bias_layers(result.module)) == set(result.noisy_bias)
    with torch.no_grad():
        expected, got = model(images[0]), result.module(images[0])
        with float_mode(result.module):
            torch.testing.assert_close(result.module(images[0]), expected, atol=1e-3, rtol=1e-3)
    assert float((got - expected).pow(2).mean() / expected.pow(2).mean()) < 0.01


# ---------------------------------------------------------------------------
# the commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny dataset (.npz, 10 classes) and a run directory of `nas train` on it."""
    root = tmp_path_factory.mktemp("ptq")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 24)
    images = (rng.random((len(labels), 8, 8)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
    data = root / "tiny.npz"
    np.savez(data, x=images, y=labels)
    run = root / "run"
    assert main(["train", str(TINY), "--data", str(data), "--epochs", "1", "--batch-size", "32",
                 "--out", str(run), "--json"]) == 0
    return data, run


def test_nas_quantize_writes_a_loadable_calibrated_model(capsys, trained: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    data, run = trained
    capsys.readouterr()
    out = tmp_path / "int8"
    assert main(["quantize", str(TINY), "--checkpoint", str(run), "--precision", "int8", "--data", str(data),
                 "--method", "percentile", "--noisy-bias", "--batches", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["metrics"]) == {"float_accuracy", "quantized_accuracy", "drop"}
    loaded = load_quantized(out)
    assert loaded.arch == nas.Arch.load(out / "arch.yaml")
    assert loaded.arch.stages[0].blocks[0].precision == nas.Precision("int8", "int8")
    assert noisy_bias_layers(loaded.module) == list(summary["noisy_bias"])
    assert all(bool(layer.input_quantizer.calibrated) for _, layer in quantized_layers(loaded.module))
    batch = torch.randn(2, 3, loaded.arch.input.resolution, loaded.arch.input.resolution)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(batch), load_quantized(out / "model.pt").module(batch))
    exported = export(loaded.arch, tmp_path / "export", format="torch", checkpoint=out / "model.pt")
    program = torch.export.load(str(exported.files[0])).module()  # the noisy biases and ranges travel along
    one = batch[:1]
    with torch.no_grad():
        torch.testing.assert_close(program(one), loaded.module(one))
    with pytest.raises(NasError, match="a calibrated model of Arch"):
        export(nas.Arch.load(TINY_DIR / "mixer_pooling.yaml"), tmp_path / "other", format="torch",
               checkpoint=out / "model.pt")


@pytest.mark.parametrize("change, message", [
    ({"--checkpoint": "missing.pt"}, "no checkpoint there"),
    ({"arch": str(TINY_DIR / "mixer_pooling.yaml")}, "not of tiny_pooling"),
    ({"--precision": "int9"}, "unknown number format 'int9'"),
    ({"--precision": "fp32"}, "nothing to quantise"),
    ({"--data": "no-such-data"}, "no-such-data"),
])
def test_nas_quantize_refuses_bad_input_and_writes_nothing(capsys, trained: tuple[Path, Path], tmp_path: Path,
                                                          change: dict[str, str], message: str) -> None:
    data, run = trained
    arguments = {"arch": str(TINY), "--checkpoint": str(run), "--precision": "int8", "--data": str(data),
                 "--out": str(tmp_path / "out")}
    arguments.update({key: str(tmp_path / value) if value in ("missing.pt", "no-such-data") else value
                      for key, value in change.items()})
    argv = ["quantize", arguments.pop("arch")] + [item for pair in arguments.items() for item in pair]
    capsys.readouterr()
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert not (tmp_path / "out").exists()


def test_nas_analyze_prints_the_statistics_and_writes_the_plot(capsys, trained: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    data, run = trained
    capsys.readouterr()
    assert main(["analyze", str(TINY), "--checkpoint", str(run), "--data", str(data), "--precision", "int4",
                 "--batches", "2", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for column in ("max_abs", "kurtosis", "outliers", "sqnr_db"):
        assert column in printed
    import pandas as pd

    table = pd.read_csv(tmp_path / "layers.csv")
    arch = nas.Arch.load(run / "arch.yaml").with_precision(nas.Precision("int4", "int4"))
    assert list(table["layer"]) == [name for name, _ in quantized_layers(nas.build(arch))]
    assert bool((table["max_abs"] > 0).all()) and bool((table["sqnr_db"] > 0).all())
    assert (tmp_path / "layers.png").read_bytes().startswith(b"\x89PNG")


def test_nas_quantize_recalibrates_a_model_trained_with_quantisation(capsys, trained: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    data, _ = trained
    run = tmp_path / "qat"
    assert main(["train", str(TINY), "--data", str(data), "--epochs", "1", "--batch-size", "32", "--precision",
                 "int8", "--out", str(run), "--json"]) == 0
    assert main(["quantize", str(run / "arch.yaml"), "--checkpoint", str(run), "--precision", "int4/int8",
                 "--data", str(data), "--batches", "1", "--eval-images", "0", "--out", str(tmp_path / "q")]) == 0
    loaded = load_quantized(tmp_path / "q")
    assert loaded.arch.stages[0].blocks[0].precision == nas.Precision("int4", "int8")
    assert loaded.metrics == {}


@torch.no_grad()
def test_noise_cancels_in_float_through_a_pointwise_convolution() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 6, 1, groups=2)
    quantize_layer(conv, NumberFormat("int8"), NumberFormat("int8"))
    x = torch.randn(2, 8, 5, 5)
    conv.input_quantizer.set_range(x.min(), x.max())
    expected = F.conv2d(x, conv.weight, conv.bias, groups=2)
    module = _noisy(conv)
    with float_mode(conv):
        module.set_noise(conv, (torch.rand(8) - 0.5) * conv.input_quantizer.scale)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=1e-5)
    padded = nn.Conv2d(8, 6, 3, padding=1)
    quantize_layer(padded, NumberFormat("int8"), NumberFormat("int8"))
    from nas.quantization.noisy_bias import supports_noisy_bias

    assert supports_noisy_bias(conv) and not supports_noisy_bias(padded)
