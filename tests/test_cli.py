"""The `nas` command: output, --json, and one clear error with exit status 2 on bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import nas
from nas.cli import main
from tests.conftest import TINY_DIR


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_build_zoo_model_json(capsys) -> None:
    status, out, _ = run(capsys, "build", "poolformer_s12", "--resolution", "64", "--json")
    assert status == 0
    result = json.loads(out)
    assert result["output_shape"] == [1, 1000]
    assert result["input_shape"] == [1, 3, 64, 64]
    assert abs(result["params"] / 1e6 - 11.9) / 11.9 < 0.01


def test_build_exports_the_same_arch(capsys, tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.json"
    status, out, _ = run(capsys, "build", str(TINY_DIR / "mixer_pooling.yaml"), "--export", str(target))
    assert status == 0 and "exported" in out
    assert nas.Arch.load(target) == nas.Arch.load(TINY_DIR / "mixer_pooling.yaml")


def test_zoo_json_lists_every_model(capsys) -> None:
    status, out, _ = run(capsys, "zoo", "--json")
    assert status == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == nas.zoo.list_zoo()
    assert all(abs(row["params_diff_pct"]) <= 1.0 for row in rows)


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = (TINY_DIR / "mixer_pooling.yaml").read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("input: {resolution: 64", "input: {resolution: [64", "not valid YAML"),
        ("kind: pooling", "kind: poolin",
         "stages[0].blocks.block.mixer.kind: unknown mixer kind 'poolin'; known: pooling"),
        ("pool_size: 3", "pool_size: 4", "stages[0].blocks[0].mixer.pool_size: must be an odd number"),
        ("dim: 24", "dim: -24", "stages[1].dim: must be >= 1"),
        ("ratio: 2}", "ratio: 2, ratio: 3}", "duplicate key 'ratio'"),
    ],
)
def test_bad_input_one_error_status_2_nothing_written(capsys, tmp_path: Path, old: str, new: str,
                                                       expected: str) -> None:
    path = _broken(tmp_path, old, new)
    export = tmp_path / "export.yaml"
    status, out, err = run(capsys, "build", str(path), "--export", str(export))
    assert status == 2
    assert out == ""
    assert err.startswith(f"nas: error: {path}:")
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    assert not export.exists()


def test_missing_file_and_unknown_name(capsys, tmp_path: Path) -> None:
    status, _, err = run(capsys, "build", str(tmp_path / "nope.yaml"))
    assert status == 2 and "nope.yaml: file not found" in err
    status, _, err = run(capsys, "build", "convnxt_tiny")
    assert status == 2 and "unknown zoo model 'convnxt_tiny'" in err


@pytest.mark.skipif(shutil.which("nas") is None, reason="console script not installed in this environment")
def test_console_script_exit_status() -> None:
    done = subprocess.run(["nas", "build", "no_such_model"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("nas: error: unknown zoo model")


def test_module_entry_point() -> None:
    done = subprocess.run([sys.executable, "-m", "nas.cli", "build", "no_such_model"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
