"""Behaviour check: the working tree's ``nas`` against a base commit, number for number.

A refactor that says "behaviour must not change" (issue 19) needs more than
the test suite: the tests pin a handful of figures, while a refactor can
shift any of thousands. This script records the same figures in both trees
and compares them:

* every zoo model's arch id, parameters and MACs (exactly equal);
* the ids of ``--points`` metaformer points sampled with the same seed
  (exactly equal, so sampling itself is checked);
* predicted latency on every target and setting, within ``--rtol`` relative:
  the zoo through :func:`nas.latency.predict` and
  :func:`nas.latency.predict_many` at every batch size the setting was
  measured at, the points through ``predict_many`` at batch 1 (tracing a
  point's new units dominates the run, and each batch size traces them anew);
* the history of ``nas search --accuracy proxy`` for the same seed: every
  evaluated candidate in order (arch id, objective values within ``--rtol``,
  every other column exactly).

Each tree is recorded by this same script run with ``--snapshot OUT.json`` in
that tree's interpreter, using only the public API (``nas.zoo``,
``nas.profile``, ``nas.latency``, ``nas.space.load_space``) and the ``nas``
command, so internals may move freely. The base is checked out with
``git worktree add`` into a temporary folder and installed editable into a
throwaway venv whose ``deps.pth`` points at this interpreter's site-packages
(the package maps ``nas.spaces`` / ``nas.predictors`` through pyproject's
``package-dir``, so a plain ``PYTHONPATH`` would not find them). Both are
removed afterwards. The base snapshot is cached under ``--cache`` by commit
hash and settings, so a rerun records only the working tree.

Prints one line per check (figures compared, largest relative difference;
a latency line counts the zoo through both APIs and the points together) and
exits 1 on any mismatch. A prediction that raises (an op a setting cannot run)
is recorded as its error message, which must then be the same in both trees.

Usage::

    python bench/behaviour.py                  # against bc7ddba (before issue 19)
    python bench/behaviour.py --base HEAD~3
    python bench/behaviour.py --smoke          # 5 zoo models, 20 points, budget 20
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "bc7ddba"
SPACE = "metaformer"
SEARCH_TARGET = "iphone12"
SMOKE_ZOO = 5
FULL = {"points": 1000, "budget": 300}
SMOKE = {"points": 20, "budget": 20}
HISTORY_OBJECTIVES = ("proxy_score", "latency_ms")
SNAPSHOT_FORMAT = 2  # part of the cache file name: bump when a snapshot's content changes


# --- snapshot (runs inside one tree's interpreter) -----------------------------------------------------


def _progress(step: str, started: float) -> None:
    print(f"  {step}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def _error(exc: Exception) -> str:
    return f"error: {type(exc).__name__}: {exc}"


def _zoo_snapshot(names: list[str]) -> dict[str, Any]:
    import nas

    out = {}
    for name in names:
        arch = nas.zoo.get(name)
        report = nas.profile(arch)
        out[name] = {"id": arch.id, "params": int(report.params), "macs": int(report.macs)}
    return out


def _settings() -> list[tuple[str, str, tuple[int, ...]]]:
    """Every (target, setting, batch sizes) the targets declare."""
    from nas.latency import get_target, list_targets

    return [(target_name, setting_name, setting.batch_sizes) for target_name in list_targets()
            for setting_name, setting in get_target(target_name).settings.items()]


def _predict_many(archs: list, target: str, setting: str, batch: int) -> list[float] | str:
    from nas.latency import predict_many

    try:
        return [float(value) for value in predict_many(archs, target=target, setting=setting, batch=batch)]
    except Exception as exc:  # an unsupported op is behaviour too: record it
        return _error(exc)


def _predict_one(arch, target: str, setting: str, batch: int) -> float | str:
    from nas.latency import predict

    try:
        return float(predict(arch, target=target, setting=setting, batch=batch).latency_ms)
    except Exception as exc:
        return _error(exc)


def _latency_snapshot(zoo: list, points: list) -> dict[str, Any]:
    out = {}
    for target, setting, batches in _settings():
        started = time.perf_counter()
        for batch in sorted({1, *batches}):
            out[f"{target}/{setting}/b{batch}"] = {
                "zoo_predict": [_predict_one(arch, target, setting, batch) for arch in zoo],
                "zoo_predict_many": _predict_many(zoo, target, setting, batch),
                "points_predict_many": _predict_many(points, target, setting, batch) if batch == 1 else [],
            }
        _progress(f"latency {target}/{setting}", started)
    return out


def _search_snapshot(nas_command: str, budget: int, seed: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="behaviour-search-") as folder:
        run = subprocess.run(
            [nas_command, "search", "--space", SPACE, "--target", SEARCH_TARGET, "--accuracy", "proxy",
             "--budget", str(budget), "--seed", str(seed), "--out", folder, "--no-plot", "--json"],
            capture_output=True, text=True, cwd=folder, check=True)
        path = json.loads(run.stdout)["path"]
        history = subprocess.run([nas_command, "history", path, "--json"], capture_output=True, text=True,
                                 cwd=folder, check=True)
        rows = json.loads(history.stdout)
    for row in rows:
        row.pop("arch", None)  # arch_id stands for it
    return rows


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """Every recorded figure of the tree this interpreter imports ``nas`` from."""
    import numpy as np

    import nas

    names = nas.zoo.list_zoo()
    if args.smoke:
        names = names[:SMOKE_ZOO]
    space = nas.space.load_space(SPACE)
    rng = np.random.default_rng(args.seed)
    points = [space.sample(rng) for _ in range(args.points)]
    zoo = [nas.zoo.get(name) for name in names]
    nas_command = str(Path(sys.executable).with_name("nas"))
    started = time.perf_counter()
    zoo_costs = _zoo_snapshot(names)
    _progress("zoo params and MACs", started)
    latency = _latency_snapshot(zoo, points)
    started = time.perf_counter()
    search = _search_snapshot(nas_command, args.budget, args.seed)
    _progress("search", started)
    return {"nas": str(Path(nas.__file__).parent), "zoo_names": names, "zoo": zoo_costs,
            "point_ids": [point.id for point in points], "latency": latency, "search": search}


# --- comparison -----------------------------------------------------------------------------------------


def _relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if math.isinf(a) or math.isinf(b) or math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


class Report:
    """Check lines, and whether any failed."""

    def __init__(self, rtol: float):
        self.rtol = rtol
        self.failed = False

    def line(self, name: str, count: int, worst: float | None, problem: str = "", tolerance: float = 0.0,
             *, failed: bool | None = None) -> None:
        bad = (bool(problem) if failed is None else failed) or (worst is not None and worst > tolerance)
        self.failed |= bad
        worst_text = "" if worst is None else f"  max rel diff {worst:.3g}"
        print(f"{'FAIL' if bad else 'ok  '}  {name:<40} {count:>6} compared{worst_text}"
              f"{'  ' + problem if problem else ''}")

    def exact(self, name: str, base: list, tree: list) -> None:
        if len(base) != len(tree):
            self.line(name, 0, None, f"{len(base)} in base, {len(tree)} in tree")
            return
        differ = [index for index, (a, b) in enumerate(zip(base, tree, strict=True)) if a != b]
        problem = f"{len(differ)} differ, first at #{differ[0]}: {base[differ[0]]!r} vs {tree[differ[0]]!r}" \
            if differ else ""
        self.line(name, len(base), None, problem)

    def close(self, name: str, pairs: list[tuple[list | str, list | str]]) -> None:
        """Numbers within ``rtol`` over several (base, tree) lists; recorded errors must match exactly."""
        count, worst, problems, errors = 0, 0.0, [], 0
        for base, tree in pairs:
            base = [base] if isinstance(base, str) else base
            tree = [tree] if isinstance(tree, str) else tree
            if len(base) != len(tree):
                problems.append(f"{len(base)} in base, {len(tree)} in tree")
                continue
            count += len(base)
            for index, (a, b) in enumerate(zip(base, tree, strict=True)):
                if isinstance(a, str) or isinstance(b, str):
                    errors += 1
                    if a != b:
                        problems.append(f"#{index}: {a!r} vs {b!r}")
                else:
                    worst = max(worst, _relative(a, b))
        note = f"{errors} errors, same in both" if errors and not problems else "; ".join(problems[:1])
        self.line(name, count, worst, note, self.rtol, failed=bool(problems))


def compare(base: dict[str, Any], tree: dict[str, Any], rtol: float) -> bool:
    """Print the check lines; True when everything matches."""
    report = Report(rtol)
    report.exact("zoo names", base["zoo_names"], tree["zoo_names"])
    names = [name for name in base["zoo_names"] if name in tree["zoo"]]
    for field in ("id", "params", "macs"):
        report.exact(f"zoo {field}", [base["zoo"][n][field] for n in names], [tree["zoo"][n][field] for n in names])
    report.exact(f"{SPACE} sampled point ids", base["point_ids"], tree["point_ids"])
    report.exact("latency target/setting/batch", sorted(base["latency"]), sorted(tree["latency"]))
    for key in sorted(set(base["latency"]) & set(tree["latency"])):
        parts = ("zoo_predict", "zoo_predict_many", "points_predict_many")
        report.close(f"latency {key}", [(base["latency"][key][part], tree["latency"][key][part]) for part in parts])
    base_rows, tree_rows = base["search"], tree["search"]
    report.exact("search history arch ids", [row.get("arch_id") for row in base_rows],
                 [row.get("arch_id") for row in tree_rows])
    for column in HISTORY_OBJECTIVES:
        report.close(f"search history {column}", [([row.get(column) for row in base_rows],
                                                   [row.get(column) for row in tree_rows])])
    other = sorted({key for row in base_rows + tree_rows for key in row} - {"arch_id", *HISTORY_OBJECTIVES})
    report.exact(f"search history other columns ({len(other)})",
                 [[row.get(key) for key in other] for row in base_rows],
                 [[row.get(key) for key in other] for row in tree_rows])
    return not report.failed


# --- driving both trees ---------------------------------------------------------------------------------


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()


def _dependency_paths() -> list[str]:
    """The site-packages folders this interpreter sees: the throwaway venv reuses them."""
    return [entry for entry in sys.path if entry.endswith("site-packages") and Path(entry).is_dir()]


def _snapshot_in(python: Path, out: Path, args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    """Run this script's ``--snapshot`` step in ``python`` (a subprocess, so each tree imports its own nas)."""
    command = [str(python), "-P", str(Path(__file__).resolve()), "--snapshot", str(out),
               "--seed", str(args.seed), "--points", str(args.points), "--budget", str(args.budget)]
    if args.smoke:
        command.append("--smoke")
    subprocess.run(command, check=True, cwd=cwd)
    return json.loads(out.read_text())


def _base_snapshot(commit: str, args: argparse.Namespace, cache: Path, scratch: Path) -> dict[str, Any]:
    """The base commit's snapshot, from the cache or from a temporary worktree and venv."""
    cached = cache / f"behaviour-v{SNAPSHOT_FORMAT}-{commit[:12]}-seed{args.seed}-p{args.points}-b{args.budget}" \
                     f"{'-smoke' if args.smoke else ''}.json"
    if cached.is_file():
        print(f"base {commit[:12]}: cached {cached}")
        return json.loads(cached.read_text())
    tree, venv = scratch / "base", scratch / "venv"
    _git("worktree", "add", "--detach", "--quiet", str(tree), commit)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = next((venv / "lib").glob("python3*/site-packages"))
        (site / "deps.pth").write_text("".join(f"{path}\n" for path in _dependency_paths()))
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(tree)], check=True,
                       cwd=scratch)
        started = time.perf_counter()
        snap = _snapshot_in(python, scratch / "base.json", args, scratch)
        print(f"base {commit[:12]}: recorded in {time.perf_counter() - started:.0f} s ({snap['nas']})")
    finally:
        _git("worktree", "remove", "--force", str(tree))
    cache.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(snap))
    return snap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the commit to compare against (default {DEFAULT_BASE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled points and the search")
    parser.add_argument("--points", type=int, help=f"sampled {SPACE} points (default {FULL['points']})")
    parser.add_argument("--budget", type=int, help=f"search candidates (default {FULL['budget']})")
    parser.add_argument("--rtol", type=float, default=1e-12, help="relative tolerance of latencies (default 1e-12)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_ZOO} zoo models, {SMOKE['points']} points, budget {SMOKE['budget']}")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "behaviour",
                        help="folder of cached base snapshots (default runs/behaviour)")
    parser.add_argument("--snapshot", type=Path, help=argparse.SUPPRESS)  # internal: record this tree only
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    args.points = defaults["points"] if args.points is None else args.points
    args.budget = defaults["budget"] if args.budget is None else args.budget

    if args.snapshot is not None:
        args.snapshot.write_text(json.dumps(snapshot(args)))
        return 0

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a kill still removes the temporary worktree
    started = time.perf_counter()
    commit = _git("rev-parse", "--verify", f"{args.base}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="behaviour-") as folder:
        scratch = Path(folder)
        base = _base_snapshot(commit, args, args.cache, scratch)
        tree_started = time.perf_counter()
        tree = _snapshot_in(Path(sys.executable), scratch / "tree.json", args, scratch)
        print(f"tree {REPO}: recorded in {time.perf_counter() - tree_started:.0f} s ({tree['nas']})")
    same = compare(base, tree, args.rtol)
    print(f"{'identical' if same else 'DIFFERENT'}: working tree vs {args.base} ({commit[:12]}), "
          f"{time.perf_counter() - started:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
