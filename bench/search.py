"""Search strategies compared by hypervolume, and the scoring throughput of evolution's inner loop.

Objectives (predictor-based, no training): the proxy score ``log10 MACs`` (maximised; the stand-in for
accuracy of ``nas.search.objectives``) and the predicted latency on the target (minimised). Thousands of
searches of 1000 evaluations cannot each trace every new Arch (``nas.cost.profile`` costs ~10-100 ms per new
Arch), so the strategies are compared on a *surrogate* of those two predictors: a small MLP per objective on
``Space.features`` of the point vector, fitted here on ``--fit`` points scored by the real predictors and
checked on ``--holdout`` others (R^2 and Spearman rho are printed). The surrogate is deterministic and the
same for every strategy, so the comparison is fair; the real-predictor throughput is printed separately.

Printed:

* the surrogates' held-out fit;
* hypervolume after 300 and 1000 evaluations for evolution, optuna-nsga2, optuna-tpe, nni-evolution (when
  NNI is installed) and random, ``--seeds`` seeds each, as ratios to evolution's mean (goal: evolution >= every
  other strategy at equal budget), plus random with 10x the budget;
* throughput: evolution's inner loop (ask, surrogate scoring, tell: variation, dedupe, ranking) in
  candidates/s (goal >= 10k/s), and the same loop with the real predictors (decode + profile + predict).

The hypervolume reference point is common to all runs: the nadir of every feasible point any run found,
pushed out by 10 % of the range (``nas.search.pareto.reference_point``), in loss space
``(-proxy_score, latency_ms)``.

Usage::

    python bench/search.py                 # the full comparison (tens of minutes on 2 cores)
    python bench/search.py --smoke         # small sizes, for CI (about a minute)
    python bench/search.py --strategies evolution random --seeds 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from nas.search import MemoryStore, Scores, create_strategy, hypervolume, make_scorer, optimize, reference_point
from nas.search.strategies.nni_evolution import nni_available
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


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def _r2(truth: np.ndarray, guess: np.ndarray) -> float:
    return float(1.0 - np.sum((truth - guess) ** 2) / np.sum((truth - truth.mean()) ** 2))


def fit_surrogates(space, target: str, fit: int, holdout: int, seed: int) -> tuple[SurrogateScorer, dict]:
    scorer = make_scorer(target=target, accuracy="proxy", space=space.name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    vectors = space.sample_vectors(rng, fit + holdout)
    start = time.perf_counter()
    scores = scorer.evaluate([space.decode(vector) for vector in vectors])
    scoring_s = time.perf_counter() - start
    features = space.features(vectors)
    proxy_true, latency_true = scores.values[:, 0], scores.values[:, 1]
    train = slice(0, fit)
    proxy = MLP(features[train], proxy_true[train], seed=seed)
    log_latency = MLP(features[train], np.log(latency_true[train]), seed=seed + 1)
    test = slice(fit, fit + holdout)
    guess_proxy, guess_latency = proxy(features[test]), np.exp(log_latency(features[test]))
    quality = {
        "fit_points": fit, "holdout_points": holdout, "exact_scoring_s": round(scoring_s, 1),
        "exact_candidates_per_s": round((fit + holdout) / scoring_s, 1),
        "proxy_r2": round(_r2(proxy_true[test], guess_proxy), 4),
        "proxy_spearman": round(_spearman(proxy_true[test], guess_proxy), 4),
        "latency_r2": round(_r2(latency_true[test], guess_latency), 4),
        "latency_spearman": round(_spearman(latency_true[test], guess_latency), 4),
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


def throughput(space, scorer, *, budget: int, population: int) -> float:
    """Candidates/s of a whole evolution run (ask, score, tell) on ``scorer``."""
    result = run_one(space, scorer, "evolution", 0, budget, population)
    return budget / result.seconds


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
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.budgets, args.fit, args.holdout = 2, (60, 120), 200, 100
    small, large = args.budgets
    space = load_space(args.space)
    print(f"space {space.name} ({space.size_text()} points, {space.num_slots} decisions), target {args.target}, "
          f"{args.seeds} seeds, budgets {small} and {large}, population {args.population}")

    scorer, quality = fit_surrogates(space, args.target, args.fit, args.holdout, seed=0)
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

    fast = throughput(space, scorer, budget=max(large, 2000), population=args.population)
    wide = throughput(space, scorer, budget=max(large, 4000), population=256)
    real_budget = 64 if args.smoke else 300
    exact = make_scorer(target=args.target, accuracy="proxy", space=space.name)
    real = throughput(space, exact, budget=real_budget, population=args.population)
    best = max(fast, wide)
    print(f"\nthroughput of evolution's inner loop (ask: tournaments, crossover, mutation, dedupe; scoring; tell: "
          f"survival by rank and crowding): {fast:,.0f} candidates/s at population {args.population}, "
          f"{wide:,.0f} at population 256, with the surrogate predictors (goal >= {THROUGHPUT_GOAL:,}: "
          f"{'met' if best >= THROUGHPUT_GOAL else 'NOT met'}); {real:,.1f} candidates/s with the real predictors "
          f"(decode + nas.cost.profile + nas.latency.predict on {real_budget} new Archs, unit caches warm from "
          f"the fit)")
    report["throughput"] = {"surrogate_candidates_per_s": fast, "surrogate_population_256": wide,
                            "real_candidates_per_s": real}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
