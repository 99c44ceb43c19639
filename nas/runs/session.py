"""Starting, resuming and running a search in a run directory (what ``nas search`` calls)."""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nas.runs.run import Run, _safe_name
from nas.runs.settings import ConstraintSpec, ObjectiveSpec, RunSettings, SearchRequest
from nas.runs.storage import check_storage_url
from nas.search.records import Record

__all__ = ["resolve_accuracy", "default_study_name", "plan_search", "start_search", "run_search", "zoo_vectors"]


def _absolute(text: str, *, is_file: bool) -> str:
    """A file path made absolute, so ``--resume`` works from any folder; names and URLs unchanged."""
    return str(Path(text).resolve()) if is_file else text


def zoo_vectors(space: Any) -> np.ndarray:
    """The point vectors of the zoo's models that are points of ``space`` (by zoo name), for a warm start."""
    from nas import zoo

    vectors = []
    for name in zoo.list_zoo():
        found, _ = space.contains(zoo.get(name))
        if found:
            vectors.append(space.encode(zoo.get(name)))
    return np.array(vectors, dtype=np.int16).reshape(-1, space.num_slots)


def resolve_accuracy(request: SearchRequest) -> str:
    """The request's accuracy source. Unset or ``auto``: ``supernet`` where a ``--supernet`` checkpoint is given,
    else ``short-train``, of the sources the one that ranks like training (the README's rank figures);
    ``supernet`` (one-shot) ranks sizes but not kinds."""
    if request.accuracy in (None, "auto"):
        return "supernet" if request.supernet is not None else "short-train"
    return request.accuracy


def default_study_name(space: str, target: str, strategy: str, seed: int) -> str:
    """The study name workers share by default on a ``--storage``: the same command gives the same name."""
    return f"{_safe_name(space)}-{_safe_name(target)}-{strategy}-seed{seed}"


def plan_search(request: SearchRequest) -> tuple[RunSettings, Any, Any]:
    """Check every setting of a search without side effects; returns ``(settings, space, scorer)``.

    Raises:
        UnknownKindError: unknown space, target, strategy, objective, accuracy source, constraint or storage scheme.
        ConfigError: a bad number or constraint value, or a space with no point within the size limits.
        NasError: an unavailable accuracy source or optional strategy.
    """
    from nas.search import create_strategy, make_scorer, parse_constraint
    from nas.search.constraints import check_size_limits
    from nas.space import load_space

    loaded = load_space(request.space)
    check_size_limits(loaded)
    space = _absolute(request.space, is_file=request.space.endswith((".yaml", ".yml")) or "/" in request.space)
    supernet = None if request.supernet is None else _absolute(request.supernet, is_file=True)
    storage = request.storage
    if storage is not None:
        storage = _absolute(storage, is_file="://" not in storage)
    accuracy = resolve_accuracy(request)
    parsed = [parse_constraint(name, text) for name, text in request.constraints.items() if text is not None]
    if storage is not None:
        check_storage_url(storage)
    strategy, seed, latency_batch = request.value("strategy"), request.value("seed"), request.value("latency_batch")
    scorer = make_scorer(target=request.target, accuracy=accuracy, objectives=request.objectives, constraints=parsed,
                         space=space, seed=seed, latency_batch=latency_batch, supernet=supernet,
                         latency_setting=request.latency_setting)
    specs = tuple(ObjectiveSpec(o.kind, o.column, o.direction, o.label) for o in scorer.objectives)
    study = request.study or (default_study_name(space, request.target, strategy, seed) if storage else
                              RunSettings.study)
    settings = RunSettings(
        space=space, target=request.target, strategy=strategy, budget=request.value("budget"),
        population=request.value("population"), seed=seed, accuracy=accuracy, objectives=specs,
        constraints=tuple(ConstraintSpec(c.name, c.column, c.limit, c.text) for c in parsed),
        storage=storage, study=study, top_k=request.value("top_k"),
        latency_batch=latency_batch, supernet=supernet, zoo_start=request.value("zoo_start"),
        latency_setting=request.latency_setting)
    create_strategy(strategy, loaded, directions=settings.directions, seed=seed, population_size=settings.population,
                    constrained=bool(parsed))
    return settings, loaded, scorer


def start_search(request: SearchRequest, *, root: str | os.PathLike[str] = "runs", extra: dict[str, Any] | None = None,
                 probe: int = 64, log: Any = None, progress: bool = True, placement: Any = None) -> Run:
    """Plan a search (:func:`plan_search`), probe its constraints, create its run directory.

    One-shot accuracy without a given ``supernet`` uses the default supernet of the space
    (:mod:`nas.runs.supernets`), trained first if there is none yet; every other setting is checked
    before that training starts. Nothing is written to ``root`` but that supernet unless every check passed.
    Constraints are probed with the cheap ``proxy`` source: they bound latency, params and MACs, never accuracy.

    Args:
        request: what to search.
        root: the folder of run directories.
        extra: stored in run.yaml as is (e.g. the command line).
        probe: points drawn to check that the constraints can be met.
        log: receives progress lines (default supernet reused or trained).
        progress: show the supernet trainer's progress bar.
        placement: where that supernet trains (``nas.supernet.device.Placement``; None: the CPU).

    Raises:
        InfeasibleError: no probed point meets the constraints.
        (and everything :func:`plan_search` and :meth:`Run.create` raise)
    """
    from nas.runs.supernets import ensure_default_supernet
    from nas.search.constraints import check_feasible

    settings, space, scorer = plan_search(dataclasses.replace(request, accuracy="proxy", supernet=None))
    check_feasible(space, scorer, target=settings.target, samples=probe, seed=settings.seed)
    if resolve_accuracy(request) == "supernet" and request.supernet is None:
        default = ensure_default_supernet(root, request.space, progress=progress, log=log, placement=placement)
        request = dataclasses.replace(request, supernet=str(default))
    settings, _, _ = plan_search(request)
    return Run.create(root, settings, extra=extra)


MIN_PATIENCE_S = 30.0  # the least wait for another worker's last batch, before outputs are written without it


class _BatchClock:
    """Passes records on and keeps the longest time between two of them: about one batch's evaluation, the
    measure of how long another worker's last batch may still take."""

    def __init__(self, on_record: Any):
        self._on_record = on_record
        self._last = time.monotonic()
        self.longest = 0.0

    def __call__(self, record: Record) -> None:
        now = time.monotonic()
        self.longest, self._last = max(self.longest, now - self._last), now
        if self._on_record is not None:
            self._on_record(record)


def run_search(run: Run, *, on_record: Any = None, on_start: Any = None, placement: Any = None) -> list[Record]:
    """Run or resume the search of ``run`` until its budget is reached, then write its outputs.

    On a shared storage the outputs wait for the other workers' running candidates (see
    :mod:`nas.runs.workers`), so they describe the whole study.

    Resuming rebuilds the strategy from the stored history (see :class:`nas.search.base.BaseStrategy`):
    a journal line cut by a kill is dropped, this worker's trials left RUNNING are marked FAIL, and the
    strategy replays the records, so the finished history equals an uninterrupted run's.

    Args:
        run: a run from :func:`start_search` or :meth:`Run.open`.
        on_record: called with each record this process stores.
        on_start: called once with the number of candidates already in the history.
        placement: where accuracy sources train or evaluate (``nas.supernet.device.Placement``; None: the
            CPU). Not a run setting: a resumed run may choose another device.

    Returns:
        Every record of the run's study.
    """
    try:
        return _search(run, on_record=on_record, on_start=on_start, placement=placement)
    except Exception:
        run.discard_unrecorded()  # a run this process created, failed before its first record: no trace
        raise


def _search(run: Run, *, on_record: Any, on_start: Any, placement: Any) -> list[Record]:
    """:func:`run_search` without the clean-up of a failed new run."""
    from nas.search import create_strategy, make_scorer, optimize, parse_constraint
    from nas.space import load_space

    run.check()
    settings = run.settings
    space = load_space(settings.space)
    constraints = [parse_constraint(spec.name, spec.text or str(spec.limit)) for spec in settings.constraints]
    constraints = [dataclasses.replace(c, limit=spec.limit) for c, spec in zip(constraints, settings.constraints,
                                                                                strict=True)]
    scorer = make_scorer(target=settings.target, accuracy=settings.accuracy,
                         objectives=[spec.name for spec in settings.objectives], constraints=constraints,
                         space=settings.space, seed=settings.seed, latency_batch=settings.latency_batch,
                         supernet=settings.supernet, placement=placement, latency_setting=settings.latency_setting)
    run.repair()
    run.claim()
    try:
        worker = run.attach()
        run.fail_interrupted()
        strategy = create_strategy(settings.strategy, space, directions=settings.directions, seed=settings.seed,
                                   population_size=settings.population, worker=worker,
                                   constrained=bool(settings.constraints))
        if settings.zoo_start and strategy.warm_start and worker == 0:
            strategy.start_with(zoo_vectors(space))
        if on_start is not None:
            on_start(run.count())
        clock = _BatchClock(on_record)
        records = optimize(space, strategy, scorer, run, budget=settings.budget, batch=settings.population,
                           on_record=clock)
        patience = max(MIN_PATIENCE_S, 3 * clock.longest)
        running = run.wait_for_others(patience=patience)
        if running:
            warnings.warn(f"{run.storage_url}: {running} candidates of other workers still running after "
                          f"{patience:.0f} s without progress; {run.path}'s outputs leave them out (once they "
                          f"finish, `nas search --resume {run.path}` rewrites them)", stacklevel=2)
        run.write_outputs()
        records = run.records()
    finally:
        run.release()
    return records
