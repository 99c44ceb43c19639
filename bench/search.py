"""Search strategies compared by hypervolume, and the scoring throughput of evolution's inner loop.

Objectives (predictor-based, no training): the proxy score ``log10 MACs`` (maximised; the stand-in for
accuracy of ``nas.search.accuracy``) and the predicted latency on the target (minimised). The real
predictors price a point by summing per-unit numbers, and a unit never seen before must be traced
(``nas.cost``, ~20 ms each); fresh random points of the MetaFormer space bring several new units each, so
they cost 0.1-0.3 s apiece, and the ~75,000 evaluations of the comparison (random search alone takes 5 x 10,000)
would take hours on 2 cores. So the strategies are compared on a *surrogate* of those two predictors: a
small MLP per objective on ``Space.features`` of the point vector, fitted here on ``--fit`` points scored by
the real predictors and checked on ``--holdout`` others (R^2 and Spearman rho are printed). The surrogate is
deterministic and the same for every strategy, so the comparison is fair; the real predictors' throughput is
measured separately.

Printed:

* the surrogates' held-out fit;
* hypervolume after 300 and 1000 evaluations for evolution, optuna-nsga2, optuna-tpe, nni-evolution (when
  NNI is installed) and random, ``--seeds`` seeds each, as ratios to evolution's mean (goal: evolution >= every
  other strategy at equal budget), plus random with 10x the budget;
* throughput of scoring with the real predictors (goal >= 10k candidates/s for evolution's inner loop):
  (a) cold: fresh random points, by the Arch path (``Scorer``: decode, unit caches, tracing new units) and by
  the vector path (``nas.search.vector_scorer.VectorScorer``: per-part tables, no Arch for points whose parts
  were seen); (b) warm: candidates scored per second of scoring time in the second half of a long evolution
  run with the vector path, the share of candidates with a new part and the units traced per candidate; (c) the same
  candidates scored again once every unit is known, by both paths; then the whole inner loop (ask, score,
  tell) on the surrogate.

The hypervolume reference point is common to all runs: the nadir of every feasible point any run found,
pushed out by 10 % of the range (``nas.search.pareto.reference_point``), in loss space
``(-proxy_score, latency_ms)``.

Usage::

    python bench/search.py                 # the full comparison (tens of minutes on 2 cores)
    python bench/search.py --smoke         # small sizes, for CI (about a minute)
    python bench/search.py --strategies evolution random --seeds 3
    python bench/search.py --scores /tmp/fit.npz   # keep the real predictors' scores for the next run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from pricing import measure as measure_pricing
from pricing import report as pricing_report
from scipy.stats import spearmanr

from nas.cost import CACHE
from nas.search import MemoryStore, Scores, create_strategy, hypervolume, make_scorer, optimize, reference_point
from nas.search.strategies.nni_evolution import nni_available
from nas.search.vector_scorer import VectorScorer
from nas.space import load_space

STRATEGIES = ("evolution", "optuna-nsga2", "optuna-tpe", "nni-evolution", "random")
THROUGHPUT_GOAL = 10_000
SIGNS = np.array([-1.0, 1.0])  # maximise the proxy score, minimise latency


class MLP:
    """A 2-hidden-layer ReLU regressor trained with torch, evaluated with numpy."""

    def __init__(self, features: np.ndarray, target: np.ndarray, *, seed: int, hidden: int = 256, steps: int = 1500):
        self.mean, self.scale = float(target.mean()), float(target.std() or 1.0)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], hidden), torch.nn.ReLU(),
                                      torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        x = torch.from_numpy(features.astype(np.float32))
        y = torch.from_numpy(((target - self.mean) / self.scale).astype(np.float32))[:, None]
        optimiser = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-5)
        for _ in range(steps):
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            optimiser.step()
        self.weights = [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
                        for layer in net if isinstance(layer, torch.nn.Linear)]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        out = features.astype(np.float32)
        for index, (weight, bias) in enumerate(self.weights):
            out = out @ weight + bias
            if index < len(self.weights) - 1:
                np.maximum(out, 0.0, out=out)
        return out[:, 0].astype(np.float64) * self.scale + self.mean


class SurrogateScorer:
    """Vector-level scorer (``evaluate_vectors``) over the two fitted surrogates; no Arch is decoded."""

    def __init__(self, space, proxy: MLP, log_latency: MLP):
        self.space, self.proxy, self.log_latency = space, proxy, log_latency

    def evaluate_vectors(self, vectors: np.ndarray) -> Scores:
        features = self.space.features(vectors)
        proxy, latency = self.proxy(features), np.exp(self.log_latency(features))
        return Scores(np.stack([proxy, latency], axis=1), np.zeros((len(vectors), 0)),
                      {"proxy_score": proxy, "latency_ms": latency})


def _r2(truth: np.ndarray, guess: np.ndarray) -> float:
    return float(1.0 - np.sum((truth - guess) ** 2) / np.sum((truth - truth.mean()) ** 2))


def _scored_sample(space, target: str, count: int, seed: int,
                   cache: str | None) -> tuple[np.ndarray, np.ndarray, float]:
    """``count`` random points and their real (proxy, latency) values; reused from ``cache`` (.npz) if it matches."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    vectors = space.sample_vectors(rng, count)
    if cache and os.path.isfile(cache):
        stored = np.load(cache)
        if stored["vectors"].shape == vectors.shape and (stored["vectors"] == vectors).all() \
                and str(stored["target"]) == target:
            return vectors, stored["values"], float(stored["seconds"])
    scorer = make_scorer(target=target, accuracy="proxy", space=space.name)
    start = time.perf_counter()
    values = scorer.evaluate([space.decode(vector) for vector in vectors]).values
    seconds = time.perf_counter() - start
    if cache:
        np.savez(cache, vectors=vectors, values=values, seconds=seconds, target=target)
    return vectors, values, seconds


def fit_surrogates(space, target: str, fit: int, holdout: int, seed: int, cache: str | None = None,
                   steps: int = 1500) -> tuple[SurrogateScorer, dict]:
    vectors, values, scoring_s = _scored_sample(space, target, fit + holdout, seed, cache)
    features = space.features(vectors)
    proxy_true, latency_true = values[:, 0], values[:, 1]
    train = slice(0, fit)
    proxy = MLP(features[train], proxy_true[train], seed=seed, steps=steps)
    log_latency = MLP(features[train], np.log(latency_true[train]), seed=seed + 1, steps=steps)
    test = slice(fit, fit + holdout)
    guess_proxy, guess_latency = proxy(features[test]), np.exp(log_latency(features[test]))
    quality = {
        "fit_points": fit, "holdout_points": holdout, "exact_scoring_s": round(scoring_s, 1),
        "exact_candidates_per_s": round((fit + holdout) / scoring_s, 1),
        "proxy_r2": round(_r2(proxy_true[test], guess_proxy), 4),
        "proxy_spearman": round(float(spearmanr(proxy_true[test], guess_proxy).statistic), 4),
        "latency_r2": round(_r2(latency_true[test], guess_latency), 4),
        "latency_spearman": round(float(spearmanr(latency_true[test], guess_latency).statistic), 4),
        "latency_mape_pct": round(float(np.mean(np.abs(guess_latency / latency_true[test] - 1)) * 100), 2),
    }
    return SurrogateScorer(space, proxy, log_latency), quality


@dataclass
class Result:
    strategy: str
    seed: int
    budget: int
    losses: np.ndarray
    seconds: float


def run_one(space, scorer, strategy: str, seed: int, budget: int, population: int) -> Result:
    created = create_strategy(strategy, space, directions=["maximize", "minimize"], seed=seed,
                              population_size=population)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = optimize(space, created, scorer, MemoryStore(), budget=budget, keep_arch=False)
    seconds = time.perf_counter() - start
    losses = np.array([record.values for record in records]) * SIGNS
    return Result(strategy, seed, budget, losses, seconds)


def loop_rate(space, scorer, *, budget: int, population: int) -> float:
    """Candidates/s of a whole evolution run (ask, score, tell) on ``scorer``."""
    result = run_one(space, scorer, "evolution", 0, budget, population)
    return budget / result.seconds


class TimedScorer:
    """A vector scorer that keeps, per call, (candidates, seconds, decoded misses, units traced)."""

    def __init__(self, inner: VectorScorer):
        self.inner = inner
        self.calls: list[tuple[int, float, int, int]] = []

    def evaluate_vectors(self, vectors: np.ndarray) -> Scores:
        misses, traced = self.inner.misses, CACHE.info().misses
        start = time.perf_counter()
        scores = self.inner.evaluate_vectors(vectors)
        self.calls.append((len(vectors), time.perf_counter() - start, self.inner.misses - misses,
                           CACHE.info().misses - traced))
        return scores


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf


def real_throughput(space, target: str, *, fresh: int, budget: int, population: int) -> dict:
    """Scoring rates of the real predictors (see the module docstring, (a) to (c))."""
    def scorer():
        return make_scorer(target=target, accuracy="proxy", space=space.name)

    rng = np.random.default_rng(np.random.SeedSequence([1, 0xC01D]))
    archs = [space.decode(vector) for vector in space.sample_vectors(rng, fresh)]
    start = time.perf_counter()
    scorer().evaluate(archs)
    cold_arch = _rate(fresh, time.perf_counter() - start)
    vectors = space.sample_vectors(rng, fresh)
    start = time.perf_counter()
    VectorScorer(space, scorer()).evaluate_vectors(vectors)
    cold_vector = _rate(fresh, time.perf_counter() - start)

    timed = TimedScorer(VectorScorer(space, scorer()))
    strategy = create_strategy("evolution", space, directions=["maximize", "minimize"], seed=0,
                               population_size=population)
    records = optimize(space, strategy, timed, MemoryStore(), budget=budget, keep_arch=False)
    late = np.array(timed.calls[len(timed.calls) // 2:], dtype=np.float64)
    candidates = np.stack([np.asarray(record.vector, dtype=np.int16) for record in records[budget // 2:]])
    archs = [space.decode(vector) for vector in candidates]
    start = time.perf_counter()
    scorer().evaluate(archs)
    known_arch = _rate(len(archs), time.perf_counter() - start)
    start = time.perf_counter()
    timed.inner.evaluate_vectors(candidates)
    known_vector = _rate(len(candidates), time.perf_counter() - start)
    return {
        "fresh_points": fresh, "cold_arch_path": cold_arch, "cold_vector_path": cold_vector,
        "evolution_budget": budget, "evolution_population": population,
        "warm_evolution_scoring": _rate(int(late[:, 0].sum()), float(late[:, 1].sum())),
        "warm_evolution_decoded_share": float(late[:, 2].sum() / late[:, 0].sum()),
        "warm_evolution_units_traced_per_candidate": float(late[:, 3].sum() / late[:, 0].sum()),
        "known_units_arch_path": known_arch, "known_parts_vector_path": known_vector,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--target", default="iphone12")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", type=int, nargs=2, default=(300, 1000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--fit", type=int, default=3000, help="points scored by the real predictors to fit on")
    parser.add_argument("--holdout", type=int, default=500)
    parser.add_argument("--pricing-targets", nargs="+", help="targets whose cold and warm pricing rates are "
                                                               "measured in fresh processes (default: --target)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--scores", help="an .npz file keeping the real predictors' scores of the fit sample, "
                                         "reused by later runs with the same space, target and sizes")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.budgets, args.fit, args.holdout = 2, (40, 80), 100, 40
    small, large = args.budgets
    # The figures measured in this process are of the in-memory caches alone: the persistent unit tables
    # (whatever this user's $NAS_HOME holds) are measured by bench/pricing.py, in fresh processes.
    os.environ["NAS_UNIT_TABLE"] = "off"
    space = load_space(args.space)
    print(f"space {space.name} ({space.size_text()} points, {space.num_slots} decisions), target {args.target}, "
          f"{args.seeds} seeds, budgets {small} and {large}, population {args.population}")

    # first, while every cache is empty: (a) is a cold start
    real = real_throughput(space, args.target, fresh=10 if args.smoke else 200, budget=100 if args.smoke else 3000,
                           population=args.population)
    scorer, quality = fit_surrogates(space, args.target, args.fit, args.holdout, seed=0, cache=args.scores,
                                     steps=300 if args.smoke else 1500)
    print(f"surrogates: fitted on {quality['fit_points']} points scored by the real predictors "
          f"({quality['exact_candidates_per_s']} candidates/s), checked on {quality['holdout_points']} others: "
          f"proxy R^2 {quality['proxy_r2']}, rho {quality['proxy_spearman']}; latency R^2 {quality['latency_r2']}, "
          f"rho {quality['latency_spearman']}, MAPE {quality['latency_mape_pct']}%")

    results: list[Result] = []
    plan = [(name, large) for name in args.strategies if name != "random"]
    if "random" in args.strategies:
        plan += [("random", 10 * large)]
    for name, budget in plan:
        if name == "nni-evolution" and not nni_available():
            print(f"{name:>13}: skipped (NNI not installed: pip install 'nas[nni]')")
            continue
        for seed in range(args.seeds):
            result = run_one(space, scorer, name, seed, budget, args.population)
            results.append(result)
        spent = sum(r.seconds for r in results if r.strategy == name)
        print(f"{name:>13}: {args.seeds} runs of {budget} evaluations in {spent:.1f} s", flush=True)

    everything = np.concatenate([result.losses for result in results])
    reference = reference_point(everything)
    rows = {}
    for name in dict.fromkeys(result.strategy for result in results):
        mine = [result for result in results if result.strategy == name]
        rows[name] = {budget: [hypervolume(result.losses[:budget], reference) for result in mine]
                      for budget in (small, large, 10 * small, 10 * large) if budget <= mine[0].budget}
    base = {budget: float(np.mean(rows["evolution"][budget])) for budget in (small, large)} \
        if "evolution" in rows else None

    print(f"\nhypervolume (reference point {np.round(reference, 4).tolist()} in (-proxy_score, latency_ms)); "
          f"mean +- std over {args.seeds} seeds, and the ratio of means to evolution")
    report = {"space": space.name, "target": args.target, "seeds": args.seeds, "surrogate": quality,
              "reference": reference.tolist(), "hypervolume": {}}
    for name, by_budget in rows.items():
        for budget in (small, large):
            if budget not in by_budget:
                continue
            values = np.array(by_budget[budget])
            ratio = values.mean() / base[budget] if base else math.nan
            print(f"  {name:>13} @ {budget:>5}: {values.mean():.5f} +- {values.std():.5f}   ratio {ratio:.4f}")
            report["hypervolume"][f"{name}@{budget}"] = {"mean": values.mean(), "std": values.std(), "ratio": ratio}
        if name == "random":
            for budget, equal in ((10 * small, small), (10 * large, large)):
                values = np.array(by_budget[budget])
                ratio = values.mean() / base[equal] if base else math.nan
                print(f"  {'random x10':>13} @ {budget:>5}: {values.mean():.5f} +- {values.std():.5f}   "
                      f"ratio {ratio:.4f} (to evolution @ {equal})")
                report["hypervolume"][f"random@{budget}"] = {"mean": values.mean(), "std": values.std(),
                                                             "ratio": ratio}
    if base:
        beaten = [key for key, row in report["hypervolume"].items()
                  if not key.startswith(("evolution", "random@" + str(10 * small), "random@" + str(10 * large)))
                  and row["ratio"] > 1.0]
        print("goal (evolution >= every other strategy at equal budget): "
              + ("met" if not beaten else f"NOT met by {', '.join(beaten)}"))

    fast = loop_rate(space, scorer, budget=1000 if args.smoke else 4000, population=args.population)
    wide = loop_rate(space, scorer, budget=2000 if args.smoke else 8000, population=256)
    print(f"\nthroughput with the real predictors (latency on {args.target}, params, MACs, proxy; goal >= "
          f"{THROUGHPUT_GOAL:,} candidates/s for evolution's inner loop):")
    print(f"  (a) cold, {real['fresh_points']} fresh random points: {real['cold_arch_path']:,.1f}/s by the Arch "
          f"path (Scorer), {real['cold_vector_path']:,.1f}/s by the vector path (VectorScorer); new units are "
          f"traced")
    print(f"  (b) warm, second half of an evolution run of {real['evolution_budget']} (population "
          f"{real['evolution_population']}), vector path: {real['warm_evolution_scoring']:,.1f} candidates per "
          f"second of scoring time; {real['warm_evolution_decoded_share']:.0%} of them had a new part (decoded), "
          f"{real['warm_evolution_units_traced_per_candidate']:.2f} units traced per candidate")
    print(f"  (c) the same candidates again, every unit known: {real['known_units_arch_path']:,.0f}/s by the Arch "
          f"path (decode, id, signature walk, lookups), {real['known_parts_vector_path']:,.0f}/s by the vector "
          f"path (one lookup per part)")
    best = max(real["warm_evolution_scoring"], real["known_parts_vector_path"])
    print(f"  goal: {'met' if real['warm_evolution_scoring'] >= THROUGHPUT_GOAL else 'NOT met'} for fresh "
          f"candidates of evolution; {'met' if best >= THROUGHPUT_GOAL else 'NOT met'} once their parts are known")
    print(f"whole inner loop of evolution (ask: tournaments, crossover, mutation, dedupe; scoring; tell: survival "
          f"by rank and crowding) on the surrogate: {fast:,.0f} candidates/s at population {args.population}, "
          f"{wide:,.0f} at population 256")
    report["throughput"] = {**real, "surrogate_loop_candidates_per_s": fast, "surrogate_loop_population_256": wide}

    print("\npricing fresh candidates on the real predictors, each figure in a fresh process (bench/pricing.py):")
    report["pricing"] = {}
    for target in args.pricing_targets or [args.target]:
        runs = measure_pricing(space.name, target, budget=200 if args.smoke else 2000, population=args.population)
        print("\n".join(pricing_report(target, runs)), flush=True)
        report["pricing"][target] = runs
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
