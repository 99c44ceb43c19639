"""Parallel workers on one shared study: unique worker ids, one study-wide budget, no candidate evaluated
twice, and outputs that cover every trial, with two processes released at the same instant."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from nas.cli import main
from nas.runs import PARETO_FILE, PLOT_FILE, TOP_DIR, Run, open_storage
from nas.runs.workers import DUPLICATE_ATTR, OVER_BUDGET_ATTR
from nas.search.records import Proposal
from tests.test_runs import fake_record, settings
from tests.test_search_cli import ROOT, run_killed_at_batch, search_args, the_run, write_tiny_space

BUDGET = 24
STUDY = "shared-study"

# Imports everything a search needs, then waits for every other process to be ready before running `nas`,
# so the workers claim their ids and their first candidates at the same instant. Each candidate takes 50 ms
# more than the proxy's fraction of one: a worker alone then needs over a second for the budget, longer than
# the two processes' start can drift apart on a loaded machine, so both take part.
LAUNCHER = """
import sys, time
from pathlib import Path
import optuna, torch
import nas.cli, nas.runs, nas.search
from nas.search.scorer import Scorer
evaluate = Scorer.evaluate
Scorer.evaluate = lambda self, archs: (time.sleep(0.05 * len(archs)), evaluate(self, archs))[1]
barrier, count, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
(barrier / str(time.monotonic_ns())).touch()
while len(list(barrier.iterdir())) < count:
    time.sleep(0.001)
sys.exit(nas.cli.main(args))
"""


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_tiny_space(tmp_path_factory.mktemp("space")))


def shared_settings(storage: str, **changes):
    return settings(storage=storage, study=STUDY, **changes)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_worker_ids_are_claimed_once_each_and_kept_on_resume(tmp_path: Path, kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.journal")
    runs = [Run.create(tmp_path / "runs", shared_settings(storage), name=name) for name in ("a", "b", "c")]
    assert [run.attach() for run in runs] == [0, 1, 2]
    assert Run.open(runs[1].path).attach() == 1, "a resumed worker keeps its id"
    assert Run.open(tmp_path / "runs" / "a").count() == 0, "claims are not candidates"


def test_a_run_from_before_claims_keeps_its_id_and_new_workers_come_after(tmp_path: Path) -> None:
    storage = str(tmp_path / "study.journal")
    old, new = (Run.create(tmp_path / "runs", shared_settings(storage), name=name) for name in ("old", "new"))
    old.study().set_user_attr("worker:old", "2025-01-01T00:00:00")  # what attach wrote before claims
    assert (new.attach(), old.attach()) == (1, 0)


def test_admission_keeps_the_study_within_its_budget(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first, second = (Run.create(tmp_path / "runs", shared_settings(storage), name=name) for name in ("a", "b"))
    for run in (first, second):
        run.attach()

    def proposals(run: Run, count: int) -> list[Proposal]:  # each worker's points its own (no duplicates)
        return [Proposal(f"{run.worker}:0:{index}", np.array([index + 4 * run.worker], dtype=np.int16),
                         worker=run.worker) for index in range(count)]

    held = first.admit(proposals(first, 4), 6).admitted
    assert len(held) == 4
    late = second.admit(proposals(second, 4), 6).admitted
    assert [proposal.key for proposal in late] == ["1:0:0", "1:0:1"], "only the places the budget has left"
    for run, admitted in ((first, held), (second, late)):
        for index, proposal in enumerate(admitted):
            record = fake_record(index + 4 * run.worker, 1.0 + index, 1.0 + run.worker)
            run.record(proposal, dataclasses.replace(record, key=proposal.key, worker=run.worker))
    study = first.study()
    states = [trial.state for trial in study.get_trials() if "key" in trial.user_attrs]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 6 and first.count() == 6
    refused = [trial for trial in study.get_trials() if trial.user_attrs.get(OVER_BUDGET_ATTR)]
    assert len(refused) == 2 and all(trial.state == optuna.trial.TrialState.FAIL for trial in refused)
    assert [record.key for record in first.records()] == ["0:0:0", "0:0:1", "0:0:2", "0:0:3", "1:0:0", "1:0:1"]


def test_a_point_another_worker_holds_is_withdrawn_not_evaluated_twice(tmp_path: Path) -> None:
    """Keys are per proposal, the point key is canonical: the same point proposed by two workers under different
    keys gets one candidate trial; the later worker's is marked a duplicate and takes no budget place."""
    storage = str(tmp_path / "study.journal")
    first, second = (Run.create(tmp_path / "runs", shared_settings(storage), name=name) for name in ("a", "b"))
    for run in (first, second):
        run.attach()
    points = [np.array([value], dtype=np.int16) for value in (5, 6, 7)]
    mine = [Proposal(f"0:0:{index}", point, worker=0) for index, point in enumerate(points[:2])]
    theirs = [Proposal(f"1:3:{index}", point.copy(), worker=1) for index, point in enumerate(points[1:])]
    assert mine[1].key != theirs[0].key and mine[1].point == theirs[0].point != theirs[1].point
    assert first.admit(mine, 3).admitted == mine
    admitted, duplicates = second.admit(theirs, 3)
    assert (admitted, duplicates) == ([theirs[1]], [theirs[0]]), "the held point is withdrawn, the budget kept"
    duplicate = [trial for trial in first.study().get_trials() if DUPLICATE_ATTR in trial.user_attrs]
    assert [(trial.user_attrs["key"], trial.state) for trial in duplicate] == [("1:3:0", optuna.trial.TrialState.FAIL)]
    again = Proposal("0:1:0", points[0].copy(), worker=0)  # a worker's repeat of its own point: as before
    assert first.admit([again], 4).admitted == [again]


def run_two_workers(space_file: str, tmp_path: Path, storage: str, *, plot: bool) -> list[Path]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    processes = [
        subprocess.Popen([sys.executable, "-c", LAUNCHER, str(barrier), "2",
                          *[arg for arg in search_args(space_file, "--out", str(tmp_path / name), "--storage", storage,
                                                       "--study", STUDY, budget=BUDGET)
                            if plot is False or arg != "--no-plot"]],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for process in processes:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err.decode()[-2000:]
    return [the_run(tmp_path / name) for name in ("a", "b")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_started_at_once_share_the_budget_and_the_outputs(space_file: str, tmp_path: Path,
                                                                       kind: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.journal")
    plot = kind == "sqlite"  # drawing costs seconds: once is enough
    run_dirs = run_two_workers(space_file, tmp_path, storage, plot=plot)

    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == BUDGET, "the workers together stop at the study's budget"
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    keys = [trial.user_attrs["key"] for trial in complete]
    assert len(set(keys)) == len(keys), "no candidate evaluated twice"
    workers_of: dict[tuple[int, ...], set[int]] = {}
    for trial in complete:
        workers_of.setdefault(tuple(trial.user_attrs["vector"]), set()).add(trial.user_attrs["worker"])
    assert all(len(workers) == 1 for workers in workers_of.values()), "no point evaluated by both workers"
    assert {trial.user_attrs["worker"] for trial in complete} == {0, 1}, "both workers evaluated candidates"
    last_trial = max(trial.datetime_complete for trial in complete).timestamp()

    for run_dir in run_dirs:
        run = Run.open(run_dir)
        assert run.count() == BUDGET
        written = pd.read_csv(run_dir / PARETO_FILE)
        front = run.pareto()
        assert list(written["number"]) == list(front["number"]), f"{run_dir}: pareto.csv covers the whole study"
        expected = [f"{rank:02d}-{record.arch_id}.yaml" for rank, (record, _) in enumerate(run.top(), start=1)]
        assert sorted(path.name for path in (run_dir / TOP_DIR).iterdir()) == expected
        outputs = [run_dir / PARETO_FILE, run_dir / TOP_DIR, *([run_dir / PLOT_FILE] if plot else [])]
        assert all(path.stat().st_mtime >= last_trial for path in outputs), "written after the last trial"


def test_waiting_for_other_workers_gives_up_on_a_candidate_that_makes_no_progress(tmp_path: Path) -> None:
    storage = str(tmp_path / "study.journal")
    stuck, waiting = (Run.create(tmp_path / "runs", shared_settings(storage), name=name) for name in ("a", "b"))
    for run in (stuck, waiting):
        run.attach()
    stuck.admit([Proposal("0:0:0", np.array([0], dtype=np.int16))], 4)  # then killed: RUNNING for good
    assert waiting.wait_for_others(patience=0.3) == 1
    assert Run.open(tmp_path / "runs" / "a").wait_for_others(patience=0.3) == 1


@pytest.mark.slow
def test_a_killed_worker_resumes_into_its_own_places(space_file: str, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    budget = BUDGET
    args = search_args(space_file, "--out", str(tmp_path / "a"), "--storage", storage, "--study", STUDY,
                       budget=budget)
    process = run_killed_at_batch(args, 2)
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    assert process.returncode == -signal.SIGKILL and 0 < done < budget, "killed mid-run"

    assert main(["search", "--resume", str(the_run(tmp_path / "a")), "--no-plot"]) == 0
    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    keys = [trial.user_attrs["key"] for trial in complete]
    assert len(complete) == budget and len(set(keys)) == budget
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), "its interrupted places were freed"
