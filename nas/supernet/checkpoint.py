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

Writes go through :func:`nas.atomic.atomic_output`: a reader or a resumed run
sees the previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nas.atomic import atomic_output
from nas.errors import NasError

__all__ = ["FORMAT", "VERSION", "CHECKPOINT", "CheckpointError", "checkpoint_file", "save_checkpoint",
           "load_checkpoint", "check_matches"]

CHECKPOINT = "checkpoint.pt"
"""The checkpoint's file name in a run directory."""
FORMAT = "nas-checkpoint"
VERSION = 1
_REQUIRED = ("format", "version", "kind", "job", "settings", "data", "step", "model", "optimizer", "scheduler",
             "rng", "history")


class CheckpointError(NasError):
    """A checkpoint is missing, unreadable, corrupt, or belongs to another run; the message names the file."""


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file ``path`` names: ``path`` itself, or :data:`CHECKPOINT` in it if it is a run directory."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (with ``format``/``version`` added) to ``path`` atomically."""
    with atomic_output(path) as out:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, out)


def load_checkpoint(path: str | os.PathLike[str], *, kind: str | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: no such file, not a checkpoint (truncated, corrupt, another format or
            version), or of another ``kind``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable nas checkpoint (corrupt or truncated?): {reason}") from None
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
