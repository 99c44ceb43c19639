"""Fuzz tests for issue 20, categories 4 and 7: output paths, counts and numbers on the command line, and
damaged or foreign checkpoints.

Every bad case must give exit status 2, exactly one line on stderr naming the argument or file, and leave every
file that existed before byte for byte as it was, with no new file or folder. Cases are sampled by hypothesis
(small ``max_examples``), in-process through ``nas.cli.main``.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import nas
from nas.cli import main
from nas.commands.base import (
    MAX_BATCH,
    MAX_CANDIDATES,
    MAX_PRINTED_POINTS,
    MAX_SEED,
    MAX_STEPS,
    count,
    max_resolution,
    max_threads,
    output_dir,
    output_file,
)
from nas.supernet.checkpoint import HASH_KEY, CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import TINY_DIR
from tests.test_search import write_tiny_space

POOLING = TINY_DIR / "mixer_pooling.yaml"
FUZZ = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DAMAGE = 4096  # bytes overwritten, as in the issue
UNWRITABLE = Path("/proc/nas-fuzz")  # a folder no one can create files in, root included


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``nas argv`` (argparse exits through SystemExit)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes (None for a folder) under ``folder``."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))}


def assert_refused(code: int, err: list[str], *names: str) -> None:
    assert code == 2, err
    assert len(err) == 1, err
    for name in names:
        assert name in err[0], (name, err[0])


# ---------------------------------------------------------------------------
# checkpoints (category 7)


def _payload(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """What a model checkpoint holds, with ``state`` as the trained weights."""
    return {"kind": "model", "job": {"arch": "tiny"}, "settings": {"lr": 1e-3}, "data": "bundled", "step": 3,
            "model": state, "optimizer": {"state": {}, "param_groups": []}, "scheduler": {},
            "rng": torch.Generator().manual_seed(0).get_state(), "history": [{"losses": [1.5], "lr": 1e-3}],
            "state_dict": state}


def _tensor_spans(path: Path) -> list[tuple[int, int]]:
    """``(start, size)`` in the file of each tensor's raw bytes (the zip entries under ``data/``)."""
    raw = path.read_bytes()
    spans = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if "/data/" in info.filename and info.compress_type == zipfile.ZIP_STORED:
                name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
                spans.append((info.header_offset + 30 + name_length + extra_length, info.file_size))
    return spans


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hashed nas checkpoint of the tiny pooling arch's weights."""
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    save_checkpoint(path, _payload(nas.build(nas.Arch.load(POOLING)).state_dict()))
    return path


def test_a_checkpoint_records_its_tensors_hash_and_loads_back(trained_checkpoint: Path) -> None:
    data = load_checkpoint(trained_checkpoint, kind="model")
    assert len(data[HASH_KEY]) == 64
    assert torch.equal(data["model"]["stem.0.proj.weight"],
                       torch.load(trained_checkpoint, weights_only=True)["model"]["stem.0.proj.weight"])


def test_a_checkpoint_written_before_the_hash_still_loads(trained_checkpoint: Path, tmp_path: Path) -> None:
    """Old checkpoints have no hash: loaded unchecked, so trained supernets are not thrown away."""
    old = torch.load(trained_checkpoint, weights_only=True)
    del old[HASH_KEY]
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt", kind="model")["step"] == 3


@FUZZ
@given(data=st.data())
def test_damaged_tensor_data_is_refused_with_the_path(trained_checkpoint: Path, capsys, data) -> None:
    """4 KB overwritten inside a tensor's bytes loads fine in torch; the hash refuses it, in the library and in
    `nas export --checkpoint`, and the damaged file stays as it is."""
    start, size = data.draw(st.sampled_from([span for span in _tensor_spans(trained_checkpoint) if span[1] >= DAMAGE]))
    offset = start + data.draw(st.integers(0, size - DAMAGE))
    original = trained_checkpoint.read_bytes()
    garbage = random.Random(data.draw(st.integers(0, 2**32 - 1))).randbytes(DAMAGE)
    assume(garbage != original[offset:offset + DAMAGE])
    with tempfile.TemporaryDirectory() as folder:
        damaged = Path(folder) / "damaged.pt"
        damaged.write_bytes(original[:offset] + garbage + original[offset + DAMAGE:])
        torch.load(damaged, weights_only=True)  # torch alone does not notice
        before = tree(Path(folder))
        with pytest.raises(CheckpointError, match=f"{damaged}: damaged checkpoint"):
            load_checkpoint(damaged)
        code, err = cli(["export", str(POOLING), "--format", "torch", "--checkpoint", str(damaged),
                         "--out", str(Path(folder) / "out")], capsys)
        assert_refused(code, err, str(damaged), "damaged checkpoint")
        assert tree(Path(folder)) == before


@FUZZ
@given(content=st.one_of(st.binary(max_size=2000), st.text(max_size=200).map(str.encode)),
       torn=st.booleans())
def test_garbage_or_torn_checkpoint_is_one_line(trained_checkpoint: Path, capsys, content: bytes,
                                                torn: bool) -> None:
    """`nas export --checkpoint` reads through the same safe loader as `--supernet`: no torch.load traceback."""
    if torn:
        original = trained_checkpoint.read_bytes()
        content = original[:len(content) % len(original)]
    with tempfile.TemporaryDirectory() as folder:
        garbage = Path(folder) / "weights.pt"
        garbage.write_bytes(content)
        before = tree(Path(folder))
        code, err = cli(["export", str(POOLING), "--format", "torch", "--checkpoint", str(garbage),
                         "--out", str(Path(folder) / "out")], capsys)
        assert_refused(code, err, str(garbage))
        assert tree(Path(folder)) == before


def test_search_refuses_a_damaged_supernet_and_writes_nothing(trained_checkpoint: Path, tmp_path: Path,
                                                              capsys) -> None:
    start, size = max(_tensor_spans(trained_checkpoint), key=lambda span: span[1])
    raw = bytearray(trained_checkpoint.read_bytes())
    raw[start:start + DAMAGE] = bytes(255 - byte for byte in raw[start:start + DAMAGE])
    damaged = tmp_path / "supernet.pt"
    damaged.write_bytes(bytes(raw))
    space = write_tiny_space(tmp_path)
    before = tree(tmp_path)
    code, err = cli(["search", "--space", str(space), "--target", "iphone12", "--budget", "4", "--accuracy",
                     "supernet", "--supernet", str(damaged), "--out", str(tmp_path / "runs"), "--no-plot"], capsys)
    assert_refused(code, err, str(damaged), "damaged checkpoint")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------------------
# output paths (category 4)

# (command line before the path, the flag, what the path is: "file" or "dir")
OUTPUT_ARGUMENTS = [
    (["build", str(POOLING)], "--export", "file"),
    (["plot", "runs/none"], "--out", "file"),
    (["export", str(POOLING), "--format", "yaml"], "--out", "dir"),
    (["search", "--space", "tiny", "--target", "iphone12"], "--out", "dir"),
    (["search", "--space", "tiny", "--target", "iphone12"], "--storage", "file"),
    (["train", str(POOLING)], "--out", "dir"),
    (["supernet", "train", "--space", "tiny"], "--out", "dir"),
]


def _bad_paths(root: Path, kind: str) -> list[tuple[Path, str]]:
    """``(path, what the error names)`` that an output of ``kind`` must refuse; ``root`` holds a file ``taken``
    and a folder ``folder``."""
    under_a_file = (root / "taken" / "x.yaml", str(root / "taken"))
    unwritable = (UNWRITABLE / "x.yaml", str(UNWRITABLE.parent))
    if kind == "file":
        return [(root / "folder", str(root / "folder")), (root / "missing" / "deeper" / "x.yaml",
                                                         str(root / "missing" / "deeper")), under_a_file, unwritable]
    return [(root / "taken", str(root / "taken")), under_a_file, unwritable]


@FUZZ
@given(case=st.sampled_from(OUTPUT_ARGUMENTS), pick=st.integers(0, 3))
def test_bad_output_paths_are_one_line_and_create_nothing(capsys, case, pick: int) -> None:
    prefix, flag, kind = case
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "taken").write_text("a file the user keeps\n")
        (root / "folder").mkdir()
        (root / "folder" / "kept.yaml").write_text("kept: 1\n")
        before = tree(root)
        paths = _bad_paths(root, kind)
        path, named = paths[pick % len(paths)]
        code, err = cli([*prefix, flag, str(path)], capsys)
        assert_refused(code, err, f"argument {flag}", named)
        assert tree(root) == before
        assert not UNWRITABLE.exists()


def test_output_file_refuses_a_tree_of_new_folders_and_parsing_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(nas.NasError, match="no such folder"):
        output_file(str(tmp_path / "nonexistent" / "dir" / "x.yaml"))
    assert output_file(str(tmp_path / "x.yaml")) == tmp_path / "x.yaml"
    assert output_file(str(tmp_path / "new" / "x.yaml")) == tmp_path / "new" / "x.yaml"  # one new folder: made
    assert output_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# counts and numbers (category 4)

# (command line before the value, the flag, smallest, largest)
COUNT_ARGUMENTS = [
    (["search", "--space", "tiny", "--target", "iphone12"], "--budget", 1, MAX_CANDIDATES),
    (["search", "--space", "tiny", "--target", "iphone12"], "--population", 1, MAX_CANDIDATES),
    (["search", "--space", "tiny", "--target", "iphone12"], "--top", 1, MAX_CANDIDATES),
    (["search", "--space", "tiny", "--target", "iphone12"], "--seed", 0, MAX_SEED),
    (["search", "--space", "tiny", "--target", "iphone12"], "--threads", 1, max_threads()),
    (["export", "runs/none", "--format", "yaml"], "--top", 1, MAX_CANDIDATES),
    (["finalists", "runs/none"], "--count", 1, MAX_CANDIDATES),
    (["finalists", "runs/none"], "--epochs", 1, MAX_STEPS),
    (["finalists", "runs/none"], "--threads", 1, max_threads()),
    (["predict", "no_such_arch", "--target", "iphone12"], "--batch", 1, MAX_BATCH),
    (["profile", "--target", "local"], "--threads", 1, max_threads()),
    (["profile", "--target", "local"], "--fit-archs", 1, MAX_CANDIDATES),
    (["profile", "--target", "local"], "--repeats", 1, MAX_STEPS),
    (["profile", "--target", "local"], "--passes", 1, MAX_STEPS),
    (["profile", "--target", "local"], "--warmup", 0, MAX_STEPS),
    (["profile", "--target", "local"], "--seed", 0, MAX_SEED),
    (["space", "sample", "swin"], "-n", 1, MAX_PRINTED_POINTS),  # each point decoded and held until printed
    (["space", "sample", "swin"], "--seed", 0, MAX_SEED),
    (["train", "no_such_arch"], "--epochs", 1, MAX_STEPS),
    (["train", "no_such_arch"], "--batch-size", 1, MAX_BATCH),
    (["train", "no_such_arch"], "--max-steps", 1, MAX_STEPS),
    (["train", "no_such_arch"], "--checkpoint-every", 1, MAX_STEPS),
    (["train", "no_such_arch"], "--threads", 1, max_threads()),
    (["supernet", "train", "--space", "tiny"], "--num-random", 0, MAX_BATCH),
    (["supernet", "train", "--space", "tiny"], "--scan", 1, MAX_CANDIDATES),
    (["supernet", "train", "--space", "tiny"], "--resolution", 1, max_resolution()),
]


@FUZZ
@given(case=st.sampled_from(COUNT_ARGUMENTS), data=st.data())
def test_counts_out_of_bounds_name_the_limit(capsys, case, data) -> None:
    prefix, flag, smallest, largest = case
    value = data.draw(st.one_of(st.integers(largest + 1, 10**30), st.integers(-(10**30), smallest - 1)))
    code, err = cli([*prefix, f"{flag}={value}"], capsys)
    limit = f"must be <= {largest}" if value > largest else f"must be >= {smallest}"
    assert_refused(code, err, f"argument {flag.split('/')[0]}", limit, str(value))


@FUZZ
@given(case=st.sampled_from(COUNT_ARGUMENTS), text=st.sampled_from(["1e3", "nan", "inf", "", "2.5", "ten", "0x10"]))
def test_counts_that_are_not_integers(capsys, case, text: str) -> None:
    prefix, flag, _, _ = case
    code, err = cli([*prefix, f"{flag}={text}"], capsys)
    assert_refused(code, err, f"argument {flag}", "expected an integer")


@FUZZ
@given(flag=st.sampled_from(["--lr", "--proxy-width"]),
       text=st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e400", "fast"]),
       prefix=st.sampled_from([["train", "no_such_arch"], ["supernet", "train", "--space", "tiny"]]))
def test_training_floats_must_be_finite_and_positive(capsys, flag: str, text: str, prefix: list[str]) -> None:
    code, err = cli([*prefix, f"{flag}={text}"], capsys)
    assert_refused(code, err, f"argument {flag}")


@pytest.mark.parametrize(("parse", "text", "value"), [
    (count(MAX_CANDIDATES), str(MAX_CANDIDATES), MAX_CANDIDATES),
    (count(MAX_SEED, minimum=0), "0", 0),
    (count(max_threads), str(os.cpu_count() or 1), os.cpu_count() or 1),
])
def test_counts_at_their_bounds_are_accepted(parse: Callable[[str], int], text: str, value: int) -> None:
    assert parse(text) == value
