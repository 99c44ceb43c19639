"""Can the main job's front be believed? Its reported accuracy against stand-alone training, band by band.

1. Runs the main job (``nas search --space metaformer --target iphone12``, plus ``--seed`` and any extra
   search options) and times it.
2. Picks at least ``--bands`` x ``--per-band`` of the candidates it evaluated, in bands of similar predicted
   latency (every latency in a band within +-15% of the band's middle), spread over each band's reported
   accuracies, plus every front point.
3. Trains each of them alone for ``--epochs`` at the run's proxy scale, and each zoo model that is a point of
   the space (the zoo models are the same for every run: their trainings are kept and reused).
4. Prints:
   - the within-band Kendall tau between the accuracy the run reports and stand-alone accuracy, per band and
     averaged (within a band, size cannot score, and latency alone scores about 0 by construction);
   - the tau over the front, next to the tau of latency alone on the same points;
   - for each zoo model, the best stand-alone accuracy among front points no slower on the target, minus the
     zoo model's own: how many zoo models the search beat, and by how much.

Every stand-alone training is kept under ``--cache`` by Arch id, epochs and training seed, so a killed bench
resumes, a second seed reuses the zoo and any candidate both runs evaluated, and nothing is trained twice.

Usage:
    python bench/main_job.py --seed 0
    python bench/main_job.py --seed 1 --json runs/bench-main-job/seed1.json
    python bench/main_job.py --seed 0 --run runs/<existing run>   # skip the search, measure an existing run
    python bench/main_job.py --seed 0 --search-option=--budget=60   # extra options for the main job
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import nas
from nas.data import load_dataset
from nas.runs import Run
from nas.runs.finalists import proxy_scale_of
from nas.space import load_space
from nas.supernet import TrainOptions, TrainSettings, kendall_tau, train_model
from nas.supernet.trainer import RESULT

SPACE, TARGET = "metaformer", "iphone12"
BAND_WIDTH = 0.15  # every latency in a band within +-15% of the band's middle (the definition)


@dataclass(frozen=True)
class Band:
    """Candidates of similar predicted latency: ``rows`` index the run's history."""

    low_ms: float
    high_ms: float
    rows: tuple[int, ...]


def run_main_job(seed: int, out: Path, extra: list[str]) -> tuple[Run, float]:
    """The main job as a user types it, with ``--seed``; its run and wall time in seconds."""
    command = [sys.executable, "-m", "nas.cli", "search", "--space", SPACE, "--target", TARGET, "--seed", str(seed),
               "--out", str(out), "--json", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    return Run.open(json.loads(done.stdout)["path"]), wall


def latency_bands(latency: np.ndarray, accuracy: np.ndarray, *, count: int, per_band: int) -> list[Band]:
    """Up to ``count`` disjoint bands of ``per_band`` candidates each, spread along the latency axis.

    A band is centred on a candidate's latency and holds the candidates within +-15% of it; the bands are
    taken from the most populated windows, disjoint, and within each the candidates are spread evenly over the
    reported accuracies (so a band ranks a spread of scores, not one cluster).
    """
    order = np.argsort(latency)
    sorted_latency = latency[order]
    windows = []
    for middle in sorted_latency:
        low, high = middle / (1 + BAND_WIDTH), middle * (1 + BAND_WIDTH)
        members = order[(sorted_latency >= low) & (sorted_latency <= high)]
        if len(members) >= per_band:
            windows.append((len(members), low, high, members))
    windows.sort(key=lambda window: -window[0])
    taken: list[Band] = []
    for _, low, high, members in windows:
        if len(taken) == count:
            break
        if any(low <= band.high_ms and band.low_ms <= high for band in taken):
            continue
        by_accuracy = members[np.argsort(accuracy[members])]
        picks = by_accuracy[np.round(np.linspace(0, len(members) - 1, per_band)).astype(int)]
        taken.append(Band(float(low), float(high), tuple(int(row) for row in picks)))
    return sorted(taken, key=lambda band: band.low_ms)


def standalone_accuracy(arch: nas.Arch, *, cache: Path, epochs: int, width: float, resolution: int) -> float:
    """Top-1 after ``epochs`` of training alone at the proxy scale (seed 0), trained once per Arch and kept."""
    out = cache / f"{arch.id}-e{epochs}-w{width}-r{resolution}"
    if not (out / RESULT).is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        train_model(arch, load_dataset(None), TrainSettings(epochs=epochs, seed=0), width=width,
                    resolution=resolution, out=out, resume=(out / "checkpoint.pt").is_file(),
                    options=TrainOptions(progress=False))
    return float(json.loads((out / RESULT).read_text())["metrics"]["accuracy"])


def zoo_points(space_name: str) -> dict[str, nas.Arch]:
    """The zoo models that are points of the space, by name."""
    space = load_space(space_name)
    return {name: arch for name in nas.zoo.list_zoo() if space.contains(arch := nas.zoo.get(name))[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the main job's --seed")
    parser.add_argument("--run", type=Path, help="measure this existing run instead of running the main job")
    parser.add_argument("--search-option", action="append", default=[], dest="search_options",
                        help="an extra option for the main job, e.g. --search-option=--budget=60 (repeatable)")
    parser.add_argument("--epochs", type=int, default=6, help="stand-alone training epochs (default 6)")
    parser.add_argument("--bands", type=int, default=4, help="latency bands (default 4)")
    parser.add_argument("--per-band", type=int, default=6, help="candidates per band (default 6)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-main-job"), help="runs and the training cache")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the trainings")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.run is not None:
        run, wall = Run.open(args.run), float("nan")
    else:
        run, wall = run_main_job(args.seed, args.out / "runs", args.search_options)
    print(f"main job: {run.path}, {run.count()} candidates, wall time {wall:.0f} s", flush=True)
    accuracy_column, latency_column = (objective.column for objective in run.settings.objectives)
    history = run.history()
    history = history[np.isfinite(history[accuracy_column]) & history["feasible"]].drop_duplicates("arch_id")
    history = history.reset_index(drop=True)
    reported = history[accuracy_column].to_numpy(dtype=np.float64)
    latency = history[latency_column].to_numpy(dtype=np.float64)
    bands = latency_bands(latency, reported, count=args.bands, per_band=args.per_band)
    front = run.pareto()
    width, resolution = proxy_scale_of(run)
    cache = args.out / "standalone"

    def trained(arch_id: str) -> float:
        return standalone_accuracy(run.arch(arch_id), cache=cache, epochs=args.epochs, width=width,
                                   resolution=resolution)

    chosen = sorted({history["arch_id"][row] for band in bands for row in band.rows} | set(front["arch_id"]))
    print(f"training {len(chosen)} candidates alone ({len(bands)} bands, {len(front)} front points), "
          f"{args.epochs} epochs at width x{width}, {resolution} px", flush=True)
    standalone = {}
    for number, arch_id in enumerate(chosen, start=1):
        standalone[arch_id] = trained(arch_id)
        print(f"  {number}/{len(chosen)} {arch_id}: {standalone[arch_id]:.3f}", flush=True)

    figures: dict[str, object] = {"run": str(run.path), "seed": args.seed, "wall_s": wall,
                                  "accuracy_column": accuracy_column, "bands": []}
    print(f"\nwithin-band Kendall tau, {accuracy_column} (reported) vs stand-alone, {args.epochs} epochs:")
    taus = []
    for band in bands:
        ids = [history["arch_id"][row] for row in band.rows]
        tau = kendall_tau(reported[list(band.rows)], [standalone[arch_id] for arch_id in ids])
        latency_tau = kendall_tau(-latency[list(band.rows)], [standalone[arch_id] for arch_id in ids])
        taus.append(tau)
        figures["bands"].append({"low_ms": band.low_ms, "high_ms": band.high_ms, "arch_ids": ids, "tau": tau,
                                 "latency_tau": latency_tau})
        print(f"  {band.low_ms:7.3f}-{band.high_ms:7.3f} ms, {len(ids)} archs: tau {tau:+.2f} "
              f"(latency alone {latency_tau:+.2f})")
    mean_tau = float(np.nanmean(taus)) if taus else float("nan")
    figures["within_band_tau"] = mean_tau
    print(f"  mean over {len(taus)} bands: {mean_tau:+.2f}")

    front_standalone = [standalone[arch_id] for arch_id in front["arch_id"]]
    front_tau = kendall_tau(front[accuracy_column].to_numpy(), front_standalone)
    front_latency_tau = kendall_tau(front[latency_column].to_numpy(), front_standalone)
    figures.update(front_tau=front_tau, front_latency_tau=front_latency_tau)
    print(f"\nfront ({len(front)} points): tau {front_tau:+.2f}, latency alone {front_latency_tau:+.2f}")

    print(f"\nzoo models of {SPACE}, trained the same way, against the best front point no slower on {TARGET}:")
    zoo_rows, beaten, within = [], 0, 0
    front_latency = front[latency_column].to_numpy(dtype=np.float64)
    for name, arch in zoo_points(SPACE).items():
        own = standalone_accuracy(arch, cache=cache, epochs=args.epochs, width=width, resolution=resolution)
        zoo_latency = nas.latency.predict(arch, target=TARGET).latency_ms
        faster = [accuracy for accuracy, ms in zip(front_standalone, front_latency, strict=True)
                  if ms <= zoo_latency]
        best = max(faster) if faster else None
        in_range = front_latency.min() <= zoo_latency
        within += in_range
        beaten += best is not None and best >= own
        margin = None if best is None else best - own
        zoo_rows.append({"model": name, "latency_ms": zoo_latency, "standalone": own, "best_front": best,
                         "margin": margin})
        shown = "no front point as fast" if margin is None else f"{margin * 100:+.1f} points"
        print(f"  {name:20s} {zoo_latency:8.3f} ms  {own:.3f}  {shown}")
    figures.update(zoo=zoo_rows, zoo_in_range=within, zoo_beaten=beaten)
    print(f"beaten at equal or lower latency: {beaten} of {within} zoo models within the front's latency range "
          f"({len(zoo_rows)} in the space)")
    print(f"wall time of the main job: {wall:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
