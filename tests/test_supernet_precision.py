"""Precision in spaces and the supernet: choices round-trip, one set of float weights serves every precision, and
an extracted quantised subnet equals the supernet running it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.arch import Precision
from nas.blocks.fakequant import QuantizedLayer, Quantizer, quantized_layers
from nas.space import Space, load_space
from nas.supernet import ProxyScale, Supernet

# Per-block formats (an int8 FFN beside a float mixer among them) over conv, attention and MBConv blocks.
MIXED = """
schema: 1
name: mixed
input: {resolution: 32, channels: 3}
stem: {kind: conv, hidden: [8], kernel: 3, stride: 2}
stages:
  - dim: {ordinal: [16, 24]}
    downsample: null
    blocks:
      choice:
        - repeat: {range: [1, 2]}
          independent: true
          block:
            mixer: {kind: convnext, kernel: {ordinal: [3, 5]}}
            ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}
            norm: batchnorm
            precision: &format
              choice:
                - {}
                - {weights: "int8:channel", activations: int8}
                - {weights: "int4:channel", activations: "int8:affine"}
                - {weights: fp8_e4m3, activations: fp8_e4m3}
                - {ffn_weights: "int8:channel", ffn_activations: int8}
        - {repeat: {range: [1, 2]}, block: {mixer: {kind: mbconv, expand_ratio: 2, kernel: 3}, ffn: none,
                                            norm: batchnorm, precision: *format}}
  - dim: 32
    downsample: {kind: conv, kernel: 3, stride: 2, padding: 1, norm: batchnorm}
    blocks:
      repeat: {range: [1, 2]}
      block: {mixer: {kind: attention, heads: {choice: [2, 4]}}, ffn: {kind: mlp, ratio: 2}, norm: layernorm,
              precision: *format}
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 10}
"""

INT8 = Precision.from_spec("int8:channel/int8")


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spaces") / "mixed.yaml"
    path.write_text(MIXED)
    return path


@pytest.fixture(scope="module")
def supernet(space_file: Path) -> Supernet:
    net = Supernet.create(str(space_file), scale=ProxyScale(width=1.0, resolution=32), scan=32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the init (zero-init'd norms would hide every difference)
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return net.eval()


def _precisions(arch: nas.Arch) -> list[Precision]:
    return [block.precision for stage in arch.stages for block in stage.blocks]


def _run_both(net: Supernet, model: torch.nn.Module, arch: nas.Arch, images: torch.Tensor) -> None:
    for training in (False, True):
        net.train(training)
        model.train(training)
        with torch.no_grad():
            torch.testing.assert_close(net(images, arch), model(images), rtol=0, atol=1e-5)
    net.eval()


# ---------------------------------------------------------------------------- spaces


def test_precision_choices_sample_encode_and_round_trip(space_file: Path) -> None:
    space = Space.load(space_file)
    vectors = space.sample_vectors(np.random.default_rng(0), 60)
    seen: set[Precision] = set()
    for vector in vectors:
        arch = space.decode(vector)
        np.testing.assert_array_equal(space.encode(arch), vector)
        assert nas.Arch.from_yaml(arch.to_yaml()) == arch
        seen.update(_precisions(arch))
    assert len(seen) == 5  # every option is drawn, the FFN-only override included
    float_point = space.decode(vectors[0]).with_precision(Precision())
    assert "precision" not in float_point.to_yaml() and space.contains(float_point) == (True, "")
    assert space.contains(float_point.with_precision(Precision.from_spec("bf16")))[0] is False


@pytest.mark.parametrize("name", ["fliqs", "metaformer"])
def test_shipped_precision_choices_reach_every_format_they_offer(name: str) -> None:
    space = load_space(name)
    decisions = [decision for decision in space.decisions if decision.path.endswith("precision")]
    assert decisions and all(decision.options[0] == "precision(fp32)" for decision in decisions)
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(1), 40)]
    weights = {precision.weights for arch in archs for precision in _precisions(arch)}
    offered = {"fliqs": {"fp32", "bf16", "fp8_e4m3", "fp8_e5m2", "int8:channel", "int4:channel"},
               "metaformer": {"fp32", "fp16", "int8:channel"}}[name]
    assert weights == offered


def test_fliqs_holds_mobilenetv2_at_float32_and_prices_its_quantised_twin() -> None:
    space = load_space("fliqs")
    mobilenet = nas.zoo.get("mobilenetv2_100")
    assert space.contains(mobilenet) == (True, "")
    quantised = mobilenet.with_precision(INT8)
    assert space.contains(quantised) == (True, "") and quantised.id != mobilenet.id
    report = nas.cost.profile(quantised.with_resolution(64))
    assert report.params == nas.cost.profile(mobilenet.with_resolution(64)).params  # quantisers hold no params


# ---------------------------------------------------------------------------- supernet


def test_weights_are_shared_across_precisions(supernet: Supernet) -> None:
    arch = supernet.sample(np.random.default_rng(3))
    keys = {precision: {slot.key for layout in supernet.layout(arch.with_precision(precision)) for slot in layout.slots}
            for precision in (Precision(), INT8, Precision.from_spec("fp8_e4m3"))}
    assert keys[Precision()] == keys[INT8] == keys[Precision.from_spec("fp8_e4m3")]
    assert not any("quantizer" in key for key in supernet.state_dict())
    quantised = arch.with_precision(INT8)
    supernet.zero_grad(set_to_none=True)
    supernet.train()
    supernet(torch.randn(4, 3, 32, 32), quantised).square().mean().backward()
    supernet.eval()
    touched = {key for key, parameter in supernet.store.named_parameters() if parameter.grad is not None}
    used = {slot.key for layout in supernet.layout(quantised) for slot in layout.slots if slot.parameter}
    assert touched == used  # the straight-through estimator carries gradients to the shared float weights
    supernet.zero_grad(set_to_none=True)


def test_extract_equals_supernet_for_quantised_points(supernet: Supernet) -> None:
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rng = np.random.default_rng(4)
    base = supernet.sample(rng)
    points = [base.with_precision(INT8), base.with_precision(Precision(ffn_weights="int4:channel")),
              *(supernet.sample(rng) for _ in range(6))]
    assert len({tuple(_precisions(arch)) for arch in points}) == len(points)
    for arch in points:
        model = supernet.extract(arch)
        assert model.arch == supernet.proxy(arch)
        assert all(not bool(layer.input_quantizer.calibrated) for _, layer in quantized_layers(model))
        _run_both(supernet, model, arch, images)
    int8_model = supernet.extract(points[0])
    assert any(isinstance(module, QuantizedLayer) for module in int8_model.modules())
    with torch.no_grad():
        float_out = supernet(images, base.with_precision(Precision()))
        assert not torch.allclose(supernet(images, points[0]), float_out)  # the int8 subnet really rounds


def test_quantisers_take_their_ranges_from_each_batch(supernet: Supernet) -> None:
    """No range learnt under one batch or precision carries over: the supernet keeps no calibration state."""
    arch = supernet.sample(np.random.default_rng(5)).with_precision(INT8)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        alone = supernet(images[:2], arch)
        supernet(10.0 * images[2:], arch)  # a batch of another range in between
        again = supernet(images[:2], arch)
    torch.testing.assert_close(alone, again, rtol=0, atol=0)
    quantisers = [module for layout in supernet.layout(arch) for module in layout.module.modules()
                  if isinstance(module, Quantizer)]
    assert quantisers and not any(bool(quantiser.calibrated) for quantiser in quantisers)
