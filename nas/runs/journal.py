"""A run's journal read defensively: every line checked before Optuna replays it.

Optuna's :class:`~optuna.storages.JournalStorage` trusts its file: an unknown
operation ends in ``AssertionError``, a missing field in ``KeyError``, a
duplicated line becomes a second trial, and a last line cut short (a write
stopped by kill -9) is skipped without a word. A run directory is user data
that may have been copied, cut or edited, so :func:`scan_journal` reads it
first, read-only, and turns each of these into one :class:`RunError` naming
the file, the line and the field (``history.journal:12: trial_id: ...``).

The checks are structural (the fields Optuna's replay reads, their types, ids
that refer to a study or trial created on an earlier line); what a trial
holds (the nas record and its Arch) is checked when it is read back
(:mod:`nas.runs.trials`).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasWarning
from nas.runs.settings import RunError

__all__ = ["JournalScan", "JournalWarning", "drop_cut_tail", "keep_backup", "scan_history", "scan_journal"]

_STATES = range(5)  # optuna.trial.TrialState: RUNNING, COMPLETE, PRUNED, FAIL, WAITING
_DIRECTIONS = range(3)  # optuna.study.StudyDirection: NOT_SET, MINIMIZE, MAXIMIZE
_CREATE_STUDY = 0
_CREATE_TRIAL = 4
_SET_TRIAL_USER_ATTR = 8


class JournalWarning(NasWarning):
    """Something in a journal that readers get past but should hear about (a cut last line, its repair)."""


@dataclass
class JournalScan:
    """What :func:`scan_journal` found in a journal that passed its checks.

    Attributes:
        path: the journal file.
        whole_bytes: length of the complete lines (those ending in a newline).
        lines: how many complete lines.
        cut_tail: the last line if it lacks its newline (a write cut short), else ``b""``.
        arch_lines: trial id -> the line that stored the trial's ``arch`` user attribute.
    """

    path: Path
    whole_bytes: int = 0
    lines: int = 0
    cut_tail: bytes = b""
    arch_lines: dict[int, int] = field(default_factory=dict)

    @property
    def cut_line(self) -> int | None:
        """The 1-based line number of the cut tail, if there is one."""
        return self.lines + 1 if self.cut_tail else None


class _Problem(Exception):
    """A field of one record is wrong (turned into a RunError with the file and line)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a mapping"


def _one_pair(value: Any) -> str | None:
    return None if isinstance(value, dict) and len(value) == 1 else "must be a mapping of one name to its value"


def _state(value: Any) -> str | None:
    return None if _is_int(value) and value in _STATES else f"must be a trial state 0-4, got {value!r}"


def _directions(value: Any) -> str | None:
    if isinstance(value, list) and value and all(_is_int(d) and d in _DIRECTIONS for d in value):
        return None
    return f"must be a non-empty list of study directions 0-2, got {value!r}"


def _numbers_or_null(value: Any) -> str | None:
    if value is None or (isinstance(value, list) and all(_is_number(v) for v in value)):
        return None
    return f"must be a list of numbers or null, got {value!r}"


def _number_or_null(value: Any) -> str | None:
    return None if value is None or _is_number(value) else f"must be a number or null, got {value!r}"


def _number(value: Any) -> str | None:
    return None if _is_number(value) else f"must be a number, got {value!r}"


def _integer(value: Any) -> str | None:
    return None if _is_int(value) else f"must be an integer, got {value!r}"


def _time_or_null(value: Any) -> str | None:
    if value is None:
        return None
    try:
        datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return f"must be an ISO date and time or null, got {value!r}"
    return None


_Check = Callable[[Any], "str | None"]

# op_code -> (name, required fields, optional fields): what Optuna's replay reads
# (optuna/storages/journal/_storage.py, JournalStorageReplayResult._apply_*). ``study_id`` and ``trial_id``
# are checked against the studies and trials created above them.
_OPERATIONS: dict[int, tuple[str, dict[str, _Check], dict[str, _Check]]] = {
    0: ("create study", {"study_name": _text, "directions": _directions}, {}),
    1: ("delete study", {"study_id": _integer}, {}),
    2: ("set study user attr", {"study_id": _integer, "user_attr": _one_pair}, {}),
    3: ("set study system attr", {"study_id": _integer, "system_attr": _one_pair}, {}),
    4: ("create trial", {"study_id": _integer},
        {"state": _state, "values": _numbers_or_null, "value": _number_or_null, "datetime_start": _time_or_null,
         "datetime_complete": _time_or_null, "user_attrs": _mapping, "system_attrs": _mapping,
         "distributions": _mapping, "params": _mapping, "intermediate_values": _mapping}),
    5: ("set trial param", {"trial_id": _integer, "param_name": _text, "param_value_internal": _number,
                            "distribution": _text}, {}),
    6: ("set trial state", {"trial_id": _integer, "state": _state, "values": _numbers_or_null},
        {"datetime_start": _time_or_null, "datetime_complete": _time_or_null}),
    7: ("set trial intermediate value", {"trial_id": _integer, "step": _integer,
                                         "intermediate_value": _number_or_null}, {}),
    8: ("set trial user attr", {"trial_id": _integer, "user_attr": _one_pair}, {}),
    9: ("set trial system attr", {"trial_id": _integer, "system_attr": _one_pair}, {}),
    10: ("discard trials", {}, {}),  # written only by Rustuna; Optuna's replay skips it
}


class _Replay:
    """The ids created so far, so a record that refers to a later or absent study or trial is caught."""

    def __init__(self) -> None:
        self.studies = 0
        self.trials = 0

    def check(self, record: dict[str, Any]) -> None:
        op = record.get("op_code")
        if not _is_int(op) or op not in _OPERATIONS:
            raise _Problem("op_code", f"unknown journal operation {op!r} (known: 0-{max(_OPERATIONS)})")
        if not isinstance(record.get("worker_id"), str):
            raise _Problem("worker_id", "missing or not a string")
        name, required, optional = _OPERATIONS[op]
        for key in required:
            if key not in record:
                raise _Problem(key, f"missing from a {name!r} record")
        for key, check in {**required, **optional}.items():
            problem = check(record[key]) if key in record else None
            if problem:
                raise _Problem(key, problem)
        if "study_id" in required and not 0 <= record["study_id"] < self.studies:
            raise _Problem("study_id", f"no study {record['study_id']} was created above this line")
        if "trial_id" in required and not 0 <= record["trial_id"] < self.trials:
            raise _Problem("trial_id", f"no trial {record['trial_id']} was created above this line")
        self.studies += op == _CREATE_STUDY
        self.trials += op == _CREATE_TRIAL


def _stored_arch(record: dict[str, Any]) -> bool:
    op = record["op_code"]
    return (op == _CREATE_TRIAL and "arch" in record.get("user_attrs", {})) or (
        op == _SET_TRIAL_USER_ATTR and "arch" in record["user_attr"])


def scan_journal(path: Path) -> JournalScan:
    """Check every complete line of the journal at ``path``, reading it only.

    Returns:
        What was found, including a cut last line (reported, not an error: a kill leaves one).

    Raises:
        RunError: the file is unreadable, or a line is not JSON, names an unknown operation, lacks a field
            Optuna needs, refers to a study or trial not created above it, or repeats an earlier trial's line
            byte for byte (``<file>:<line>: <field>: <what is wrong>``).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: cannot read the journal: {exc.strerror or exc}") from None
    whole = data.rfind(b"\n") + 1
    scan = JournalScan(path, whole_bytes=whole, cut_tail=data[whole:])
    replay = _Replay()
    created: dict[bytes, int] = {}
    for number, line in enumerate(data[:whole].split(b"\n")[:-1], start=1):  # lines as Optuna reads them
        scan.lines = number
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}:{number}: not a journal record: {getattr(exc, 'msg', exc)}") from None
        if not isinstance(record, dict):
            raise RunError(f"{path}:{number}: not a journal record: a JSON {type(record).__name__}, not an object")
        try:
            replay.check(record)
        except _Problem as problem:
            raise RunError(f"{path}:{number}: {problem}") from None
        if record["op_code"] == _CREATE_TRIAL:
            if line in created:
                raise RunError(f"{path}:{number}: duplicate record: line {created[line]} again (a trial recorded "
                               f"twice; remove one copy)")
            created[line] = number
        if _stored_arch(record):
            trial = replay.trials - 1 if record["op_code"] == _CREATE_TRIAL else record["trial_id"]
            scan.arch_lines[trial] = number
    return scan


def scan_history(path: Path, *, create: bool, resume: Path | None) -> JournalScan | None:
    """:func:`scan_journal` for a run about to open its history; None where there is nothing to scan.

    Args:
        path: the journal file.
        create: the caller may create the journal: a missing one is no error (opening would create it, so a
            reader must not get that far).
        resume: the run directory whose own journal this is: a cut last line (which Optuna ignores) is then
            reported in a :class:`JournalWarning` with the command that repairs it. None for a shared journal,
            whose last line may be another worker's write in progress.

    Raises:
        RunError: the journal is missing (and not ``create``) or malformed.
    """
    if path.is_dir():
        return None  # open_storage refuses it with its own message
    if not os.path.lexists(path):
        if create:
            return None
        raise RunError(f"{path}: missing (the run's history is gone)")
    scan = scan_journal(path)
    if scan.cut_tail and resume is not None:
        warnings.warn(f"{path}:{scan.cut_line}: the last record is cut short (a write stopped by a kill) and is "
                      f"ignored; `nas search --resume {resume}` drops it, keeping a backup", JournalWarning,
                      stacklevel=4)
    return scan


def drop_cut_tail(scan: JournalScan) -> Path:
    """Cut the journal back to its whole lines, after keeping it as it was (:func:`keep_backup`); returns
    the backup, also named in a :class:`JournalWarning`."""
    backup = keep_backup(scan.path)
    with scan.path.open("rb+") as handle:
        handle.truncate(scan.whole_bytes)
    warnings.warn(f"{scan.path}:{scan.cut_line}: dropped the last record, cut short by a kill; the journal as it "
                  f"was is kept as {backup.name}", JournalWarning, stacklevel=3)
    return backup


def keep_backup(path: Path) -> Path:
    """Copy ``path`` to a new ``<name>.<YYYYmmdd-HHMMSS>[-N].bak`` beside it (never over an older backup)."""
    stamp = f"{datetime.datetime.now():%Y%m%d-%H%M%S}"
    for attempt in range(1000):
        backup = path.with_name(f"{path.name}.{stamp}{f'-{attempt}' if attempt else ''}.bak")
        if not os.path.lexists(backup):
            shutil.copy2(path, backup)
            return backup
    raise RunError(f"{path}: no free backup name beside it")
