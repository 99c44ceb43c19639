"""`nas search` / `nas history`: bad input exits 2 and writes nothing; kill -9 then --resume gives the
uninterrupted history; two processes share one journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.arch import Arch
from nas.cli import main
from nas.runs import RUN_FILE, Run
from nas.search import get_strategy, list_strategies
from nas.summary import design_summary
from tests.test_search import write_tiny_space

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["key", "arch_id", "generation", "parents", "proxy_score", "latency_ms", "feasible"]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_tiny_space(tmp_path_factory.mktemp("space")))


def search_args(space_file: str, *extra: str, budget: int = 24, strategy: str = "evolution") -> list[str]:
    return ["search", "--space", space_file, "--target", "iphone12", "--budget", str(budget), "--population", "8",
            "--seed", "7", "--accuracy", "proxy", "--strategy", strategy, "--no-plot", *extra]


def the_run(folder: Path) -> Path:
    (path,) = [child for child in folder.iterdir() if (child / RUN_FILE).is_file()]
    return path


def snapshot(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")} \
        if folder.exists() else {}


def test_search_prints_the_front_and_history_reads_it(space_file: str, tmp_path: Path, capsys) -> None:
    assert main(search_args(space_file, "--out", str(tmp_path), "--max-latency", "50ms")) == 0
    out = capsys.readouterr().out
    run = the_run(tmp_path)
    assert "Pareto front" in out and f"run:  {run}" in out and "latency_ms" in out
    assert main(["history", str(run)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["number", "arch_id", "generation"] and len(table) == 1 + 24
    assert table[0].split()[-1] == "design"
    archs = {row.split()[1]: row for row in table[1:]}
    first = Run.open(run).history().iloc[0]
    assert design_summary(Arch.from_json(first["arch"])) in archs[first["arch_id"]]
    assert main(["history", str(run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 24 and rows[0]["arch"]["schema"] == 1
    assert main(["history", str(run), "--pareto", "--json"]) == 0
    assert 0 < len(json.loads(capsys.readouterr().out)) <= 24


BAD_INPUT = [
    (["--space", "nope"], "unknown space 'nope'"),
    (["--target", "iphone99"], "unknown target 'iphone99'"),
    (["--strategy", "evolutoin"], "unknown strategy 'evolutoin'"),
    (["--storage", "redis://localhost/0"], "unknown storage URL scheme 'redis'"),
    (["--max-latency", "0.01ms"], "no point of tiny_search meets --max-latency 0.01ms on iphone12"),
    (["--max-params", "10 parsecs"], "--max-params: cannot read"),
    (["--accuracy", "oracle"], "unknown accuracy source 'oracle'"),
    (["--accuracy", "supernet", "--supernet", "missing/checkpoint.pt"], "checkpoint.pt: no checkpoint there"),
]


@pytest.mark.parametrize(("change", "message"), BAD_INPUT)
def test_bad_input_exits_2_and_writes_nothing(space_file: str, tmp_path: Path, capsys, change, message) -> None:
    out = tmp_path / "runs"
    assert main(search_args(space_file, "--out", str(out))) == 0
    before = snapshot(out)
    args = search_args(space_file, "--out", str(out))
    for index in range(0, len(change), 2):
        flag = change[index]
        if flag in args:
            args[args.index(flag) + 1] = change[index + 1]
        else:
            args += change[index:index + 2]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas: error: ") and message in err[0]
    assert snapshot(out) == before, "the earlier run is untouched and no new one exists"


def test_corrupt_run_directory_exits_2(space_file: str, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / RUN_FILE).write_text("schema: 1\nsettings: {space: [\n")
    before = snapshot(tmp_path)
    for argv in (["search", "--resume", str(broken)], ["history", str(broken)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "run.yaml" in err[0]
    assert main(["search", "--resume", str(broken), "--budget", "5"]) == 2
    assert "do not pass --budget" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


# Runs `nas` and sends itself SIGKILL as the search asks for scores of batch number argv[1], so a kill lands
# mid-run however loaded the machine is (a poll from outside can miss a run that is fast).
KILLED_AT_BATCH = """
import os, signal, sys
import nas.cli
from nas.search.scorer import Scorer
evaluate, kill_at, batches = Scorer.evaluate, int(sys.argv[1]), []
def evaluate_until_killed(self, archs):
    batches.append(len(archs))
    if len(batches) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return evaluate(self, archs)
Scorer.evaluate = evaluate_until_killed
sys.exit(nas.cli.main(sys.argv[2:]))
"""


def run_killed_at_batch(args: list[str], batch: int) -> subprocess.CompletedProcess:
    """Run ``nas ARGS`` in a process that is killed as it starts scoring its ``batch``-th batch."""
    return subprocess.run([sys.executable, "-c", KILLED_AT_BATCH, str(batch), *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)


def one_strategy_per_resume_path() -> list[str]:
    """A killed run resumes one of two ways: a strategy with its own state replays the stored records, one that
    lives in the Optuna study (``uses_study``) reads it back. The registry's first strategy of each way, so both
    are killed and resumed whatever is registered (every strategy's replay is tested in memory in test_search)."""
    first: dict[bool, str] = {}
    for name in list_strategies():
        first.setdefault(get_strategy(name).uses_study, name)
    return list(first.values())


@pytest.mark.parametrize("strategy", one_strategy_per_resume_path())
def test_resume_after_kill_gives_the_uninterrupted_history(space_file: str, tmp_path: Path, strategy: str) -> None:
    in_study = get_strategy(strategy).uses_study
    budget = 24 if in_study else 40  # an Optuna trial is ~20 journal writes: keep it short
    assert main(search_args(space_file, "--out", str(tmp_path / "whole"), budget=budget, strategy=strategy)) == 0
    whole = Run.open(the_run(tmp_path / "whole")).history()

    killed_dir = tmp_path / "killed"
    process = run_killed_at_batch(search_args(space_file, "--out", str(killed_dir), budget=budget,
                                              strategy=strategy), 2)
    assert process.returncode == -signal.SIGKILL, "the search was killed mid-run"
    run_dir = the_run(killed_dir)
    assert 0 < Run.open(run_dir).count() < budget

    assert main(["search", "--resume", str(run_dir), "--no-plot"]) == 0
    resumed = Run.open(run_dir).history()
    assert len(resumed) == budget
    assert resumed[COLUMNS].to_dict("records") == whole[COLUMNS].to_dict("records")
    if not in_study:  # whole records, never a RUNNING trial: even the trial numbers agree
        assert list(resumed["number"]) == list(whole["number"])


def test_a_short_train_search_killed_mid_training_resumes_to_the_same_history(space_file: str, tmp_path: Path,
                                                                              monkeypatch) -> None:
    """The default source trains candidates in worker processes and keeps each score as it finishes: a kill
    loses only candidates in training, and the resumed search reads the others back."""
    budget = 6
    args = [*search_args(space_file, budget=budget), "--accuracy", "short-train", "--population", "3"]
    monkeypatch.setenv("NAS_HOME", str(tmp_path / "home-whole"))
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = Run.open(the_run(tmp_path / "whole")).history()

    home = tmp_path / "home-killed"
    monkeypatch.setenv("NAS_HOME", str(home))
    process = subprocess.Popen([sys.executable, "-m", "nas.cli", *args, "--out", str(tmp_path / "killed")],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "NAS_HOME": str(home)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not list(home.glob("short_train/*.json")):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    (cache,) = home.glob("short_train/*.json")
    kept = json.loads(cache.read_text())
    assert 0 < len(kept) < budget, "killed after some candidates were trained and before the end"

    assert main(["search", "--resume", str(the_run(tmp_path / "killed")), "--no-plot"]) == 0
    resumed = Run.open(the_run(tmp_path / "killed")).history()
    columns = [column if column != "proxy_score" else "accuracy" for column in COLUMNS]
    assert resumed[columns].to_dict("records") == whole[columns].to_dict("records")
    assert {arch_id: json.loads(cache.read_text())[arch_id] for arch_id in kept} == kept


def test_quick_is_a_smaller_budget_in_smaller_generations_unless_told(space_file: str, tmp_path: Path,
                                                                     capsys) -> None:
    from nas.commands.search import QUICK_BUDGET, QUICK_POPULATION

    base = ["search", "--space", space_file, "--target", "iphone12", "--accuracy", "proxy", "--no-plot", "--quick"]
    assert main([*base, "--out", str(tmp_path / "quick")]) == 0
    settings = Run.open(the_run(tmp_path / "quick")).settings
    assert (settings.budget, settings.population) == (QUICK_BUDGET, QUICK_POPULATION)
    assert main([*base, "--budget", "8", "--out", str(tmp_path / "told")]) == 0
    settings = Run.open(the_run(tmp_path / "told")).settings
    assert (settings.budget, settings.population) == (8, QUICK_POPULATION)
    capsys.readouterr()
    assert main(["search", "--resume", str(the_run(tmp_path / "told")), "--quick"]) == 2
    assert "do not pass --quick" in capsys.readouterr().err


def test_relative_paths_are_stored_absolute_so_resume_works_anywhere(space_file: str, tmp_path: Path,
                                                                      monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    local_space = work / "space.yaml"
    local_space.write_text(Path(space_file).read_text())
    monkeypatch.chdir(work)
    args = search_args("space.yaml", "--out", "runs", "--storage", "shared.journal", budget=8)
    assert main(args) == 0
    settings = Run.open(the_run(work / "runs")).settings
    assert settings.space == str(local_space) and settings.storage == str(work / "shared.journal")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--resume", str(the_run(work / "runs")), "--no-plot"]) == 0


def test_a_reader_that_leaves_early_gets_no_traceback(space_file: str, tmp_path: Path) -> None:
    """`nas history RUN | head -1`: the pipe closes under the writer; nas stops quietly with SIGPIPE's status."""
    assert main(search_args(space_file, "--out", str(tmp_path))) == 0
    command = f"{sys.executable} -m nas.cli history {the_run(tmp_path)} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.split()[:2] == ["number", "arch_id"]
    assert "Traceback" not in done.stderr and done.stderr == ""
