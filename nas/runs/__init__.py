"""Run directories: the settings of a search, its history as an Optuna study, and its outputs.

A run lives in ``runs/<YYYYmmdd-HHMMSS>-<space>-<target>-<6 hex>/``::

    run.yaml          every setting (RunSettings), the seed, package versions; written once, atomically
    history.journal   the history: an Optuna journal (JournalFileBackend), unless ``storage`` names another
    pareto.csv        the feasible non-dominated candidates (write_outputs)
    top/              the top-k Archs as YAML: ``01-<arch id>.yaml`` ... (write_outputs)
    pareto.png        drawn by nas.report
    .owner            "<host> <pid>" of the process running the search (removed when it ends)
    history.journal.<YYYYmmdd-HHMMSS>.bak
                      the journal as it was before ``--resume`` dropped a last line cut short by a kill

The directory and its history are user data, read defensively: each journal
line is checked before Optuna replays it and each record's Arch is validated
against its id, and a command that fails changes nothing (see
:mod:`~nas.runs.journal`, :mod:`~nas.runs.trials`).

The history is one multi-objective Optuna study whatever the strategy: every
evaluated candidate is a COMPLETE trial whose values are the objectives (in
``settings.objectives`` order and directions) and whose ``user_attrs`` hold
its proposal key, worker, point vector, Arch id, generation, parents (Arch
ids), measured metrics, constraint violations and the Arch itself as compact
JSON; constraint values are also Optuna trial constraints, so
``optuna-dashboard`` and ``optuna.visualization`` work on the journal as is.
Trials in other states are not candidates: FAIL marks a point an Optuna
sampler proposed that the space rejects (user attr ``rejected``), a trial
left RUNNING by a killed process (``interrupted``), a worker's id claim
(``worker_claim``) or a candidate refused by the study-wide budget
(``over_budget``; see :mod:`~nas.runs.workers`).

Storage and concurrency: Optuna's JournalFileBackend appends each operation
as one line under a file lock, so several processes may share a journal (one
machine or a shared file system with working locks); an RDB URL
(``sqlite:///x.db``, ``postgresql://...``) goes through Optuna's RDBStorage.
Parallel workers on one ``storage`` get unique worker ids and share one
budget through trials the storage serialises (:mod:`~nas.runs.workers`).
A ``Run`` object is not thread-safe; each process opens its own. Files other
than the journal are written atomically (``nas.atomic.write_atomic``), so a
reader sees the old file or the new one.

Modules: :mod:`~nas.runs.settings` (``RunSettings``, ``RunError``), :mod:`~nas.runs.storage` (storage URLs),
:mod:`~nas.runs.journal` (a journal checked line by line before Optuna replays it),
:mod:`~nas.runs.trials` (a trial read back as a checked Record), :mod:`~nas.runs.run` (:class:`Run`),
:mod:`~nas.runs.workers` (parallel workers), :mod:`~nas.runs.session` (``start_search``, ``run_search``: what
``nas search`` calls).

Example:
    >>> from nas.runs import Run
    >>> run = Run.open("runs/20250101-120000-metaformer-iphone12-a1b2c3")  # doctest: +SKIP
    >>> run.history()[["number", "arch_id", "latency_ms"]].head()  # doctest: +SKIP
    >>> run.pareto()  # doctest: +SKIP
"""

from __future__ import annotations

from nas.runs.run import JOURNAL_FILE, OWNER_FILE, PARETO_FILE, PLOT_FILE, TOP_DIR, Run, list_runs
from nas.runs.session import default_study_name, plan_search, resolve_accuracy, run_search, start_search
from nas.runs.settings import RUN_FILE, ConstraintSpec, ObjectiveSpec, RunError, RunSettings, SearchRequest
from nas.runs.storage import check_storage_url, open_storage

__all__ = [
    "ConstraintSpec",
    "JOURNAL_FILE",
    "OWNER_FILE",
    "ObjectiveSpec",
    "PARETO_FILE",
    "PLOT_FILE",
    "RUN_FILE",
    "Run",
    "RunError",
    "RunSettings",
    "SearchRequest",
    "TOP_DIR",
    "check_storage_url",
    "default_study_name",
    "list_runs",
    "open_storage",
    "plan_search",
    "resolve_accuracy",
    "run_search",
    "start_search",
]
