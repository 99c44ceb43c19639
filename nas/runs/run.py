"""The :class:`Run`: one run directory, its history (an Optuna study) and its outputs (see :mod:`nas.runs`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import secrets
import shutil
import socket
import types
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.arch import Arch
from nas.atomic import write_atomic
from nas.errors import ConfigError
from nas.runs.journal import JournalScan, JournalWarning, drop_cut_tail, scan_history
from nas.runs.settings import RUN_FILE, RunError, RunSettings, package_versions
from nas.runs.storage import journal_path, open_storage, sqlite_file
from nas.runs.trials import checked_arch, parse_record
from nas.runs.workers import admit, claim_worker, complete_slot, find_number, wait_for_running
from nas.search.pareto import front_candidates, front_mask, front_reference, hypervolume_curve, select_survivors
from nas.search.records import Admission, Proposal, Record, loss_matrix, violation_vector
from nas.yamlio import dump_yaml, load_yaml

if TYPE_CHECKING:
    import optuna
    import pandas

__all__ = ["Run", "list_runs", "JOURNAL_FILE", "PARETO_FILE", "TOP_DIR", "PLOT_FILE", "OWNER_FILE"]

JOURNAL_FILE = "history.journal"
PARETO_FILE = "pareto.csv"
TOP_DIR = "top"
PLOT_FILE = "pareto.png"
OWNER_FILE = ".owner"
RUN_SCHEMA = 1
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", Path(text).stem if text.endswith((".yaml", ".yml")) else text)[:40]


def list_runs(root: str | os.PathLike[str] = "runs") -> list[Path]:
    """Run directories under ``root`` (those with a ``run.yaml``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if (path / RUN_FILE).is_file())


class Run:
    """A run directory: settings, history (an Optuna study), outputs.

    Create with :meth:`create` (a new directory) or :meth:`open` (an existing one).
    The search loop (:func:`nas.search.optimize`) uses :meth:`attach`,
    :meth:`refresh`, :meth:`record`, :meth:`count` and :meth:`study`; readers use
    :meth:`history`, :attr:`archs`, :meth:`pareto`, :meth:`top`,
    :meth:`hypervolume` and :meth:`write_outputs`.

    Attributes:
        path: the run directory.
        settings: the typed settings from ``run.yaml``.
        created: ISO time of creation.
        versions: package versions at creation.
        worker: this process's worker index once :meth:`attach` ran (0 for the first worker of a study).
    """

    def __init__(self, path: Path, settings: RunSettings, *, created: str, versions: dict[str, str],
                 extra: dict[str, Any] | None = None):
        self.path = path
        self.settings = settings
        self.created = created
        self.versions = versions
        self.extra = dict(extra or {})
        self.worker = 0
        self._storage: optuna.storages.BaseStorage | None = None
        self._study: optuna.Study | None = None
        self._seen = 0
        self._records: list[Record] = []
        self._known: set[int] = set()
        self._scan: JournalScan | None = None
        self._made: tuple[Path, ...] = ()  # what Run.create made (run directory, runs folder), for discard_unrecorded
        self._recorded = 0
        self._archs: dict[str, Arch] = {}
        self._slots: dict[str, int] = {}  # proposal key -> its admitted RUNNING trial (shared storages)

    # -- creation and opening -----------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike[str], settings: RunSettings, *, extra: dict[str, Any] | None = None,
               name: str | None = None) -> Run:
        """Make a new run directory under ``root`` with its ``run.yaml`` and an empty study.

        The directory is assembled under a hidden temporary name and renamed into
        place only once the storage has been opened and the study created, so a
        failure (an unreachable database, a study with other objectives) leaves
        nothing behind.

        Args:
            root: the runs folder (created if missing).
            settings: every setting of the search.
            extra: more plain data for ``run.yaml`` (the command line, notes).
            name: the directory name; default ``<date>-<space>-<target>-<6 hex>``.

        Raises:
            RunError: the storage cannot be used or the study does not match the settings.
        """
        root = Path(root)
        stamp = datetime.datetime.now()
        name = name or (f"{stamp:%Y%m%d-%H%M%S}-{_safe_name(settings.space)}-{_safe_name(settings.target)}-"
                        f"{secrets.token_hex(3)}")
        final = root / name
        if final.exists():
            raise RunError(f"{final}: already exists")
        staging = root / f".{name}.tmp"
        made_root = not root.exists()
        run = cls(staging, settings, created=stamp.isoformat(timespec="seconds"), versions=package_versions(),
                  extra=extra)
        try:
            staging.mkdir(parents=True)
            run._write_settings()
            run.study(create=True)
            run._close()
            os.rename(staging, final)
        except BaseException:
            run._close()
            shutil.rmtree(staging, ignore_errors=True)
            if made_root:
                with contextlib.suppress(OSError):
                    root.rmdir()  # only if still empty: another worker may have started a run there
            raise
        run.path = final
        run._made = (final, root) if made_root else (final,)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Run:
        """Open an existing run directory (reads ``run.yaml``; the history is read on demand).

        Raises:
            RunError: the directory or ``run.yaml`` is missing or malformed (the message names the file).
        """
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"{path}: no such run directory")
        source = path / RUN_FILE
        if not source.is_file():
            raise RunError(f"{source}: missing; {path} is not a run directory")
        try:
            data = load_yaml(source)
        except ConfigError as exc:
            raise RunError(f"{source}: corrupt run file: {exc.message}") from None
        if not isinstance(data, Mapping) or data.get("schema") != RUN_SCHEMA or "settings" not in data:
            raise RunError(f"{source}: corrupt run file: expected a mapping with schema: {RUN_SCHEMA} and settings")
        settings = RunSettings.from_dict(data["settings"], source=str(source))
        versions = {str(key): str(value) for key, value in dict(data.get("versions") or {}).items()}
        extra = {key: value for key, value in data.items() if key not in ("schema", "settings", "versions", "created")}
        return cls(path, settings, created=str(data.get("created", "")), versions=versions, extra=extra)

    def _write_settings(self) -> None:
        document = {"schema": RUN_SCHEMA, "created": self.created, "settings": self.settings.to_dict(),
                    "versions": self.versions, **self.extra}
        write_atomic(self.path / RUN_FILE, dump_yaml(document))

    def _close(self) -> None:
        self._study = None
        if self._storage is not None and hasattr(self._storage, "remove_session"):
            self._storage.remove_session()
        self._storage = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def shared(self) -> bool:
        """Whether the history is in a storage other workers may share (``settings.storage``)."""
        return self.settings.storage is not None

    @property
    def storage_url(self) -> str:
        """Where the history is: the shared storage URL, or this run's journal file."""
        return self.settings.storage or str(self.path / JOURNAL_FILE)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, strategy={self.settings.strategy!r}, budget={self.settings.budget})"

    # -- the study ----------------------------------------------------------------------------

    def study(self, *, create: bool = False) -> optuna.Study:
        """The run's Optuna study (loaded once per Run object).

        Args:
            create: create the study if the storage has none of that name (``Run.create`` and shared storages).

        Raises:
            RunError: missing study, corrupt journal, or a study whose directions differ from the settings.
        """
        if self._study is not None:
            return self._study
        import optuna

        if self._storage is None:
            self._scan = self._check_journal(create=create)
            self._storage = open_storage(self.storage_url)
        names = {summary.study_name: summary for summary in optuna.get_all_study_summaries(self._storage)}
        wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
                  for d in self.settings.directions]
        summary = names.get(self.settings.study)
        if summary is None and not create:
            raise RunError(f"{self.storage_url}: no study {self.settings.study!r} (the run's history is missing)")
        if summary is not None and list(summary.directions) != wanted:
            raise RunError(f"{self.storage_url}: study {self.settings.study!r} optimises "
                           f"{[d.name.lower() for d in summary.directions]}, this run "
                           f"{self.settings.directions}; use another --study name")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if summary is not None:  # loading writes nothing (readers need no lock)
                self._study = optuna.load_study(storage=self._storage, study_name=self.settings.study)
            else:
                self._study = optuna.create_study(storage=self._storage, study_name=self.settings.study,
                                                  directions=self.settings.directions,  # type: ignore[arg-type]
                                                  load_if_exists=True)
        return self._study

    def repair(self) -> bool:
        """Before resuming a run's own journal: refuse if a live process still runs it, then drop what a
        killed one left: its journal lock file and a last line cut short. True if a line was dropped.

        Every record is checked first (:meth:`records`), so a journal that cannot be resumed is refused
        unchanged; the cut line is dropped only after the original journal is kept as a backup
        (``history.journal.<time>.bak``, named in a :class:`~nas.runs.journal.JournalWarning`).
        A shared storage (``settings.storage``) is left alone: other workers may be writing.

        Raises:
            RunError: another live process on this machine is running this run, or a record is malformed.
        """
        if self.settings.storage is not None:
            return False
        owner = self._owner()
        if owner is not None and owner != os.getpid():
            raise RunError(f"{self.path}: in use by process {owner}; wait for it or stop it before resuming")
        self._close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JournalWarning)  # the cut line is reported below, once dropped
            self.records()
        scan = self._scan
        self._close()
        journal = self.path / JOURNAL_FILE
        lock = journal.with_name(journal.name + ".lock")
        if os.path.lexists(lock):
            os.unlink(lock)
        if scan is None or not scan.cut_tail:
            return False
        drop_cut_tail(scan)
        return True

    def _owner(self) -> int | None:
        """The pid of a live process on this host that claimed the run, if any."""
        try:
            host, pid = (self.path / OWNER_FILE).read_text(encoding="utf-8").split()
            pid_value = int(pid)
        except (OSError, ValueError):
            return None
        if host != socket.gethostname():
            return None
        try:
            os.kill(pid_value, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid_value
        return pid_value

    def claim(self) -> None:
        """Mark the run's own journal as being run by this process (``.owner``; see :meth:`repair`)."""
        if self.settings.storage is None:
            write_atomic(self.path / OWNER_FILE, f"{socket.gethostname()} {os.getpid()}\n")

    def release(self) -> None:
        """Undo :meth:`claim`."""
        if self.settings.storage is None and self._owner() == os.getpid():
            (self.path / OWNER_FILE).unlink(missing_ok=True)

    def attach(self) -> int:
        """Register this run as a worker of its study; returns and stores the worker index.

        On a shared storage the index is claimed through the study (:func:`nas.runs.workers.claim_worker`):
        unique however many workers start at once, kept by a resumed run. A run's own journal has one
        worker, 0, whose run name is kept as a study attribute.
        """
        study = self.study(create=self.shared)
        if self.shared:
            self.worker = claim_worker(study, self.name)
            return self.worker
        key = f"worker:{self.name}"
        if key not in study.user_attrs:
            study.set_user_attr(key, datetime.datetime.now().isoformat(timespec="microseconds"))
        self.worker = 0
        return self.worker

    def admit(self, proposals: Sequence[Proposal], budget: int) -> Admission:
        """The proposals this worker may evaluate: on a shared storage those within the study-wide ``budget``
        whose point no other worker's candidate holds (each then holds a RUNNING trial that :meth:`record`
        completes; see :func:`nas.runs.workers.admit`), else all of them."""
        if not self.shared:
            return Admission(list(proposals), [])
        slots, duplicates = admit(self.study(), proposals, budget=budget, worker=self.worker)
        self._slots.update(slots)
        return Admission([p for p in proposals if p.key in slots], [p for p in proposals if p.key in duplicates])

    def wait_for_others(self, *, patience: float) -> int:
        """On a shared storage, wait for the other workers' running candidates (see
        :func:`nas.runs.workers.wait_for_running`); returns how many are still running."""
        return wait_for_running(self.study(), patience=patience) if self.shared else 0

    def fail_interrupted(self) -> int:
        """Mark this worker's trials left RUNNING (by a killed process) as FAIL; returns how many."""
        import optuna

        study = self.study()
        count = 0
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("worker", 0) == self.worker:
                study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)  # noqa: SLF001
                study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
                count += 1
        return count

    # -- the history ----------------------------------------------------------------------------

    def _parse(self, trial: optuna.trial.FrozenTrial) -> Record:
        """A stored trial as a Record, checked as user data (see :func:`~nas.runs.trials.parse_record`)."""
        record, arch = parse_record(trial, self.settings, source=self.storage_url, where=self._where(trial))
        if arch is not None:
            self._archs.setdefault(record.arch_id, arch)
        return record

    def refresh(self) -> list[Record]:
        """Records completed since the last call (all workers), in trial order; they also join :meth:`records`."""
        import optuna

        study = self.study()
        try:
            trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        except (ValueError, KeyError) as exc:
            raise RunError(f"{self.storage_url}: corrupt history ({exc})") from None
        new = []
        for trial in trials:
            if trial.number not in self._known:
                self._known.add(trial.number)
                new.append(self._parse(trial))
        new.sort(key=lambda record: record.number)
        self._records.extend(new)
        return new

    def records(self) -> list[Record]:
        """Every completed record so far, in trial order."""
        self.refresh()
        return sorted(self._records, key=lambda record: record.number)

    def count(self) -> int:
        """Completed candidates in the study (all workers)."""
        import optuna

        return len(self.study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    def record(self, proposal: Proposal, record: Record) -> Record:
        """Store one evaluated candidate; returns it with its trial number.

        A proposal without a trial becomes one COMPLETE trial written in a single
        journal line (``study.add_trial``), so a kill leaves it whole or absent; a
        proposal holding a RUNNING trial (Optuna strategies, or one :meth:`admit`
        gave it on a shared storage) gets its attributes and is told its values.
        """
        import optuna

        study = self.study()
        attrs = record.to_attrs()
        constraints = {spec.name: value for spec, value in zip(self.settings.constraints, record.violations,
                                                                  strict=True)}
        slot = self._slots.pop(proposal.key, None)
        if proposal.trial is None and slot is not None:
            number = complete_slot(study, slot, list(record.values), attrs, constraints)
        elif proposal.trial is None:
            trial = optuna.trial.create_trial(values=list(record.values), user_attrs=attrs,
                                              constraints=constraints or None)
            study.add_trial(trial)
            number = study._storage.get_n_trials(study._study_id) - 1  # noqa: SLF001
            if self.settings.storage is not None:  # another worker may have written in between
                number = find_number(study, record.key, number)
        else:
            for name, value in attrs.items():
                proposal.trial.set_user_attr(name, value)
            study.tell(proposal.trial, list(record.values))
            number = proposal.trial.number
        stored = dataclasses.replace(record, number=number)
        self._recorded += 1
        self._known.add(number)
        self._records.append(stored)
        return stored

    # -- reading a run defensively: its files are user data, checked before use ---------------

    def _check_journal(self, *, create: bool) -> JournalScan | None:
        """Scan the journal the history is in (none for a database) before Optuna replays it, reading only;
        a cut last line of the run's own journal is reported (see :func:`~nas.runs.journal.scan_history`)."""
        path = journal_path(self.storage_url)
        database = sqlite_file(self.storage_url)
        if database is not None and not create and not database.exists():
            raise RunError(f"{database}: missing (the run's history is gone)")  # opening would create it
        return None if path is None else scan_history(path, create=create, resume=None if self.shared else self.path)

    def _where(self, trial: optuna.trial.FrozenTrial) -> str:
        """``journal:line`` of the line that stored the trial's Arch, or the storage URL."""
        path = journal_path(self.storage_url)
        line = self._scan.arch_lines.get(trial._trial_id) if self._scan is not None else None  # noqa: SLF001
        return f"{path}:{line}" if path is not None and line is not None else self.storage_url

    def check(self) -> None:
        """Read the whole history and check the output paths, changing nothing: what a resume does first, so
        a run that cannot continue is refused before any work.

        Raises:
            RunError: a malformed record (see :meth:`records`), or ``pareto.csv`` / ``pareto.png`` / ``top`` of
                the wrong kind.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JournalWarning)  # a cut last line: repair() drops and reports it
            self.records()
        for name, is_dir, what in ((PARETO_FILE, False, "Pareto front"), (PLOT_FILE, False, "Pareto plot"),
                                   (TOP_DIR, True, "top Archs")):
            path = self.path / name
            if os.path.lexists(path) and path.is_dir() != is_dir:
                raise RunError(f"{path}: {'not a directory' if is_dir else 'a directory'}, where the run writes its "
                               f"{what}; move it away")

    def discard_unrecorded(self) -> bool:
        """Remove the directory this object's :meth:`create` made if nothing was recorded through it, so a
        search that fails before its first record leaves no trace. True if it was removed.

        The runs folder goes too if ``create`` made it and it is empty; a shared storage is not touched.
        """
        if not self._made or self._recorded:
            return False
        self._close()
        shutil.rmtree(self._made[0], ignore_errors=True)
        for folder in self._made[1:]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty: another worker may have started a run there
        self._made = ()
        return True

    # -- readers ------------------------------------------------------------------------------

    def history(self) -> pandas.DataFrame:
        """One row per evaluated candidate, in trial order.

        Columns: ``number`` (trial), ``arch_id``, ``generation``, ``parents`` (Arch ids, ``;``-joined), ``worker``,
        ``feasible``, one column per objective (``settings.objectives[i].column``), the other metrics, one
        ``violation_<constraint>`` column per constraint, ``key`` and ``arch`` (the Arch as JSON).
        """
        import pandas as pd

        rows = []
        objective_columns = [objective.column for objective in self.settings.objectives]
        for record in self.records():
            row: dict[str, Any] = {"number": record.number, "arch_id": record.arch_id,
                                   "generation": record.generation, "parents": ";".join(record.parents),
                                   "worker": record.worker, "feasible": record.feasible}
            row.update(dict(zip(objective_columns, record.values, strict=True)))
            row.update({column: value for column, value in record.metrics.items() if column not in row})
            row.update({f"violation_{spec.name}": value
                        for spec, value in zip(self.settings.constraints, record.violations, strict=True)})
            row.update({"key": record.key, "arch": record.arch_json})
            rows.append(row)
        columns = ["number", "arch_id", "generation", "parents", "worker", "feasible", *objective_columns]
        return pd.DataFrame(rows, columns=None if rows else columns)

    @property
    def archs(self) -> Mapping[str, Arch]:
        """Arch id -> Arch for every evaluated candidate, each validated against its id (see :func:`checked_arch`)."""
        for record in self.records():
            if record.arch_json is not None and record.arch_id not in self._archs:
                self._archs[record.arch_id] = checked_arch(record, self.storage_url)
        return types.MappingProxyType(self._archs)

    def arch(self, arch_id: str) -> Arch:
        """The Arch of one candidate.

        Raises:
            RunError: no candidate with that id.
        """
        try:
            return self.archs[arch_id]
        except KeyError:
            raise RunError(f"{self.path}: no candidate with arch id {arch_id!r}") from None

    def _front_inputs(self) -> tuple[list[Record], np.ndarray, np.ndarray, list[str]]:
        """Every record with its losses, feasibility and Arch id: what the front rule
        (:func:`nas.search.pareto.front_candidates`, shared with the plot) reads."""
        records = self.records()
        feasible = np.array([record.feasible for record in records], dtype=bool)
        return records, loss_matrix(records, self.settings.signs), feasible, [record.arch_id for record in records]

    def pareto(self) -> pandas.DataFrame:
        """The feasible non-dominated candidates with every objective measured (one row per Arch), best last
        objective first.

        Same columns as :meth:`history`, sorted by the last objective (latency) in its own direction.
        """
        history = self.history()
        records, losses, feasible, keys = self._front_inputs()
        numbers = [record.number for record, keep in zip(records, front_mask(losses, feasible, keys), strict=True)
                   if keep]
        if not numbers:
            return history.iloc[0:0]
        front = history[history["number"].isin(numbers)]
        last = self.settings.objectives[-1]
        return front.sort_values(last.column, ascending=last.direction == "minimize").reset_index(drop=True)

    def top(self, k: int | None = None) -> list[tuple[Record, Arch]]:
        """The ``k`` best distinct feasible candidates by NSGA-II order (front rank, then crowding distance).

        Crowding favours the ends and the sparse parts of each front, so a small ``k`` spreads over the front.
        """
        k = self.settings.top_k if k is None else k
        records, losses, feasible, keys = self._front_inputs()
        chosen = front_candidates(losses, feasible, keys)
        if not len(chosen):
            return []
        order = chosen[select_survivors(losses[chosen], None, k)]
        return [(records[index], self.arch(records[index].arch_id)) for index in order]

    def reference(self) -> np.ndarray | None:
        """The hypervolume reference point (losses) for this run: see :func:`nas.search.pareto.front_reference`.

        Computed over the candidates the front is taken over; None when there are none.
        """
        _, losses, feasible, keys = self._front_inputs()
        return front_reference(losses, feasible, keys)

    def hypervolume(self, reference: np.ndarray | None = None) -> np.ndarray:
        """Hypervolume after each evaluation (``len(history)`` floats), in loss space (see :meth:`reference`)."""
        records = self.records()
        reference = self.reference() if reference is None else np.asarray(reference, dtype=np.float64)
        if reference is None or not records:
            return np.zeros(len(records))
        losses = loss_matrix(records, self.settings.signs)
        return hypervolume_curve(losses, reference, violation_vector(records) <= 0)

    def write_outputs(self, top_k: int | None = None) -> list[Path]:
        """Write ``pareto.csv`` and ``top/NN-<arch id>.yaml`` (atomically); returns the paths written.

        ``top/`` is replaced as a whole, so it never mixes two calls' files.

        Raises:
            RunError: an output path is of the wrong kind (see :meth:`check`) or cannot be written.
        """
        self.check()
        try:
            return self._write_outputs(top_k)
        except OSError as exc:
            raise RunError(f"{exc.filename or self.path}: cannot write the run's outputs: {exc.strerror or exc}") \
                from None

    def _write_outputs(self, top_k: int | None) -> list[Path]:
        written = [self.path / PARETO_FILE]
        front = self.pareto().drop(columns=["arch"], errors="ignore")
        write_atomic(written[0], front.to_csv(index=False))
        staging = self.path / f".{TOP_DIR}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        space = _safe_name(self.settings.space)
        for rank, (record, arch) in enumerate(self.top(top_k), start=1):
            named = arch.replace(name=f"{space}_{_safe_name(self.settings.target)}_top{rank}")
            named.save(staging / f"{rank:02d}-{record.arch_id}.yaml")
        final = self.path / TOP_DIR
        old = self.path / f".{TOP_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        written.extend(sorted(final.glob("*.yaml")))
        return written

    def summary(self) -> dict[str, Any]:
        """Plain data about the run: path, settings, counts, front size."""
        records = self.records()
        return {"path": str(self.path), "created": self.created, "settings": self.settings.to_dict(),
                "evaluated": len(records), "feasible": sum(record.feasible for record in records),
                "pareto": len(self.pareto())}
