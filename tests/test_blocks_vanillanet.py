"""VanillaNet: after the deep-training schedule, the merged (deployed) model equals the trained one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import nas
from nas.blocks.common import TrainingProgress
from nas.blocks.vanillanet import anneal, merge_weights
from nas.data import load_dataset
from nas.supernet import ProxyScale
from nas.supernet.jobs import ModelJob
from nas.supernet.train_settings import TrainSettings
from nas.supernet.trainer import Trainer, TrainOptions
from tests.conftest import randomise, seeded_generator

TINY = "tests/tiny/mixer_vanilla.yaml"


def _deployed(data: Any) -> Any:
    """The same arch data with ``deploy: true`` on every VanillaNet component."""
    if isinstance(data, dict):
        out = {key: _deployed(value) for key, value in data.items()}
        if out.get("kind") == "vanilla":
            out["deploy"] = True
        return out
    if isinstance(data, list):
        return [_deployed(item) for item in data]
    return data


def _trained_and_deployed() -> tuple[torch.nn.Module, torch.nn.Module]:
    arch = nas.Arch.load(TINY)
    trained = randomise(nas.build(arch))
    generator = seeded_generator()
    with torch.no_grad():  # BatchNorm statistics away from (0, 1), so that folding them is tested
        for module in trained.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    deployed = nas.build(nas.Arch.from_dict(_deployed(arch.to_dict())))
    return trained.eval(), deployed.eval()


def test_merged_equals_trained_once_the_schedule_ends() -> None:
    trained, deployed = _trained_and_deployed()
    anneal(trained, 1.0)
    merge_weights(trained, deployed)
    x = torch.randn(2, 3, 64, 64, generator=seeded_generator())
    with torch.no_grad():
        expected, merged = trained(x), deployed(x)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in deployed.parameters()) < sum(p.numel() for p in trained.parameters())


def test_before_the_schedule_ends_the_leaky_relus_are_not_identities() -> None:
    trained, deployed = _trained_and_deployed()
    anneal(trained, 0.5)
    merge_weights(trained, deployed)
    x = torch.randn(2, 3, 64, 64, generator=seeded_generator())
    with torch.no_grad():
        assert not torch.allclose(trained(x), deployed(x), atol=1e-3)


def test_the_schedule_is_a_fraction() -> None:
    with pytest.raises(ValueError, match=r"progress must be in \[0, 1\], got 1.5"):
        anneal(torch.nn.Identity(), 1.5)


def test_a_vanilla_layer_has_no_shortcut() -> None:
    arch = nas.Arch.load("tests/tiny/stem_vanilla.yaml")
    model = nas.build(arch).eval()
    block = model.get_submodule("stages.0.1")  # a stride-2 layer, 32 -> 32 channels
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.zero_()
        x = torch.randn(1, 32, 8, 8, generator=seeded_generator())
        assert torch.count_nonzero(block(x)) == 0  # nothing of x gets past a zeroed layer


def test_training_anneals_to_identity_so_the_trained_model_merges_exactly(tmp_path: Path) -> None:
    labels = np.arange(64) % 4
    images = (np.random.default_rng(0).random((64, 16, 16)) * 200).astype(np.uint8)
    np.savez(tmp_path / "data.npz", x=images, y=labels)
    dataset = load_dataset(str(tmp_path / "data.npz"))
    arch = nas.Arch.load(TINY)
    job = ModelJob(arch, ProxyScale(width=1.0, resolution=32, num_classes=dataset.num_classes), seed=0)
    options = TrainOptions(progress=False, evaluate=False)
    Trainer(job, dataset, TrainSettings(epochs=1, batch_size=16), options=options).run()
    trained = job.module.eval()
    slopes = {module.between.negative_slope for module in trained.modules() if isinstance(module, TrainingProgress)}
    assert slopes == {1.0}
    deployed = nas.build(nas.Arch.from_dict(_deployed(job.proxied.to_dict()))).eval()
    merge_weights(trained, deployed)
    x = torch.randn(2, 3, 32, 32, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), trained(x), atol=1e-5, rtol=1e-5)
