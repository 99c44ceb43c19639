"""The default supernet of `nas search`: trained once per space and recipe, reused after, finished after a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nas.cli import main
from nas.data import load_dataset
from nas.runs import RUN_FILE, Run
from nas.runs import supernets as default
from nas.runs.supernets import Recipe, default_supernet_dir, ensure_default_supernet
from nas.supernet import TrainOptions, TrainSettings, train_supernet
from tests.test_supernet_train import SPACE

TINY = Recipe(width=1.0, resolution=16, scan=12, epochs=1, batch_size=256, num_random=0, warmup_epochs=0.1)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("space") / "small.yaml"
    path.write_text(SPACE)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, space_file: str) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    ensure_default_supernet(root, space_file, recipe=TINY, progress=False, log=lines.append)
    return root, lines


def test_the_folder_key_follows_the_space_bytes_and_the_recipe(tmp_path: Path, space_file: str) -> None:
    first = default_supernet_dir(tmp_path, space_file, TINY)
    assert first == default_supernet_dir(tmp_path, space_file, TINY) and first.parent == tmp_path / "supernets"
    assert first.name.startswith("small-")
    assert default_supernet_dir(tmp_path, space_file, Recipe(**{**TINY.__dict__, "epochs": 2})) != first
    edited = tmp_path / "edited.yaml"
    edited.write_text(SPACE.replace("pool_size: 3", "pool_size: 5"))
    assert default_supernet_dir(tmp_path, str(edited), TINY) != first


def test_trained_once_then_reused(trained: tuple[Path, list[str]], space_file: str, monkeypatch) -> None:
    root, lines = trained
    folder = default_supernet_dir(root, space_file, TINY)
    assert lines[0].startswith("training a small supernet") and str(folder) in lines[0]
    result = json.loads((folder / "result.json").read_text())
    assert result["steps"] == 30 and result["kind"] == "supernet"  # 7,775 training images // 256

    def no_training(*args, **kwargs):
        raise AssertionError("a trained default supernet must be reused")

    monkeypatch.setattr("nas.supernet.train_supernet", no_training)
    again: list[str] = []
    assert ensure_default_supernet(root, space_file, recipe=TINY, progress=False, log=again.append) == folder
    assert again == [f"one-shot accuracy from the supernet in {folder} (trained earlier)"]


def test_a_killed_training_is_finished_by_the_next_search(tmp_path: Path, space_file: str) -> None:
    folder = default_supernet_dir(tmp_path, space_file, TINY)
    folder.parent.mkdir(parents=True)
    settings = TrainSettings(epochs=1, batch_size=256, num_random=0, warmup_epochs=0.1, seed=0)
    stopped = train_supernet(space_file, load_dataset(None), settings, width=1.0, resolution=16, scan=12,
                             out=folder, options=TrainOptions(max_steps=5, progress=False))
    assert stopped.steps == 5 and not (folder / "result.json").exists()
    lines: list[str] = []
    ensure_default_supernet(tmp_path, space_file, recipe=TINY, progress=False, log=lines.append)
    assert lines[0].startswith("finishing a small supernet")
    assert json.loads((folder / "result.json").read_text())["steps"] == 30


def test_a_supernet_search_without_a_checkpoint_uses_the_default_supernet(
        trained: tuple[Path, list[str]], space_file: str, monkeypatch, capsys) -> None:
    root, _ = trained
    monkeypatch.setattr(default, "DEFAULT_RECIPE", TINY)
    args = ["search", "--space", space_file, "--target", "iphone12", "--budget", "6", "--population", "6",
            "--accuracy", "supernet", "--out", str(root), "--no-plot"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(trained earlier)" in out and "one-shot accuracy (supernet)" in out
    (path,) = [child for child in root.iterdir() if (child / RUN_FILE).is_file()]
    run = Run.open(path)
    assert run.settings.accuracy == "supernet"
    assert run.settings.supernet == str(default_supernet_dir(root, space_file, TINY))
    accuracy = run.history()["accuracy"]
    assert len(accuracy) == 6 and ((accuracy > 0) & (accuracy <= 1)).all()


def test_a_search_reads_its_supernet_checkpoint_once(trained: tuple[Path, list[str]], space_file: str,
                                                     monkeypatch) -> None:
    from nas.search.accuracy import SupernetAccuracy, _load_supernet_version
    from nas.supernet import Supernet

    root, _ = trained
    folder = default_supernet_dir(root, space_file, TINY)
    reads: list[str] = []
    load = Supernet.load
    monkeypatch.setattr(Supernet, "load", classmethod(lambda cls, path: reads.append(str(path)) or load(path)))
    _load_supernet_version.cache_clear()
    first = SupernetAccuracy(space=space_file, checkpoint=str(folder))  # planning the search
    second = SupernetAccuracy(space=space_file, checkpoint=str(folder / "checkpoint.pt"))  # running it
    assert first.supernet is second.supernet and len(reads) == 1
    checkpoint = folder / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    os.utime(checkpoint, ns=(stamp + 10**9, stamp + 10**9))  # a retrained file is read again
    assert SupernetAccuracy(space=space_file, checkpoint=str(folder)).supernet is not first.supernet
    assert len(reads) == 2


def test_an_arch_the_supernet_cannot_run_is_not_measured(trained: tuple[Path, list[str]], space_file: str) -> None:
    import numpy as np

    from nas.arch import Arch
    from nas.search.accuracy import SupernetAccuracy

    root, _ = trained
    source = SupernetAccuracy(space=space_file, checkpoint=str(default_supernet_dir(root, space_file, TINY)))
    runnable = source.supernet.sample(np.random.default_rng(0))
    data = runnable.to_dict()
    data["stages"][0]["blocks"]["repeat"] = 9  # deeper than the supernet's blocks
    too_deep = Arch.from_dict(data)
    assert source.supernet.check(too_deep)
    first, second = source.evaluate([runnable, too_deep])
    assert 0 < first <= 1 and second == -np.inf  # left off the front, ranked after every scored candidate
