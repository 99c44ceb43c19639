"""Same seed, same search: the history of a search at a base commit equals the working tree's.

The base commit is exported (``git archive``) to a temporary folder; the same ``nas search`` runs there and
here, each in its own process with its own ``nas`` first on ``PYTHONPATH``; then ``nas history --json`` of
both runs (every candidate's key, Arch id, generation, parents, objective values and metrics, and the Arch)
and their ``run.yaml`` settings are compared. Data folders (``spaces/``, ``predictors/``) resolve through the
installed package, so both runs read the working tree's.

    python bench/same_history.py --base HEAD~5
    python bench/same_history.py --base HEAD~5 --space convnext --target v100 --budget 100 --seed 3

Prints the number of identical candidates, or the first difference; exits 1 when the runs differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _nas(code: Path, *args: str, cwd: Path) -> str:
    """``nas ARGS`` run with the package at ``code``; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-m", "nas.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"nas {' '.join(args)} (code at {code}) failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _search(code: Path, out: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The history rows and the settings of one search run with the package at ``code``."""
    _nas(code, "search", "--space", args.space, "--target", args.target, "--accuracy", "proxy", "--budget",
         str(args.budget), "--seed", str(args.seed), "--out", str(out), "--no-plot", "--json", cwd=out.parent)
    (run,) = [child for child in out.iterdir() if (child / "run.yaml").is_file()]
    rows = json.loads(_nas(code, "history", "--json", str(run), cwd=out.parent))
    settings = yaml.safe_load((run / "run.yaml").read_text())["settings"]
    return rows, settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~5)")
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--target", default="iphone12")
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nas-same-history-") as folder:
        work = Path(folder)
        base = work / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        before, before_settings = _search(base, work / "before", args)
        after, after_settings = _search(ROOT, work / "after", args)
    print(f"{args.space} on {args.target}, proxy accuracy, {args.budget} candidates, seed {args.seed}: "
          f"{args.base} vs the working tree")
    if before_settings != after_settings:
        print(f"settings differ:\n  base:  {before_settings}\n  now:   {after_settings}")
        return 1
    for index, (old, new) in enumerate(zip(before, after, strict=False)):
        if old != new:
            changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
            print(f"candidate {index} differs in {', '.join(changed)}")
            return 1
    if len(before) != len(after):
        print(f"the base run has {len(before)} candidates, this one {len(after)}")
        return 1
    print(f"identical: {len(after)} candidates, settings equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
