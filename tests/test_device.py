"""``--device`` and ``--amp``: clear refusals, mixed precision, and checkpoints that move between devices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli import main
from nas.data import Dataset, load_dataset
from nas.supernet import CheckpointError, TrainOptions, TrainSettings, train_supernet
from nas.supernet.device import DeviceError, Placement, resolve_device
from tests.test_supernet_train import COMMON, SPACE

SETTINGS = TrainSettings(epochs=2, batch_size=16, num_random=1, seed=3, warmup_epochs=0.5)
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("device")
    (folder / "small.yaml").write_text(SPACE)
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 4
    images = (rng.random((120, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8)
    np.savez(folder / "small.npz", x=images, y=labels)
    return {"space": str(folder / "small.yaml"), "data": str(folder / "small.npz")}


@pytest.fixture(scope="module")
def dataset(files: dict[str, str]) -> Dataset:
    return load_dataset(files["data"])


CPU = Placement()


def _options(placement: Placement = CPU, **fields: int) -> TrainOptions:
    return TrainOptions(progress=False, evaluate=False, checkpoint_every=4, placement=placement, **fields)


def test_device_names_resolve_or_fail_naming_the_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    for name in ("tpu", "cuda:x", "gpu0", ""):
        with pytest.raises(DeviceError, match="unknown device"):
            resolve_device(name)
    if not CUDA:
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_fp16_is_refused_off_cuda_and_unknown_precisions_are_refused() -> None:
    with pytest.raises(DeviceError, match="fp16 needs a CUDA device"):
        Placement(torch.device("cpu"), "fp16")
    with pytest.raises(DeviceError, match="unknown"):
        Placement(torch.device("cpu"), "int8")
    assert Placement(torch.device("cpu"), "bf16").scaler() is None


@pytest.mark.parametrize("argv, message", [
    (["--device", "quantum"], "unknown device"),
    (["--amp", "fp16"], "fp16 needs a CUDA device"),
    pytest.param(["--device", "cuda"], "no CUDA device", marks=pytest.mark.skipif(CUDA, reason="CUDA present")),
])
def test_train_commands_refuse_an_absent_device_before_writing(files: dict[str, str], tmp_path: Path, argv: list[str],
                                                              message: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["train", "poolformer_s12"], ["supernet", "train", "--space", files["space"]]):
        out = tmp_path / "-".join(command[:2])
        assert main([*command, "--data", files["data"], "--out", str(out), *argv]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_a_supernet_too_large_for_free_memory_is_refused_before_it_is_made(
        files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    made: list[object] = []
    monkeypatch.setattr("nas.supernet.trainer.Supernet.__init__", lambda *args, **kwargs: made.append(args))
    monkeypatch.setattr("nas.supernet.device.available_host_memory", lambda: 1024)  # 1 KiB free
    out = tmp_path / "too-wide"
    assert main(["supernet", "train", "--space", files["space"], "--data", files["data"], "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "AdamW state alone" in error and "0.0 GiB is free" in error
    assert "--proxy-width" in error and not made and not out.exists()


def test_training_memory_counts_every_local_process_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nas.supernet.device.available_host_memory", lambda: 100 * 2**20)
    CPU.check_training_fits(6 * 2**20 // 16, "six MiB of training state", "")  # fits in 100 MiB
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")  # 32 processes x 6 MiB do not
    with pytest.raises(DeviceError, match="six MiB of training state has 0M parameters"):
        CPU.check_training_fits(6 * 2**20 // 16, "six MiB of training state", "")


def test_bf16_autocast_trains_records_its_precision_and_refuses_another_on_resume(files: dict[str, str],
                                                                                 dataset: Dataset,
                                                                                 tmp_path: Path) -> None:
    bf16 = Placement(torch.device("cpu"), "bf16")
    plain = train_supernet(files["space"], dataset, SETTINGS, options=_options(max_steps=4), **COMMON)
    mixed = train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "bf16",
                           options=_options(bf16, max_steps=4), **COMMON)
    assert all(np.isfinite(losses).all() for losses in mixed.losses)
    assert mixed.losses != plain.losses  # autocast really ran in bfloat16
    assert torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)["amp"] == "bf16"
    with pytest.raises(CheckpointError, match="amp: checkpoint 'bf16', requested 'off'"):
        train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "bf16", resume=True, options=_options(),
                       **COMMON)


def test_a_run_resumed_with_other_threads_follows_the_same_losses(files: dict[str, str], dataset: Dataset,
                                                                 tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        full = train_supernet(files["space"], dataset, SETTINGS, options=_options(), **COMMON)
        train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "run", options=_options(max_steps=4),
                       **COMMON)
        torch.set_num_threads(2)
        resumed = train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "run", resume=True,
                                 options=_options(), **COMMON)
    finally:
        torch.set_num_threads(threads)
    assert len(resumed.losses) == len(full.losses) == 12
    np.testing.assert_allclose(np.array(resumed.losses), np.array(full.losses), rtol=1e-4)


@needs_cuda
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_cuda_training_evaluates_on_the_gpu_and_resumes_on_the_cpu(files: dict[str, str], dataset: Dataset,
                                                                   tmp_path: Path, amp: str) -> None:
    gpu = Placement(torch.device("cuda"), amp)
    options = replace(_options(gpu), evaluate=True)
    full = train_supernet(files["space"], dataset, SETTINGS, options=options, **COMMON)
    assert 0.0 <= full.metrics["largest_accuracy"] <= 1.0
    if amp == "fp16":
        return  # fp16 needs CUDA, so its checkpoint cannot move to the CPU
    train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "run", options=_options(gpu, max_steps=4),
                   **COMMON)
    resumed = train_supernet(files["space"], dataset, SETTINGS, out=tmp_path / "run", resume=True,
                             options=_options(Placement(torch.device("cpu"), amp)), **COMMON)
    tolerance = 1e-3 if amp == "off" else 5e-2
    np.testing.assert_allclose(np.array(resumed.losses), np.array(full.losses), rtol=tolerance)


class _BrokenCompile(torch.nn.Module):
    """What ``torch.compile`` returns for a kind it cannot compile: a wrapper that fails on its first call."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args: object) -> torch.Tensor:
        raise RuntimeError("backend compiler failed")


def test_compile_falls_back_to_eager_with_a_warning_and_the_same_losses(dataset: Dataset, monkeypatch) -> None:
    from nas.errors import NasWarning
    from nas.supernet import train_model
    from nas.zoo import get

    settings = TrainSettings(epochs=1, batch_size=16, seed=1)
    options = TrainOptions(progress=False, evaluate=False, max_steps=3)
    eager = train_model(get("poolformer_s12"), dataset, settings, width=0.125, resolution=16, options=options)
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or _BrokenCompile(module))
    with pytest.warns(NasWarning, match="torch.compile failed on this model"):
        fallen = train_model(get("poolformer_s12"), dataset, settings, width=0.125, resolution=16,
                             options=replace(options, compile=True))
    assert len(compiled) == 1 and fallen.losses == eager.losses


def test_a_supernet_is_never_compiled(files: dict[str, str], dataset: Dataset, monkeypatch) -> None:
    from nas.errors import NasWarning

    monkeypatch.setattr(torch, "compile", lambda module: pytest.fail("the supernet was compiled"))
    with pytest.warns(NasWarning, match="recompile every step"):
        result = train_supernet(files["space"], dataset, SETTINGS, options=replace(_options(max_steps=2),
                                                                                   compile=True), **COMMON)
    assert result.steps == 2
