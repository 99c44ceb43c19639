"""A stored trial read back as a :class:`~nas.search.records.Record`, checked as user data.

A run's history may have been edited, copied from another run or written by
another program, so nothing in a trial is trusted: the nas fields must be
there with their types, the counts must match the run's objectives and
constraints, and the Arch is validated as any Arch file is and must be the
one its id names (an Arch edited into another, or into an invalid one, is
refused with the trial's number instead of being shown, plotted, exported or
resumed under its old id).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nas.arch import Arch
from nas.errors import ConfigError
from nas.runs.settings import RunError, RunSettings
from nas.search.records import Record

if TYPE_CHECKING:
    import optuna

__all__ = ["checked_arch", "parse_record"]


def parse_record(trial: optuna.trial.FrozenTrial, settings: RunSettings, *, source: str,
                 where: str) -> tuple[Record, Arch | None]:
    """The Record a COMPLETE trial stores, and its checked Arch (None if the record keeps none).

    Args:
        trial: the stored trial.
        settings: the run's settings (how many objective values and violations a record has).
        source: the storage, for messages about the record.
        where: the storage and line that stored the Arch (``history.journal:12``), for messages about it.

    Raises:
        RunError: ``<source>: trial N ...`` naming what is missing or wrong.
    """
    attrs = trial.user_attrs
    try:
        arch_json = attrs.get("arch")
        if arch_json is not None and not isinstance(arch_json, str):
            raise TypeError(f"arch: a JSON string expected, got {type(arch_json).__name__}")
        record = Record(
            number=trial.number, key=str(attrs["key"]), worker=int(attrs["worker"]),
            vector=np.asarray(attrs["vector"], dtype=np.int16), arch_id=str(attrs["arch_id"]),
            generation=int(attrs["generation"]), parents=tuple(str(p) for p in attrs["parents"]),
            values=tuple(float(v) for v in trial.values),
            violations=tuple(float(v) for v in attrs.get("violations", ())),
            metrics={str(k): float(v) for k, v in dict(attrs.get("metrics", {})).items()},
            arch_json=arch_json,
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise RunError(f"{source}: trial {trial.number} is not a nas record ({type(exc).__name__}: {exc})") from None
    counts = {"values": (len(record.values), len(settings.objectives)),
              "violations": (len(record.violations), len(settings.constraints))}
    for name, (found, wanted) in counts.items():
        if found != wanted:
            raise RunError(f"{source}: trial {trial.number} is not a record of this run: {name}: {found} stored, "
                           f"the run's settings have {wanted}")
    return record, None if record.arch_json is None else checked_arch(record, where)


def checked_arch(record: Record, where: str) -> Arch:
    """The Arch a record stores, validated as any Arch file is and checked to be the one its id names.

    Raises:
        RunError: ``<where>: trial N: arch.<field>: ...`` for an invalid Arch, or an id that does not match.
    """
    try:
        arch = Arch.from_json(record.arch_json or "", source=where)
    except ConfigError as exc:
        raise RunError(f"{where}: trial {record.number}: {exc.located(prefix='arch').path}: {exc.message}") from None
    if arch.id != record.arch_id:
        raise RunError(f"{where}: trial {record.number}: arch_id: {record.arch_id!r} is not the id of the stored "
                       f"arch ({arch.id!r}); the record was changed after it was written")
    return arch
