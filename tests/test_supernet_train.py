"""Supernet and stand-alone training: kill and resume, checkpoint errors, 2-process DDP, the CLI commands."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import nas
from nas.cli import main
from nas.data import Dataset, load_dataset
from nas.supernet import CheckpointError, Supernet, Trainer, TrainOptions, TrainSettings, train_model, train_supernet

ROOT = Path(__file__).resolve().parent.parent

SPACE = """
schema: 1
name: small
input: {resolution: 16, channels: 3}
stem: {kind: overlap, kernel: 3, stride: 2, norm: batchnorm}
stages:
  - dim: {ordinal: [8, 16]}
    downsample: null
    blocks:
      repeat: {range: [1, 2]}
      block:
        mixer: {choice: [{kind: pooling, pool_size: 3}, {kind: convnext, kernel: {ordinal: [3, 5]}}]}
        ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}
        norm: batchnorm
        layer_scale: 1.0e-2
  - dim: {ordinal: [16, 24]}
    downsample: {kind: conv, kernel: 3, stride: 2, norm: batchnorm}
    blocks:
      repeat: {range: [1, 2]}
      block: {mixer: {kind: attention, heads: {choice: [2, 4]}}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 10}
"""

COMMON: dict[str, Any] = {"width": 1.0, "resolution": 16, "scan": 12}
QUIET = TrainOptions(progress=False)
EVERY_FOUR = TrainOptions(checkpoint_every=4, progress=False, evaluate=False)
STOP_EARLY = TrainOptions(max_steps=2, progress=False, evaluate=False)



@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("supernet-train")
    space = folder / "small.yaml"
    space.write_text(SPACE)
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    images = (rng.random((120, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8)  # learnable classes
    data = folder / "small.npz"
    np.savez(data, x=images, y=labels)
    return {"space": str(space), "data": str(data)}


@pytest.fixture(scope="module")
def dataset(files: dict[str, str]) -> Dataset:
    return load_dataset(files["data"])


SETTINGS = TrainSettings(epochs=2, batch_size=16, num_random=1, seed=3, warmup_epochs=0.5)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "checkpoint.pt", weights_only=True)["model"]


def test_kill_and_resume_repeats_the_uninterrupted_run(files: dict[str, str], dataset: Dataset, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    full = train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "full", options=EVERY_FOUR, **COMMON)
    assert full.completed and full.total_steps == 12 and len(full.losses) == 12
    assert all(len(losses) == 3 for losses in full.losses)  # largest, smallest, one random

    step = Trainer._step
    calls = {"count": 0}

    def killed_at_seven(self: Trainer, *args: Any) -> list[float]:
        calls["count"] += 1
        if calls["count"] == 7:
            raise KeyboardInterrupt  # a kill between checkpoints: steps 5 and 6 are lost
        return step(self, *args)

    monkeypatch.setattr(Trainer, "_step", killed_at_seven)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "killed", options=EVERY_FOUR, **COMMON)
    monkeypatch.setattr(Trainer, "_step", step)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "killed", resume=True,
                             options=EVERY_FOUR, **COMMON)
    assert resumed.losses == full.losses
    full_weights, resumed_weights = _weights(tmp_path / "full"), _weights(tmp_path / "killed")
    assert full_weights.keys() == resumed_weights.keys()
    for key, value in full_weights.items():
        assert torch.equal(value, resumed_weights[key]), key


def test_corrupt_or_mismatched_checkpoints_are_one_clear_error(files: dict[str, str], dataset: Dataset,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_supernet(files["space"], dataset, SETTINGS, out=out, options=STOP_EARLY, **COMMON)
    with pytest.raises(CheckpointError, match="lr"):
        train_supernet(files["space"], dataset, TrainSettings(**{**SETTINGS.to_dict(), "lr": 1e-2}), out=out,
                       resume=True, options=QUIET, **COMMON)
    with pytest.raises(CheckpointError, match="scale"):
        train_supernet(files["space"], dataset, SETTINGS, out=out, resume=True, options=QUIET,
                       **{**COMMON, "width": 0.5})
    with pytest.raises(nas.NasError, match="already holds a run"):
        train_supernet(files["space"], dataset, SETTINGS, out=out, options=QUIET, **COMMON)
    checkpoint = out / "checkpoint.pt"
    saved = torch.load(checkpoint, weights_only=False)
    del saved["job"]["spec"]["sharing"]  # as written before the version was recorded: taken as version 2
    torch.save(saved, tmp_path / "unrecorded.pt")
    assert Supernet.load(tmp_path / "unrecorded.pt").spec.sharing == 2
    saved["job"]["spec"]["sharing"] = 1  # patch merging's neighbours cut as one prefix
    torch.save(saved, tmp_path / "older.pt")
    with pytest.raises(CheckpointError, match="weight-sharing version 1; this nas shares weights as version 2"):
        Supernet.load(tmp_path / "older.pt")
    torch.save(saved, checkpoint)
    with pytest.raises(CheckpointError, match="sharing: checkpoint 1, requested 2"):
        train_supernet(files["space"], dataset, SETTINGS, out=out, resume=True, options=QUIET, **COMMON)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # torn write
    for attempt in (lambda: train_supernet(files["space"], dataset, SETTINGS, out=out, resume=True, options=QUIET,
                                           **COMMON),
                    lambda: Supernet.load(out)):
        with pytest.raises(CheckpointError, match=str(checkpoint)):
            attempt()
    checkpoint.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        Supernet.load(checkpoint)
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "empty", resume=True, options=QUIET, **COMMON)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_process_ddp_keeps_identical_weights(files: dict[str, str], tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), files["space"], files["data"], str(tmp_path)),
                                nprocs=2, join=True)
    states = [torch.load(tmp_path / f"state{rank}.pt", weights_only=True) for rank in range(2)]
    assert states[0]["steps"] == states[1]["steps"] == 3
    assert states[0]["subnets"] == states[1]["subnets"]  # every rank sampled the same subnets
    assert states[0]["losses"] != states[1]["losses"]  # ... on different shards of the batch
    initial = states[0]["initial"]
    changed = 0
    for key, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][key]), key
        changed += not torch.equal(value, initial[key])
    assert changed > 0


def _ddp_worker(rank: int, world: int, port: int, space: str, data: str, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from nas.supernet import SupernetJob
    from nas.supernet.proxy import ProxyScale

    dataset = load_dataset(data)
    settings = TrainSettings(epochs=1, batch_size=8, num_random=1, seed=5)
    supernet = Supernet.create(space, scale=ProxyScale(width=1.0, resolution=16, num_classes=dataset.num_classes),
                               scan=12)
    if rank:
        with torch.no_grad():  # DDP must start every rank from rank 0's weights
            for parameter in supernet.parameters():
                parameter.add_(1.0)
    job = SupernetJob(supernet, num_random=1, seed=settings.seed)
    subnets = [[arch.id for arch in job.subnets(0, step)] for step in range(3)]
    trainer = Trainer(job, dataset, settings, options=TrainOptions(max_steps=3, progress=False, evaluate=False))
    initial = {key: value.clone() for key, value in supernet.state_dict().items()}
    result = trainer.run()
    torch.save({"model": supernet.state_dict(), "initial": initial, "steps": result.steps, "subnets": subnets,
                "losses": result.losses}, Path(out) / f"state{rank}.pt")


def test_supernet_cli_trains_resumes_and_reports(files: dict[str, str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    common = ["supernet", "train", "--space", files["space"], "--data", files["data"], "--epochs", "1",
              "--batch-size", "16", "--resolution", "16", "--proxy-width", "1", "--scan", "12", "--num-random", "1",
              "--out", str(out)]
    assert main([*common, "--max-steps", "3", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["steps"] == 3 and not first["completed"] and not (out / "result.json").exists()
    assert main([*common, "--resume", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["completed"] and set(second["metrics"]) == {"largest_accuracy", "smallest_accuracy"}
    result = json.loads((out / "result.json").read_text())
    assert result["kind"] == "supernet" and result["steps"] == 6

    bad = tmp_path / "bad"
    assert main(["supernet", "train", "--space", files["space"], "--data", str(tmp_path / "missing"),
                 "--out", str(bad)]) == 2
    assert "missing" in capsys.readouterr().err and not bad.exists()
    assert main(["supernet", "train", "--space", "no-such-space", "--data", files["data"], "--out", str(bad)]) == 2
    assert not bad.exists()


def test_train_cli_writes_a_model_the_export_step_can_load(files: dict[str, str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    arch_file = ROOT / "tests" / "tiny" / "mixer_pooling.yaml"
    assert main(["train", str(arch_file), "--data", files["data"], "--epochs", "1", "--batch-size", "16",
                 "--resolution", "16", "--proxy-width", "0.5", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["completed"] and 0 <= summary["metrics"]["accuracy"] <= 1
    saved = torch.load(out / "model.pt", weights_only=True)
    arch = nas.Arch.from_dict(saved["arch"])
    assert arch == nas.Arch.load(out / "arch.yaml") and arch.input.resolution == 16 and arch.head.num_classes == 4
    model = nas.build(arch)
    model.load_state_dict(saved["state_dict"])
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_standalone_training_equals_the_supernets_subnet_architecture(files: dict[str, str],
                                                                     dataset: Dataset) -> None:
    supernet = Supernet.create(files["space"], scale=nas.supernet.ProxyScale(width=1.0, resolution=16,
                                                                             num_classes=dataset.num_classes), scan=12)
    arch = supernet.sample(np.random.default_rng(0))
    result = train_model(arch, dataset, TrainSettings(epochs=1, batch_size=16, sigma_reparam=True, sam=True),
                         width=1.0, resolution=16, options=STOP_EARLY)
    assert result.steps == 2 and all(np.isfinite(losses).all() for losses in result.losses)
    assert supernet.extract(arch).arch == supernet.proxy(arch)


def test_short_training_is_repeatable_and_starts_where_asked(files: dict[str, str], dataset: Dataset) -> None:
    from nas.supernet import EvalBatches, ProxyScale, short_train_scores

    scale = ProxyScale(width=1.0, resolution=16, num_classes=dataset.num_classes)
    supernet = Supernet.create(files["space"], scale=scale, scan=12)
    archs = [supernet.sample(np.random.default_rng(index)) for index in range(2)]
    batches = EvalBatches.from_dataset(dataset, resolution=16, channels=3, calibration_batches=2, batch_size=16)
    first = short_train_scores(archs, dataset, batches, scale=scale, steps=3, batch_size=16, seed=1)
    assert first.shape == (2,) and ((first >= 0) & (first <= 1)).all()
    assert (short_train_scores(archs, dataset, batches, scale=scale, steps=3, batch_size=16, seed=1) == first).all()
    with torch.no_grad():  # an inherited start that differs from the random one must change the score
        for parameter in supernet.parameters():
            parameter.mul_(-1.0)
    inherited = short_train_scores(archs, dataset, batches, scale=scale, steps=3, batch_size=16, seed=1,
                                   inherit_from=supernet)
    assert (inherited != first).any()
    with pytest.raises(nas.NasError, match=r"steps must be in \[1, 6\]"):
        short_train_scores(archs, dataset, batches, scale=scale, steps=7, batch_size=16)


def test_rank_bench_smoke_prints_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("supernet_rank", ROOT / "bench" / "supernet_rank.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--quiet", "--json", str(tmp_path / "figures.json")]) == 0
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert set(figures["kendall_tau"]) == {"supernet", "params", "naswot", "synflow", "grad_norm", "short_scratch",
                                           "short_inherited"}
    assert all(0 <= row["short_scratch"] <= 1 and 0 <= row["short_inherited"] <= 1 for row in figures["archs"])
    assert figures["step_time"]["ratio"] > 0 and figures["step_time"]["sharing_overhead"] > 0
    assert len(figures["archs"]) == 4
    assert "Kendall tau" in capsys.readouterr().out
    assert bench.kendall_tau(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(1 / 3)


def test_sharing_bench_trains_each_configuration_from_the_same_start(files: dict[str, str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("supernet_sharing", ROOT / "bench" / "supernet_sharing.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--space", files["space"], "--data", files["data"], "--proxy-width", "1.0", "--resolution", "16",
            "--scan", "12", "--steps", "3", "--subnets", "2", "--batch-size", "16"]
    twice = bench.run(bench.parse_args([*argv, "--groups", "sizes;sizes"]))
    assert twice[0]["first"] == twice[1]["first"] and np.isfinite(twice[0]["last"])  # same start, same draws
    assert bench.main([*argv, "--groups", "sizes;sizes,branches"]) == 0
    assert "sizes,branches" in capsys.readouterr().out
    plateau = [2.3] * 30 + [1.8] * 20
    assert bench.leaves_chance(plateau, 2.3, 10) == 32  # 3 of steps 23-32 at 1.8: mean 2.15 < 0.95 * 2.3
    assert bench.leaves_chance([2.3] * 50, 2.3, 10) is None


def test_a_subnet_that_overflows_is_left_out_of_the_step(files: dict[str, str], dataset: Dataset, monkeypatch) -> None:
    from nas.supernet import SupernetJob

    forward = SupernetJob.forward

    def smallest_overflows(self: SupernetJob, module: Any, images: torch.Tensor, subnet: Any) -> torch.Tensor:
        logits = forward(self, module, images, subnet)
        return logits * float("inf") if subnet is self.supernet.smallest else logits

    monkeypatch.setattr(SupernetJob, "forward", smallest_overflows)
    result = train_supernet(files["space"], dataset, SETTINGS,
                            options=TrainOptions(max_steps=3, progress=False, evaluate=False), **COMMON)
    assert all(np.isnan(losses[1]) and np.isfinite(losses[0]) for losses in result.losses)
    assert result.losses[0][0] != result.losses[2][0], "the other subnets still trained"


def test_train_options_refuse_a_checkpoint_interval_or_step_limit_out_of_range() -> None:
    with pytest.raises(nas.NasError, match="checkpoint_every must be >= 1, got 0"):
        TrainOptions(checkpoint_every=0)
    with pytest.raises(nas.NasError, match="max_steps must be >= 0, got -1"):
        TrainOptions(max_steps=-1)
    assert TrainOptions(max_steps=0).max_steps == 0
