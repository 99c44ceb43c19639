"""Cold and warm pricing of search candidates on the real predictors, each measured in a fresh process.

*Cold* is what a search pays for a candidate it has never priced: the children of an evolution run (its
second half, so the rate is that of a search under way, not of its start), scored by the vector path
(``nas.search.vector_scorer.VectorScorer``: latency on the target, params, MACs, the proxy score) in a
process whose in-memory caches started empty. A child whose units were all priced before costs lookups; a
new unit is read from the persistent unit table (``nas.latency.unit_store``) when an earlier process priced
it, else traced. So cold is measured three ways:

* ``no table``: ``NAS_UNIT_TABLE=off``, every new unit traced (what every run paid before the tables);
* ``one earlier run``: the table another run (another seed) left behind;
* ``re-run``: the same run again (a resume or a repeat): every unit is in the table.

Cold is given per second of wall time and per second of this process's CPU time: on a shared machine the
first moves with the other jobs' load, the second much less.

*Warm* is the same late candidates scored again in that process, every unit known: by the vector path (one
lookup per part; the best of a few passes) and by the Arch path (``Scorer.evaluate``: decode, signature walk,
lookups).

Usage::

    python bench/pricing.py --target iphone12 [--budget 2000]      # print the figures of one target
    python bench/search.py                                         # prints them too, per --pricing-targets
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np

COLD_GOAL = 5_000
WARM_GOAL = 50_000
_REPEATS = 5


def probe(space_name: str, target: str, seed: int, budget: int, population: int, threads: int = 1) -> dict:
    """One evolution run in this process: the rates of its second half, then of the same candidates again.

    With ``threads`` torch intra-op threads, one by default as ``nas search`` runs (its ``--threads``): the
    constructors of some kinds compute small index tables on the CPU, and two threads on a busy 2-core
    machine make each of those small ops many times slower.
    """
    import torch

    from nas.cost import CACHE
    from nas.search import MemoryStore, Scores, create_strategy, make_scorer, optimize
    from nas.search.vector_scorer import VectorScorer
    from nas.space import load_space

    torch.set_num_threads(threads)
    space = load_space(space_name)
    scorer = make_scorer(target=target, accuracy="proxy", space=space.name)
    fast = VectorScorer(space, scorer)
    calls: list[tuple[int, float, int, float]] = []

    class Timed:
        def evaluate_vectors(self, vectors: np.ndarray) -> Scores:
            traced = CACHE.info().misses
            start, cpu = time.perf_counter(), time.process_time()
            scores = fast.evaluate_vectors(vectors)
            calls.append((len(vectors), time.perf_counter() - start, CACHE.info().misses - traced,
                          time.process_time() - cpu))
            return scores

    strategy = create_strategy("evolution", space, directions=["maximize", "minimize"], seed=seed,
                               population_size=population)
    records = optimize(space, strategy, Timed(), MemoryStore(), budget=budget, keep_arch=False)
    late = np.array(calls[len(calls) // 2:], dtype=np.float64)
    candidates = np.stack([np.asarray(record.vector, dtype=np.int16) for record in records[budget // 2:]])
    warm_vector = 0.0
    for _ in range(_REPEATS):  # a pass takes milliseconds: keep the best of a few
        start = time.perf_counter()
        fast.evaluate_vectors(candidates)
        warm_vector = max(warm_vector, len(candidates) / (time.perf_counter() - start))
    archs = [space.decode(vector) for vector in candidates]
    start = time.perf_counter()
    scorer.evaluate(archs)
    warm_arch = len(archs) / (time.perf_counter() - start)
    return {"cold": late[:, 0].sum() / late[:, 1].sum(), "cold_cpu": late[:, 0].sum() / late[:, 3].sum(),
            "traced_per_candidate": late[:, 2].sum() / late[:, 0].sum(),
            "candidates": int(late[:, 0].sum()), "warm_vector": warm_vector, "warm_arch": warm_arch}


def _fresh_process(home: str, table: bool, space: str, target: str, seed: int, budget: int,
                   population: int, threads: int) -> dict:
    env = {**os.environ, "NAS_HOME": home, "NAS_UNIT_TABLE": "on" if table else "off"}
    command = [sys.executable, __file__, "--probe", "--space", space, "--target", target, "--seed", str(seed),
               "--budget", str(budget), "--population", str(population), "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pricing probe failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(space: str, target: str, *, budget: int, population: int, threads: int = 1) -> dict[str, dict]:
    """Cold and warm rates of ``target`` (see the module docstring), each run in a fresh process."""
    run = partial(_fresh_process, space=space, target=target, budget=budget, population=population, threads=threads)
    with tempfile.TemporaryDirectory() as bare, tempfile.TemporaryDirectory() as home:
        runs = {"no table": run(bare, False, seed=0)}
        run(home, True, seed=1)  # leaves its units in the table
        runs["one earlier run"] = run(home, True, seed=0)
        runs["re-run"] = run(home, True, seed=0)
    return runs


def report(target: str, runs: dict[str, dict]) -> list[str]:
    """Printable lines for one target."""
    lines = [f"  {target}: cold = children in the second half of an evolution run, never priced in the process "
             f"(goal >= {COLD_GOAL:,}/s); warm = the same candidates again (goal >= {WARM_GOAL:,}/s)"]
    for name, run in runs.items():
        lines.append(f"    {name:>15}: cold {run['cold']:>9,.0f}/s, {run['cold_cpu']:>9,.0f}/s of CPU time "
                     f"({run['traced_per_candidate']:.2f} units traced per candidate, {run['candidates']} candidates); "
                     f"warm {run['warm_vector']:>9,.0f}/s by the vector path, {run['warm_arch']:>8,.0f}/s by the "
                     f"Arch path")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--target", default="iphone12")
    parser.add_argument("--budget", type=int, default=2000, help="evaluations of each evolution run")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as nas search)")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.space, args.target, args.seed, args.budget, args.population, args.threads)))
        return 0
    runs = measure(args.space, args.target, budget=args.budget, population=args.population, threads=args.threads)
    print("\n".join(report(args.target, runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
