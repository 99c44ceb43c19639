"""A persistent table of per-unit numbers, shared by runs: a unit is traced once per machine, not once per process.

Why: a search prices a unit it has not met by tracing it (:mod:`nas.cost`), which costs far more than
summing known units, and every process starts with empty caches, so each run traced again what the runs
before it had priced. :class:`UnitStore` keeps the numbers of :class:`nas.latency.batch.BatchPredictor`
(execution, issue and switching seconds per unit; one file per setting and batch) and of
:class:`nas.latency.batch.CostTable` (parameters and MACs per unit) under ``$NAS_HOME/unit_costs/``, keyed
by a digest of the unit's value (role, component, site; :meth:`nas.latency.batch.UnitSignatures.stable`).
A later process that meets the same unit reads its numbers instead of tracing it; the numbers are the ones
the trace gave, so predictions do not change.

Never silently wrong:

* a table's file name and header carry a fingerprint of everything its numbers depend on (the source of
  the ``nas`` package, the torch version and, for latency, the setting with its coefficients and the batch):
  any change starts another file;
* a file that does not parse, or whose fingerprint, width, entries or checksum do not check, is set aside
  (renamed ``*.corrupt``) with a warning that names it, and the table starts empty (units are traced again).

Concurrency: a file is replaced whole and atomically (:mod:`nas.atomic`), so a reader sees one complete
version. A writer merges what is on disk with its new entries just before it writes; two processes writing
the same file at the same instant may drop each other's newest entries, which are then traced again, never
priced wrong. Within a process every call holds the table's lock. New entries are written every
``flush_every`` entries and when the process exits.

``NAS_UNIT_TABLE=off`` turns the tables off: every process then traces its own units.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from nas.atomic import write_atomic
from nas.errors import NasWarning
from nas.latency.targets import user_dir

__all__ = ["ENV", "UnitStore", "code_fingerprint", "open_store"]

ENV = "NAS_UNIT_TABLE"
FORMAT = "nas-unit-costs"
VERSION = 1
MAX_ENTRIES = 500_000  # entries kept per table; beyond, new units are priced but not stored
_OFF = frozenset({"0", "off", "false", "no"})
_PACKAGE = Path(__file__).resolve().parent.parent


class _Corrupt(Exception):
    """A table file that cannot be trusted (the reason is the message)."""


@cache
def code_fingerprint() -> str:
    """A digest of the ``nas`` package's Python source and the torch version: what traced numbers depend on."""
    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _checksum(entries: Mapping[str, Sequence[Any]]) -> str:
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _number(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float)
                                                                        and math.isfinite(value))


class UnitStore:
    """Numbers per unit key, kept in one JSON file (see the module docstring).

    Args:
        path: the table's file.
        fingerprint: what the numbers depend on; a file with another is not used.
        width: numbers per entry.
        flush_every: new entries held before they are written.

    Thread safety: every method holds the table's lock.
    """

    def __init__(self, path: Path, *, fingerprint: str, width: int, flush_every: int = 256):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.width = width
        self.flush_every = flush_every
        self._entries: dict[str, tuple[Any, ...]] | None = None  # read on first use
        self._pending: dict[str, tuple[Any, ...]] = {}
        self._unwritable = False  # a write failed: keep new entries in memory only
        self._lock = threading.Lock()
        _OPEN.add(self)

    def get(self, key: str) -> tuple[Any, ...] | None:
        """The numbers stored for ``key``, or None."""
        with self._lock:
            return self._loaded().get(key)

    def put(self, entries: Mapping[str, Sequence[Any]]) -> None:
        """Store new entries (kept keys are left as they are); written every ``flush_every`` new entries."""
        with self._lock:
            known = self._loaded()
            for key, numbers in entries.items():
                if key not in known and len(known) < MAX_ENTRIES:
                    known[key] = self._pending[key] = tuple(numbers)
            if len(self._pending) >= self.flush_every and not self._unwritable:
                try:
                    self._write()
                except OSError as exc:  # a full disk or a read-only $NAS_HOME must not stop a search
                    self._unwritable = True
                    warnings.warn(f"unit cost table {self.path} not written ({exc}); this process keeps its "
                                  f"units in memory only", NasWarning, stacklevel=2)

    def flush(self) -> None:
        """Write the new entries now, merged with what the file holds."""
        with self._lock:
            if self._pending and not self._unwritable:
                self._write()

    def __len__(self) -> int:
        with self._lock:
            return len(self._loaded())

    # -- the file -------------------------------------------------------------------------------

    def _loaded(self) -> dict[str, tuple[Any, ...]]:
        if self._entries is None:
            self._entries = self._read_or_set_aside()
        return self._entries

    def _read_or_set_aside(self) -> dict[str, tuple[Any, ...]]:
        try:
            return self._read()
        except _Corrupt as problem:
            aside = self.path.with_name(self.path.name + ".corrupt")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:  # another process set it aside or replaced it first
                pass
            except OSError:  # cannot be moved (a read-only folder): left in place, and not read
                aside = self.path
            where = "left in place" if aside == self.path else f"moved to {aside.name}"
            warnings.warn(f"unit cost table {self.path}: {problem}; {where} and started empty "
                          f"(its units will be traced again)", NasWarning, stacklevel=4)
            return {}

    def _read(self) -> dict[str, tuple[Any, ...]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise _Corrupt(f"unreadable ({exc})") from None
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise _Corrupt(f"not JSON ({exc})") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT or document.get("version") != VERSION:
            raise _Corrupt(f"not a {FORMAT} file of version {VERSION}")
        if document.get("fingerprint") != self.fingerprint or document.get("width") != self.width:
            raise _Corrupt("its fingerprint or width is not the one its name promises")
        entries = document.get("entries")
        if not isinstance(entries, dict) or document.get("checksum") != _checksum(entries):
            raise _Corrupt("its checksum does not match its entries")
        out: dict[str, tuple[Any, ...]] = {}
        for key, numbers in entries.items():
            if not isinstance(numbers, list) or len(numbers) != self.width or not all(map(_number, numbers)):
                raise _Corrupt(f"entry {key!r} is not {self.width} finite numbers")
            out[key] = tuple(numbers)
        return out

    def _write(self) -> None:
        """Merge the file's entries (another process may have added some) with ours, then replace it."""
        merged = self._read_or_set_aside()
        merged.update(self._pending)
        if self._entries is not None:
            self._entries.update(merged)
        entries = {key: list(numbers) for key, numbers in merged.items()}
        document = {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint, "width": self.width,
                    "checksum": _checksum(entries), "entries": entries}
        write_atomic(self.path, json.dumps(document, separators=(",", ":")))
        self._pending.clear()


_OPEN: weakref.WeakSet[UnitStore] = weakref.WeakSet()


@atexit.register
def _flush_open_tables() -> None:
    for store in list(_OPEN):
        try:
            store.flush()
        except OSError as exc:  # a full disk or a read-only $NAS_HOME must not fail the run that just ended
            warnings.warn(f"unit cost table {store.path} not written: {exc}", NasWarning, stacklevel=1)


def open_store(name: str, *parts: str, width: int) -> UnitStore | None:
    """The table ``name`` for numbers that depend on ``parts`` (and on the code), or None when turned off.

    Args:
        name: a file-name-safe label (``latency-iphone12-coreml_fp16-b1``).
        parts: what the numbers depend on besides the code (a setting's ``repr``, the batch).
        width: numbers per entry.
    """
    if os.environ.get(ENV, "").strip().lower() in _OFF:
        return None
    digest = hashlib.sha256("\0".join((code_fingerprint(), *parts)).encode()).hexdigest()
    return UnitStore(user_dir() / "unit_costs" / f"{name}-{digest[:16]}.json", fingerprint=digest, width=width)
