"""Search strategies compared by hypervolume on the real objectives, and pricing on the real predictors.

Objectives, both priced by the real predictors (no surrogate of them):

* latency on the target (``iphone12``, the main job's), minimised: ``nas.latency``'s predictor, summed over each
  candidate's units by ``nas.search.vector_scorer.VectorScorer``, equal to the Arch path's prediction;
* accuracy, maximised, by a stated *stand-in*: the ``proxy`` source of ``nas search`` (``log10 MACs``). The main
  job's default source, ``short-train``, trains each candidate for 60 steps (about 20 s on one core); the ~75,000
  evaluations of this comparison would take weeks. The stand-in keeps what makes the search hard and
  strategy-relevant: MACs and latency are priced from the same units but disagree by kind (attention,
  memory-bound norms and pooling, strided stems cost time that MACs do not count), so the front is the set of points
  that buy the most compute per millisecond on the target, reached by the same moves (kinds, widths, depths per
  stage) as a front on trained accuracy. What it cannot show is how a strategy copes with a noisy accuracy.

Printed:

* hypervolume after 300 and 1,000 evaluations (``--budgets``) for evolution, optuna-nsga2, optuna-tpe,
  optuna-gp, nni-evolution (when NNI is installed) and random, ``--seeds`` seeds each, as ratios of means to
  evolution's (goal: evolution >= every other strategy at equal budget), plus random with 10x the budget;
* each strategy's wall time per 1,000 evaluations, split into its own time (ask and tell: sampling, model fits,
  selection) and scoring (pricing its candidates; a unit met for the first time is traced or read from the
  persistent unit table, so scoring costs least for the runs that come after others in one process);
* the pricing figures of ``bench/pricing.py`` (cold and warm, each in a fresh process), unless ``--no-pricing``.

A run that reaches ``--time-cap`` CPU seconds (its own time plus scoring) stops there (optuna-gp fits a Gaussian
process on ~830 one-hot features per ask); its hypervolume is then that of the evaluations it reached, compared with
evolution's at the same count ("equal time" in place of "equal budget"), and the table says so.

Each run is kept in ``--results`` (a folder, one JSON file per run, keyed by space, target, strategy, seed,
budget, population and a digest of the strategy's source; a run under way is kept every 100 evaluations, and is
reported as far as it got, but run again from its start by the next bench), so a stopped bench resumes where it
stopped, several processes may share the folder (e.g. one per strategy, to use both cores), and only the runs of a
strategy whose code changed are run again. The table is printed after every round of seeds, so a partial run shows
what it has; the hypervolume reference point (the nadir of every point any run found, pushed out by 10 % of the range,
``nas.search.pareto.reference_point``, in loss space ``(-proxy_score, latency_ms)``) is taken over the runs present.

Usage::

    python bench/search.py                              # the full comparison (hours on 2 busy cores)
    python bench/search.py --smoke                      # small sizes, for CI (about a minute)
    python bench/search.py --strategies optuna-tpe --results runs/bench-search   # one process per strategy ...
    python bench/search.py --report-only --results runs/bench-search             # ... and the table of them all
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pricing import measure as measure_pricing
from pricing import report as pricing_report

from nas.atomic import write_atomic
from nas.search import MemoryStore, create_strategy, evaluate, get_strategy, hypervolume, make_scorer, reference_point
from nas.search.strategies.nni_evolution import nni_available
from nas.search.vector_scorer import VectorScorer
from nas.space import load_space

STRATEGIES = ("evolution", "optuna-nsga2", "optuna-tpe", "optuna-gp", "nni-evolution", "random")
DIRECTIONS = ("maximize", "minimize")  # the proxy score, latency
SIGNS = np.array([-1.0, 1.0])
RANDOM_FACTOR = 10
CHECKPOINT = 100


@dataclass
class Run:
    """One strategy's run: its losses in evaluation order and where its time went."""

    strategy: str
    seed: int
    budget: int
    population: int
    losses: list[list[float]]  # per evaluation: (-proxy_score, latency_ms)
    own_s: float  # ask and tell, wall time
    scoring_s: float
    time_cap_s: float
    capped: bool
    own_cpu_s: float = math.nan  # the same in CPU time of this process (all its threads)
    scoring_cpu_s: float = math.nan
    finished: bool = True  # False: a snapshot of a run still going (or killed), kept every CHECKPOINT evaluations

    @property
    def evaluations(self) -> int:
        return len(self.losses)

    def hypervolume(self, budget: int, reference: np.ndarray) -> float:
        return hypervolume(np.asarray(self.losses[:budget]), reference)

    def per_thousand(self) -> tuple[float, float, float, float]:
        """(own, scoring) wall seconds, then (own, scoring) CPU seconds, per 1,000 evaluations."""
        return tuple(1000 * value / self.evaluations
                     for value in (self.own_s, self.scoring_s, self.own_cpu_s, self.scoring_cpu_s))


@functools.cache
def code_digest(strategy: str) -> str:
    """A digest of the source a strategy's proposals depend on: its class's package folder and the base class
    (read once, at start-up, like the code the process runs: see ``main``)."""
    folder = Path(inspect.getfile(get_strategy(strategy))).parent
    digest = hashlib.sha256()
    for path in [*sorted(folder.glob("*.py")), folder.parent / "base.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run_one(space, scorer, strategy: str, seed: int, budget: int, population: int, time_cap: float,
            keep: Callable[[Run], None]) -> Run:
    """The ask / evaluate / tell loop of ``nas.search.optimize`` in memory, timing the strategy and the scoring
    apart, and stopping at ``budget`` evaluations or ``time_cap`` CPU seconds (CPU, not wall: on a machine shared
    with other jobs a wall-time cap would cut runs short by the load, not by their cost). Every ``CHECKPOINT``
    evaluations the run so far goes to ``keep`` (unfinished), so a bench stopped at a deadline still reports it."""
    created = create_strategy(strategy, space, directions=DIRECTIONS, seed=seed, population_size=population)
    store = MemoryStore(DIRECTIONS)
    if created.uses_study:
        created.bind(store.study())
    own = scoring = own_cpu = scoring_cpu = 0.0
    losses: list[list[float]] = []

    def snapshot(finished: bool) -> Run:
        return Run(strategy, seed, budget, population, list(losses), own, scoring, time_cap, len(losses) < budget,
                   own_cpu, scoring_cpu, finished)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while len(losses) < budget and own_cpu + scoring_cpu < time_cap:
                start, start_cpu = time.perf_counter(), time.process_time()
                proposals = created.ask(min(population, budget - len(losses)))
                if not proposals:
                    raise RuntimeError(f"{strategy} proposed nothing after {len(losses)} evaluations")
                asked, asked_cpu = time.perf_counter(), time.process_time()
                records = evaluate(space, scorer, proposals, keep_arch=False)
                scored, scored_cpu = time.perf_counter(), time.process_time()
                created.tell([store.record(proposal, record) for proposal, record in zip(proposals, records,
                                                                                         strict=True)])
                own += (asked - start) + (time.perf_counter() - scored)
                own_cpu += (asked_cpu - start_cpu) + (time.process_time() - scored_cpu)
                scoring += scored - asked
                scoring_cpu += scored_cpu - asked_cpu
                before = len(losses)
                losses.extend((np.array([record.values for record in records]) * SIGNS).tolist())
                if len(losses) < budget and len(losses) // CHECKPOINT > before // CHECKPOINT:
                    keep(snapshot(False))
    finally:
        created.close()
    return snapshot(True)


class Results:
    """The finished runs, one JSON file each under ``folder`` (or in memory when there is no folder)."""

    def __init__(self, folder: str | None, space: str, target: str):
        self.folder = Path(folder) if folder else None
        self.prefix = f"{space}-{target}"
        self.memory: dict[str, Run] = {}

    def _name(self, strategy: str, seed: int, budget: int, population: int) -> str:
        return f"{self.prefix}-{strategy}-s{seed}-b{budget}-p{population}-{code_digest(strategy)}.json"

    def get(self, strategy: str, seed: int, budget: int, population: int) -> Run | None:
        name = self._name(strategy, seed, budget, population)
        if name in self.memory:
            return self.memory[name]
        if self.folder is not None and (self.folder / name).is_file():
            self.memory[name] = Run(**json.loads((self.folder / name).read_text(encoding="utf-8")))
            return self.memory[name]
        return None

    def put(self, run: Run) -> None:
        name = self._name(run.strategy, run.seed, run.budget, run.population)
        self.memory[name] = run
        if self.folder is not None:
            write_atomic(self.folder / name, json.dumps(asdict(run)))


def _ratio_text(values: list[float], base: float | None) -> str:
    ratio = np.mean(values) / base if base else math.nan
    return f"{np.mean(values):.5f} +- {np.std(values):.5f}   ratio {ratio:.4f}"


def _equal_time(capped: list[Run], evolution: list[Run]) -> int:
    """Evaluations evolution makes in the mean CPU time of the capped runs (at most as many as it made)."""
    seconds = np.mean([run.own_cpu_s + run.scoring_cpu_s for run in capped])
    per_evaluation = np.mean([(run.own_cpu_s + run.scoring_cpu_s) / run.evaluations for run in evolution])
    return int(min(min(run.evaluations for run in evolution), seconds // per_evaluation))


def report(runs: list[Run], small: int, large: int) -> tuple[list[str], dict]:
    """The table of the runs present: hypervolume ratios to evolution and wall times (see the module docstring)."""
    reference = reference_point(np.concatenate([np.asarray(run.losses) for run in runs]))
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.strategy, []).append(run)
    evolution = by_name.get("evolution", [])
    lines = [f"hypervolume (reference point {np.round(reference, 4).tolist()} in (-proxy_score, latency_ms)); "
             f"mean +- std over seeds, and the ratio of means to evolution's over the same seeds"]
    figures: dict = {"reference": reference.tolist(), "hypervolume": {}, "seconds_per_1000": {}}
    beaten = []
    for name, mine in by_name.items():
        seeds = sorted(run.seed for run in mine)
        peers = [run for run in evolution if run.seed in seeds]
        budgets = [(small, small), (large, large)]
        if name == "random":
            budgets += [(RANDOM_FACTOR * small, small), (RANDOM_FACTOR * large, large)]
        for budget, equal in budgets:
            reached = min(min(run.evaluations for run in mine), budget)
            values = [run.hypervolume(budget, reference) for run in mine]
            label = f"{name} x{RANDOM_FACTOR}" if budget != equal else name
            compare, note = equal, f" (to evolution @ {equal})" if budget != equal else ""
            if reached < budget and all(run.finished for run in mine):  # time-capped: equal CPU time
                compare = _equal_time(mine, peers)
                note = (f" (time cap: {reached} evaluations reached; to evolution @ {compare}, its count in equal "
                        f"CPU time)")
            elif reached < budget:  # still running: equal count (scaled for the 10x budget)
                compare = reached * equal // budget
                note = f" (unfinished: {reached} evaluations reached; to evolution @ {compare})"
            base = float(np.mean([run.hypervolume(compare, reference) for run in peers])) if peers else None
            lines.append(f"  {label:>16} @ {budget:>5}: {_ratio_text(values, base)}{note}   [seeds {seeds}]")
            ratio = float(np.mean(values) / base) if base else math.nan
            figures["hypervolume"][f"{label}@{budget}"] = {"mean": float(np.mean(values)), "std": float(np.std(values)),
                                                          "ratio": ratio, "reached": reached, "seeds": seeds}
            if name != "evolution" and budget == equal and ratio > 1.0:
                beaten.append(f"{label}@{budget} ({ratio:.4f})")
    if evolution:
        lines.append("goal (evolution >= every other strategy at equal budget, at equal CPU time where capped): "
                     + ("met" if not beaten else f"NOT met by {', '.join(beaten)}"))
    lines.append("time per 1,000 evaluations, mean over seeds: the strategy's own (ask, tell) + scoring its "
                 "candidates (real predictors; cheaper when earlier runs in the process priced their units); "
                 "wall time, and CPU time of the process")
    for name, mine in by_name.items():
        own, scoring, own_cpu, scoring_cpu = np.mean([run.per_thousand() for run in mine], axis=0)
        lines.append(f"  {name:>16}: wall {own + scoring:8.1f} s = {own:8.1f} s own + {scoring:6.1f} s scoring; "
                     f"CPU {own_cpu + scoring_cpu:8.1f} s = {own_cpu:8.1f} s own + {scoring_cpu:6.1f} s scoring")
        figures["seconds_per_1000"][name] = {"own": float(own), "scoring": float(scoring), "own_cpu": float(own_cpu),
                                             "scoring_cpu": float(scoring_cpu)}
    return lines, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--target", default="iphone12")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-list", type=int, nargs="+", help="run only these of the seeds (other processes may "
                                                                  "run the rest into the same --results)")
    parser.add_argument("--budgets", type=int, nargs=2, default=(300, 1000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--time-cap", type=float, default=3600.0,
                        help="CPU seconds (own + scoring) after which a run stops short of its budget")
    parser.add_argument("--results", help="folder keeping each finished run (resume, share between processes)")
    parser.add_argument("--report-only", action="store_true", help="print the runs in --results, run nothing")
    parser.add_argument("--no-pricing", action="store_true", help="skip bench/pricing.py's figures")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.budgets, args.population, args.time_cap = 2, (16, 32), 8, 3.0
    small, large = args.budgets
    space = load_space(args.space)
    print(f"space {space.name} ({space.size_text()} points, {space.num_slots} decisions), target {args.target}: "
          f"latency by the real predictor, accuracy by the stand-in log10 MACs (the 'proxy' source); "
          f"{args.seeds} seeds, budgets {small} and {large}, population {args.population}, "
          f"time cap {args.time_cap:.0f} CPU s per run", flush=True)
    vector_scorer = VectorScorer(space, make_scorer(target=args.target, accuracy="proxy", space=space.name))
    results = Results(args.results, space.name, args.target)
    names = [name for name in args.strategies if name != "nni-evolution" or nni_available()]
    if len(names) < len(args.strategies):
        print("nni-evolution: skipped (NNI not installed: pip install 'nas[nni]')")
    plan = [(name, RANDOM_FACTOR * large if name == "random" else large) for name in names]
    for name in names:  # the digests of the code just imported, before anyone edits it during a long run
        code_digest(name)
    figures: dict = {}
    mine = set(range(args.seeds) if args.seed_list is None else args.seed_list)
    for seed in range(args.seeds):
        for name, budget in plan:
            kept = results.get(name, seed, budget, args.population)
            if seed in mine and (kept is None or not kept.finished) and not args.report_only:
                run = run_one(space, vector_scorer, name, seed, budget, args.population, args.time_cap, results.put)
                results.put(run)
                own, scoring, own_cpu, scoring_cpu = run.per_thousand()
                print(f"  {name} seed {seed}: {run.evaluations} evaluations in {run.own_s + run.scoring_s:.1f} s "
                      f"(per 1,000: wall {own:.1f} s own + {scoring:.1f} s scoring, CPU {own_cpu:.1f} + "
                      f"{scoring_cpu:.1f} s)"
                      + (" (time cap)" if run.capped else ""), flush=True)
        done = [run for seed_done in range(seed + 1) for name, budget in plan
                if (run := results.get(name, seed_done, budget, args.population)) is not None]
        if done and (seed == args.seeds - 1 or not args.report_only):
            lines, figures = report(done, small, large)
            print(f"\nafter seeds 0..{seed}:\n" + "\n".join(lines) + "\n", flush=True)

    if not (args.no_pricing or args.report_only):
        print("pricing fresh candidates on the real predictors, each figure in a fresh process (bench/pricing.py):")
        runs = measure_pricing(space.name, args.target, budget=200 if args.smoke else 2000,
                               population=args.population)
        print("\n".join(pricing_report(args.target, runs)), flush=True)
        figures["pricing"] = runs
    if args.json:
        write_atomic(args.json, json.dumps({"space": space.name, "target": args.target, **figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
