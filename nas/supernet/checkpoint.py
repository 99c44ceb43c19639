"""Checkpoints: written atomically, read back with one clear error naming the file.

A checkpoint is one ``torch.save`` file holding plain data and tensors only
(read with ``weights_only=True``, so loading runs no pickled code)::

    format      "nas-checkpoint", version 1
    kind        "supernet" or "model"
    job         what is trained: the supernet's spec, or the arch and proxy scale
    settings    the TrainSettings that fix the loss trajectory
    data        the dataset spec it trains on
    step        optimizer steps done; the run resumes at the next one
    model, optimizer, scheduler   state dicts
    rng         the torch generator's state
    history     per step: losses of every subnet, learning rate, wall-clock seconds
    sha256      the content hash of every tensor in the file (:func:`tensor_digest`)

Writes go through :func:`nas.atomic.atomic_output`: a reader or a resumed run
sees the previous checkpoint or the new one, never a torn file.

The hash lives inside the file, not in a sidecar: one ``os.replace`` publishes
weights and hash together, so a kill between two writes cannot leave a
mismatched pair. It covers the tensors (names, dtypes, shapes, bytes), which
are stored raw in the zip archive, where damage would otherwise load silently;
damage to the pickled plain data almost always fails to unpickle instead.
Checkpoints written before the hash existed (no ``sha256`` key) still load,
unchecked: refusing them would throw away trained supernets, and a resumed
run writes its next checkpoint with a hash.

:func:`read_torch_file` is the one ``torch.load`` of the package: weights only,
on the CPU, every failure one :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nas.atomic import atomic_output
from nas.errors import NasError

__all__ = ["FORMAT", "VERSION", "CHECKPOINT", "HASH_KEY", "CheckpointError", "checkpoint_file", "save_checkpoint",
           "load_checkpoint", "read_torch_file", "tensor_digest", "check_matches"]

CHECKPOINT = "checkpoint.pt"
"""The checkpoint's file name in a run directory."""
FORMAT = "nas-checkpoint"
VERSION = 1
HASH_KEY = "sha256"
"""The key of the tensors' content hash; absent in checkpoints written before it existed."""
_REQUIRED = ("format", "version", "kind", "job", "settings", "data", "step", "model", "optimizer", "scheduler",
             "rng", "history")


class CheckpointError(NasError):
    """A checkpoint is missing, unreadable, corrupt, or belongs to another run; the message names the file."""


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: ``path`` itself, or :data:`CHECKPOINT` in it if it is a run directory."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def _tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, with its path, in insertion order."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{name}[{index}]")


def tensor_digest(data: Any) -> str:
    """The sha256 (hex) of every tensor in ``data``: its path, dtype, shape and bytes, in order.

    Plain values (numbers, strings) are not covered; see the module docstring for why.
    """
    digest = hashlib.sha256()
    for name, tensor in _tensors(data, ""):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {flat.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (with ``format``/``version`` and the tensors' hash added) to ``path`` atomically."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    data[HASH_KEY] = tensor_digest(data)
    with atomic_output(path) as out:
        torch.save(data, out)


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` of ``path`` (weights only, on the CPU), its tensors checked against their hash if it has one.

    Reads nas checkpoints and plain ``state_dict`` files alike.

    Raises:
        CheckpointError: no such file, not loadable (truncated, corrupt, not a torch file), or tensors that
            differ from the hash recorded with them (the file was damaged after it was written).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable nas checkpoint (corrupt or truncated?): {reason}") from None
    recorded = data.get(HASH_KEY) if isinstance(data, dict) else None
    if recorded is not None and tensor_digest(data) != recorded:
        raise CheckpointError(f"{path}: damaged checkpoint: its tensors do not match the {HASH_KEY} recorded "
                              "when it was written; restore a copy or train again")
    return data


def load_checkpoint(path: str | os.PathLike[str], *, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: no such file, not a checkpoint (truncated, corrupt, damaged, another format or
            version), or of another ``kind``.
    """
    path = Path(path)
    data = read_torch_file(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a nas checkpoint (format {found!r}, expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}; this nas reads {VERSION}")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if kind is not None and data["kind"] != kind:
        raise CheckpointError(f"{path}: a {data['kind']} checkpoint, but a {kind} run was asked to resume from it")
    return data


def check_matches(path: str | os.PathLike[str], saved: dict[str, Any], wanted: dict[str, Any], what: str) -> None:
    """Raise :class:`CheckpointError` listing the fields where ``wanted`` differs from the checkpoint's."""
    keys = sorted(set(saved) | set(wanted))
    differ = [f"{key}: checkpoint {saved.get(key)!r}, requested {wanted.get(key)!r}"
              for key in keys if saved.get(key) != wanted.get(key)]
    if differ:
        raise CheckpointError(f"{path}: the checkpoint's {what} differ from this run's ({'; '.join(differ)}); "
                              "resume with the same settings or train into another --out")
