"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file ``nas`` writes for others to read (``run.yaml``, ``pareto.csv``,
``pareto.png``, exported configs, checkpoints, predictor files) goes through
here. The content goes to a temporary file in the destination's folder, is
fsynced, and is renamed over the destination (``os.replace``, atomic on POSIX
and Windows within one file system).

The temporary file is created with mode ``0o666`` filtered by the process's
umask (and a default ACL, where the folder has one), exactly as a plain
``open(path, "w")`` creates a file, so a teammate can read what a search
exports. ``tempfile.mkstemp`` would give ``0o600`` whatever the umask.

A leaf module: it imports nothing of ``nas``, so every package may use it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_output", "write_atomic"]

_CREATE_MODE = 0o666  # what open() asks for; the kernel applies the umask
_NAME_TRIES = 100


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` (a hidden name that no other writer picks), open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_TRIES):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(temporary, flags, _CREATE_MODE), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {_NAME_TRIES} tries")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content into; it replaces ``path`` when the block ends.

    For writers that want a file object (``torch.save``, ``Figure.savefig``). The parent folder is
    created if missing. If the block raises, ``path`` is left as it was and the temporary file removed.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "weights.bin"
        >>> with atomic_output(target) as out:
        ...     _ = out.write(b"\\x00\\x01")
        >>> target.read_bytes()
        b'\\x00\\x01'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically (see the module docstring)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    with atomic_output(path) as out:
        out.write(data)
