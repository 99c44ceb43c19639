"""nas.atomic: whole-or-nothing writes that create files with the user's umask, as a plain open() does."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nas.atomic import atomic_output, write_atomic
from nas.cli import main
from nas.runs import PARETO_FILE, RUN_FILE, TOP_DIR, Run
from nas.supernet.checkpoint import save_checkpoint
from tests.test_search import write_tiny_space
from tests.test_search_cli import search_args, the_run


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_and_bytes_land_whole_with_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    text, data = tmp_path / "deep" / "a.yaml", tmp_path / "b.bin"
    write_atomic(text, "schema: 1\nname: ä\n")
    write_atomic(data, b"\x00\xff")
    assert text.read_bytes() == "schema: 1\nname: ä\n".encode() and data.read_bytes() == b"\x00\xff"
    assert mode(text) == mode(data) == mode(plain) == 0o666 & ~umask
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["a.yaml", "b.bin", "deep", "plain.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    write_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_output(target) as out:
        out.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_replacing_a_file_takes_the_umask_not_the_old_mode(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "run.yaml"
    target.write_text("old")
    target.chmod(0o600)
    write_atomic(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o666 & ~umask


def test_search_outputs_plot_export_and_checkpoints_follow_the_umask(tmp_path: Path, umask: int) -> None:
    space = write_tiny_space(tmp_path)
    assert main(search_args(str(space), "--out", str(tmp_path / "runs"), "--budget", "12")) == 0
    run_dir = the_run(tmp_path / "runs")
    from nas.report import plot

    picture, _ = plot(Run.open(run_dir), zoo_space=False)
    assert main(["export", str(run_dir), "--format", "yaml", "--top", "1"]) == 0
    checkpoint = run_dir / "checkpoint.pt"
    save_checkpoint(checkpoint, {"kind": "model", "weights": torch.zeros(2)})
    assert torch.equal(torch.load(checkpoint, weights_only=True)["weights"], torch.zeros(2))
    written = [run_dir / RUN_FILE, run_dir / PARETO_FILE, picture, checkpoint,
               *(run_dir / TOP_DIR).glob("*.yaml"), *(run_dir / "export").glob("*.yaml")]
    assert len(written) >= 6 and picture.suffix == ".png"
    expected = 0o666 & ~umask
    assert {str(path.relative_to(run_dir)): oct(mode(path)) for path in written} == \
        {str(path.relative_to(run_dir)): oct(expected) for path in written}
