"""nas.runs: the run directory, its Optuna history, outputs, and clear errors for broken runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import nas
from nas.errors import ConfigError, UnknownKindError
from nas.runs import (
    JOURNAL_FILE,
    PARETO_FILE,
    RUN_FILE,
    TOP_DIR,
    ConstraintSpec,
    ObjectiveSpec,
    Run,
    RunError,
    RunSettings,
    SearchRequest,
    check_storage_url,
    run_search,
    start_search,
)
from nas.search.records import Proposal, Record
from tests.test_search import write_tiny_space

OBJECTIVES = (ObjectiveSpec("accuracy", "proxy_score", "maximize"), ObjectiveSpec("latency", "latency_ms", "minimize"))


def settings(**changes) -> RunSettings:
    base = {"space": "tiny", "target": "iphone12", "objectives": OBJECTIVES,
            "constraints": (ConstraintSpec("max_latency", "latency_ms", 3.0, "3ms"),)}
    return RunSettings(**{**base, **changes})


def fake_record(index: int, accuracy: float, latency: float) -> Record:
    arch = nas.zoo.get("poolformer_s12").replace(name=None)
    arch = arch.with_resolution(64 + 32 * index)  # distinct Archs, distinct ids
    return Record(-1, f"0:0:{index}", 0, np.array([index], dtype=np.int16), arch.id, 0, (),
                  (accuracy, latency), (latency - 3.0,), {"proxy_score": accuracy, "latency_ms": latency},
                  json.dumps(arch.to_dict()))


@pytest.fixture()
def filled_run(tmp_path: Path) -> Run:
    run = Run.create(tmp_path / "runs", settings())
    run.attach()
    points = [(1.0, 1.0), (2.0, 2.0), (1.5, 2.5), (3.0, 2.9), (4.0, 5.0), (2.0, 2.0)]
    for index, (accuracy, latency) in enumerate(points):
        run.record(Proposal(f"0:0:{index}", np.array([index], dtype=np.int16)), fake_record(index, accuracy, latency))
    return run


def test_create_writes_settings_and_an_empty_study(tmp_path: Path) -> None:
    run = Run.create(tmp_path / "runs", settings(seed=4), extra={"command": ["nas", "search"]})
    assert run.path.parent == tmp_path / "runs" and "-tiny-iphone12-" in run.name
    assert sorted(p.name for p in run.path.iterdir()) == [JOURNAL_FILE, RUN_FILE]
    opened = Run.open(run.path)
    assert opened.settings == run.settings and opened.settings.seed == 4
    assert opened.extra["command"] == ["nas", "search"] and "optuna" in opened.versions
    assert opened.history().empty and opened.pareto().empty and opened.count() == 0
    assert not list((tmp_path / "runs").glob(".*")), "no staging directory left"


def test_history_pareto_and_top(filled_run: Run) -> None:
    run = Run.open(filled_run.path)
    table = run.history()
    assert list(table["number"]) == list(range(6))
    assert {"arch_id", "generation", "parents", "feasible", "proxy_score", "latency_ms", "violation_max_latency",
            "arch"} <= set(table.columns)
    assert list(table["feasible"]) == [True, True, True, True, False, True]
    front = run.pareto()
    # (4, 5) is infeasible; (1.5, 2.5) is dominated by (2, 2); the duplicate (2, 2) is a different Arch here
    assert list(front["proxy_score"]) == [1.0, 2.0, 2.0, 3.0]
    assert list(front["latency_ms"]) == sorted(front["latency_ms"])
    top = run.top(2)
    assert [record.values for record, _ in top] == [(1.0, 1.0), (3.0, 2.9)]  # the ends of the front first
    assert all(arch.id == record.arch_id for record, arch in top)
    assert run.arch(table["arch_id"][0]).id == table["arch_id"][0]
    with pytest.raises(RunError, match="no candidate"):
        run.arch("nope")
    curve = run.hypervolume()
    assert len(curve) == 6 and (np.diff(curve) >= 0).all() and curve[-1] > 0


def test_write_outputs_is_complete_and_replaces_top(filled_run: Run) -> None:
    written = filled_run.write_outputs(top_k=3)
    assert (filled_run.path / PARETO_FILE).is_file() and len(written) == 4
    rows = (filled_run.path / PARETO_FILE).read_text().splitlines()
    assert rows[0].startswith("number,arch_id") and len(rows) == 5
    filled_run.write_outputs(top_k=1)
    tops = sorted((filled_run.path / TOP_DIR).glob("*.yaml"))
    assert len(tops) == 1 and tops[0].name.startswith("01-")
    assert nas.Arch.load(tops[0]).id == tops[0].stem.split("-", 1)[1]
    assert not list(filled_run.path.glob(".*")), "no staging left"


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="budget"):
        settings(budget=0)
    with pytest.raises(ConfigError, match="direction"):
        settings(objectives=(ObjectiveSpec("latency", "latency_ms", "down"),))


def test_missing_and_corrupt_run_files(tmp_path: Path, filled_run: Run) -> None:
    with pytest.raises(RunError, match="no such run directory"):
        Run.open(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match=r"run\.yaml: missing"):
        Run.open(tmp_path / "empty")
    source = filled_run.path / RUN_FILE
    source.write_text("schema: 1\nsettings: [oops\n")
    with pytest.raises(RunError, match=r"run\.yaml: corrupt"):
        Run.open(filled_run.path)
    source.write_text("schema: 1\nsettings: {space: tiny}\n")
    with pytest.raises(RunError, match=r"run\.yaml: invalid settings"):
        Run.open(filled_run.path)


@pytest.mark.parametrize(("change", "message"), [
    ({"budget": "3"}, r"run\.yaml: invalid settings: budget: must be an integer, got '3'"),
    ({"zoo_start": "yes"}, r"zoo_start: must be true or false"),
    ({"objectives": [{"name": "latency", "column": "latency_ms", "direction": "up"}]},
     r"objectives\[0\]\.direction: must be 'maximize' or 'minimize', got 'up'"),
    ({"constraints": [{"name": "max_latency", "column": "latency_ms", "limit": "fast"}]},
     r"constraints\[0\]\.limit: must be a number"),
])
def test_a_bad_setting_in_run_yaml_is_named_by_its_path(filled_run: Run, change: dict, message: str) -> None:
    source = filled_run.path / RUN_FILE
    document = yaml.safe_load(source.read_text())
    source.write_text(yaml.safe_dump({**document, "settings": {**document["settings"], **change}}))
    with pytest.raises(RunError, match=message):
        Run.open(filled_run.path)


def test_corrupt_journal_is_named(filled_run: Run) -> None:
    journal = filled_run.path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:]))
    with pytest.raises(RunError, match=JOURNAL_FILE):
        Run.open(filled_run.path).history()


def test_a_cut_last_line_is_dropped_on_repair(filled_run: Run) -> None:
    journal = filled_run.path / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes() + b'{"op_code": 4, "worker_id": "x", "study_id"')
    run = Run.open(filled_run.path)
    assert run.repair() is True and journal.read_bytes().endswith(b"\n")
    assert len(run.history()) == 6


def test_storage_urls() -> None:
    for good in ("sqlite:///x.db", "postgresql+psycopg2://u@h/db", "journal:///tmp/x.log", "shared.journal"):
        check_storage_url(good)
    with pytest.raises(UnknownKindError, match="redis"):
        check_storage_url("redis://localhost")


def test_shared_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    storage = str(tmp_path / "shared.journal")
    Run.create(tmp_path / "runs", settings(storage=storage, study="s"))
    other = settings(storage=storage, study="s", objectives=(OBJECTIVES[1],), constraints=())
    with pytest.raises(RunError, match="use another --study"):
        Run.create(tmp_path / "runs", other)
    assert len(list((tmp_path / "runs").iterdir())) == 1, "the refused run left nothing behind"


def test_a_search_goes_on_past_candidates_the_zero_cost_proxy_cannot_score(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.report import plot
    from nas.supernet import zero_cost

    real, calls = zero_cost.score_many, [0]

    def every_third_overflows(archs, *, batch, seed):
        calls[0] += 1
        if calls[0] % 3 == 0:
            raise zero_cost.ZeroCostError("synflow is NaN (the flow overflows float64)")
        return real(archs, batch=batch, seed=seed)

    monkeypatch.setattr(zero_cost, "score_many", every_third_overflows)
    request = SearchRequest(space=str(write_tiny_space(tmp_path)), target="iphone12", budget=9, population=6,
                            accuracy="zero-cost")
    run = start_search(request, root=tmp_path / "runs", probe=4)
    assert len(run_search(run)) == 9
    scores = Run.open(run.path).history()["zero_cost_score"].to_numpy()
    assert np.isneginf(scores).sum() >= 2 and np.isfinite(scores).sum() >= 5
    front = Run.open(run.path).pareto()
    assert len(front) >= 1 and np.isfinite(front["zero_cost_score"]).all(), "an unscored candidate is not a winner"
    assert all(np.isfinite(record.values).all() for record, _ in run.top(9))
    path, info = plot(run)
    assert path.is_file() and int(info.front.sum()) == len(front)


def test_a_small_search_end_to_end(tmp_path: Path) -> None:
    space = write_tiny_space(tmp_path)
    request = SearchRequest(space=str(space), target="iphone12", budget=12, population=6, seed=1, accuracy="proxy",
                            constraints={"max_latency": "50ms"})
    run = start_search(request, root=tmp_path / "runs", probe=8)
    records = run_search(run)
    assert len(records) == 12 and [r.number for r in records] == list(range(12))
    opened = Run.open(run.path)
    assert opened.settings.accuracy == "proxy" and len(opened.history()) == 12
    assert (run.path / PARETO_FILE).is_file() and list((run.path / TOP_DIR).glob("*.yaml"))
    again = run_search(opened)  # already complete: nothing more is evaluated
    assert len(again) == 12
