"""Does the supernet rank architectures like stand-alone training does? Kendall tau, proxies, step time.

1. Train a supernet over a space (default ``convnext``) on the bundled data at a proxy scale.
2. Sample ``--archs`` points; score each one-shot (weights inherited, BatchNorm recalibrated).
3. Train each alone at the same proxy scale with a fixed budget (``--standalone-epochs``), from scratch.
4. Train each arch for ``--short-steps`` (default 60, about half an epoch) twice, with another seed: from
   scratch and from its inherited weights, and score both (BatchNorm recalibrated).
5. Print Kendall tau between one-shot and stand-alone accuracy, the tau of each zero-cost proxy
   (``nas.supernet.zero_cost``), of the parameter count (a baseline any predictor should beat) and of the two
   short trainings; the step-time ratio of a supernet (sandwich) step against a step of the largest subnet
   alone; and the cost of one forward and backward pass of the largest subnet through the supernet against the
   same pass built alone (what weight sharing itself costs, whatever the number of subnets per step).

Goals (issue 5): tau >= 0.5 for the supernet; step-time ratio <= 1.5.

The defaults: the ``convnext`` family space, which varies sizes only (widths, depths, kernels, MLP ratios: the
setting in which OFA, BigNAS and AutoFormer report their rankings), at width x0.125 and 32 px; a 20-epoch
supernet with one random subnet per step besides the two ends; 24 archs, each trained alone for 6 epochs (the
archs lie close together, so fewer epochs let the training seed reorder them).

The figures this bench printed, and what they taught (why 6 epochs, why kinds break weight sharing, what ranks
``metaformer`` instead), are in bench/README.md.

Usage:
    python bench/supernet_rank.py                  # the full run (the longest bench)
    python bench/supernet_rank.py --space metaformer --supernet-epochs 3 --num-random 2 --standalone-epochs 2
    python bench/supernet_rank.py --smoke          # seconds: a tiny space and a data subset (CI)
    python bench/supernet_rank.py --json out.json  # also write every figure as JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.arch import Arch
from nas.data import Dataset, load_dataset, loaders
from nas.supernet import (
    EvalBatches,
    ModelJob,
    ProxyScale,
    Supernet,
    SupernetJob,
    Trainer,
    TrainOptions,
    TrainSettings,
    evaluate,
    kendall_tau,
    short_train_scores,
    zero_cost,
)
from nas.supernet.short_train import DEFAULT_SHORT_STEPS

SMOKE_SPACE = """
schema: 1
name: smoke
input: {resolution: 16, channels: 3}
stem: {kind: overlap, kernel: 3, stride: 2, norm: batchnorm}
stages:
  - dim: {ordinal: [8, 16]}
    downsample: null
    blocks:
      repeat: {range: [1, 2]}
      block:
        mixer: {choice: [{kind: pooling, pool_size: 3}, {kind: convnext, kernel: {ordinal: [3, 5]}}]}
        ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}
        norm: batchnorm
  - dim: {ordinal: [16, 24]}
    downsample: {kind: conv, kernel: 3, stride: 2, norm: batchnorm}
    blocks:
      repeat: {range: [1, 2]}
      block: {mixer: {kind: attention, heads: {choice: [2, 4]}}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 10}
"""


def _subset(dataset: Dataset, train: int, val: int) -> Dataset:
    return dataclasses.replace(dataset, train_images=dataset.train_images[:train],
                               train_labels=dataset.train_labels[:train], val_images=dataset.val_images[:val],
                               val_labels=dataset.val_labels[:val])


def _median_step(history: list[dict[str, Any]], skip: int = 3) -> float:
    seconds = [record["seconds"] for record in history[skip:]] or [record["seconds"] for record in history]
    return float(np.median(seconds))


def _pass_seconds(supernet: Supernet, arch: Arch, built: torch.nn.Module, images: torch.Tensor,
                  targets: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds of one forward and backward pass of ``arch`` through the supernet, and of ``built`` (the
    same subnet built alone): what weight sharing itself costs per subnet, apart from how many subnets a sandwich
    step runs.

    The two are interleaved so that load from other jobs on the machine falls on both alike.
    """
    forwards = {"through": lambda: supernet(images, arch), "alone": lambda: built(images)}
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(repeats + 2):  # the first two passes of each warm the allocator and are not counted
        for name, forward in forwards.items():
            tick = time.perf_counter()
            torch.nn.functional.cross_entropy(forward(), targets).backward()
            seconds[name].append(time.perf_counter() - tick)
    supernet.zero_grad(set_to_none=True)
    built.zero_grad(set_to_none=True)
    return float(np.median(seconds["through"][2:])), float(np.median(seconds["alone"][2:]))


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    dataset = load_dataset(args.data)
    space = args.space
    if args.smoke:
        dataset = _subset(dataset, 256, 128)
    scale = ProxyScale(width=args.proxy_width, resolution=args.resolution, num_classes=dataset.num_classes)
    settings = TrainSettings(epochs=args.supernet_epochs, batch_size=args.batch_size, num_random=args.num_random,
                             ends=args.ends,
                             seed=args.seed, lr=args.lr, warmup_epochs=min(1.0, args.supernet_epochs / 4))

    # 1. the supernet
    tick = time.perf_counter()
    supernet = Supernet.create(space, scale=scale, seed=args.seed, scan=args.scan, progress=_log)
    create_seconds = time.perf_counter() - tick
    _log(f"supernet over {space}: {sum(p.numel() for p in supernet.parameters()) / 1e6:.2f}M shared parameters, "
         f"largest subnet {supernet.num_parameters(supernet.largest) / 1e6:.2f}M, smallest "
         f"{supernet.num_parameters(supernet.smallest) / 1e6:.3f}M ({create_seconds:.0f} s to size)")
    job = SupernetJob(supernet, num_random=args.num_random, seed=args.seed, ends=settings.ends)
    tick = time.perf_counter()
    trained = Trainer(job, dataset, settings, options=TrainOptions(progress=not args.quiet, log=_log)).run()
    supernet_seconds = time.perf_counter() - tick
    supernet_step = _median_step(trained.history)
    supernet.eval()

    # 2. one-shot accuracy of sampled points
    archs = [supernet.sample(np.random.default_rng([args.seed, 10_000, index])) for index in range(args.archs)]
    batches = EvalBatches.from_dataset(dataset, resolution=args.resolution, channels=3,
                                       calibration_batches=args.calibration_batches, batch_size=256, seed=args.seed)
    tick = time.perf_counter()
    one_shot = evaluate(supernet, archs, batches)
    eval_seconds = time.perf_counter() - tick
    _log(f"one-shot evaluation of {len(archs)} archs: {eval_seconds:.1f} s")

    # 3. stand-alone training with a fixed budget
    alone_settings = TrainSettings(epochs=args.standalone_epochs, batch_size=args.batch_size, num_random=0,
                                   distill=False, seed=args.seed, lr=args.lr,
                                   warmup_epochs=min(1.0, args.standalone_epochs / 4))
    standalone, alone_seconds = [], []
    for index, arch in enumerate(archs):
        tick = time.perf_counter()
        result = Trainer(ModelJob(arch, scale, seed=args.seed), dataset, alone_settings,
                         options=TrainOptions(progress=False)).run()
        standalone.append(result.metrics["accuracy"])
        alone_seconds.append(time.perf_counter() - tick)
        _log(f"stand-alone {index + 1}/{len(archs)} {arch.id}: accuracy {standalone[-1]:.4f}, one-shot "
             f"{one_shot[index]:.4f} ({alone_seconds[-1]:.0f} s)")

    # short training (step 4 of the docstring), with another seed: what the supernet's weights add over a random start
    short: dict[str, list[float]] = {"scratch": [], "inherited": []}
    short_seconds = 0.0
    if args.short_steps > 0:
        tick = time.perf_counter()
        for start, inherit_from in (("scratch", None), ("inherited", supernet)):
            short[start] = short_train_scores(archs, dataset, batches, scale=scale, steps=args.short_steps,
                                              batch_size=args.batch_size, lr=args.lr, seed=args.seed + 1,
                                              inherit_from=inherit_from).tolist()
        short_seconds = time.perf_counter() - tick
        _log(f"short training ({args.short_steps} steps) of {len(archs)} archs, from scratch and inherited: "
             f"{short_seconds:.0f} s")

    # 4. the largest subnet alone, for the step-time ratio
    largest = Trainer(ModelJob(supernet.largest, scale, seed=args.seed), dataset, alone_settings,
                      options=TrainOptions(max_steps=args.timing_steps, progress=False, evaluate=False)).run()
    largest_step = _median_step(largest.history)
    train_loader, _ = loaders(dataset, batch_size=args.batch_size, resolution=args.resolution, channels=3,
                              augment=False, seed=args.seed)
    batch = next(train_loader.iter_epoch(0))
    supernet.train()
    largest_pass, alone_pass = _pass_seconds(supernet, supernet.largest, supernet.extract(supernet.largest).train(),
                                             *batch, repeats=args.timing_steps)
    supernet.eval()

    # zero-cost proxies on one training batch at the proxy scale
    proxied = [supernet.proxy(arch) for arch in archs]
    tick = time.perf_counter()
    proxy_scores = zero_cost.score_archs(proxied, batch, seed=args.seed)
    proxy_seconds = time.perf_counter() - tick
    params = [supernet.num_parameters(arch) for arch in archs]

    alone = np.array(standalone)
    taus = {"supernet": kendall_tau(one_shot, alone), "params": kendall_tau(np.array(params), alone)}
    for name, values in proxy_scores.items():
        taus[name] = kendall_tau(np.array(values), alone)
    for start, scores in short.items():
        if scores:
            taus[f"short_{start}"] = kendall_tau(np.array(scores), alone)
    return {
        "space": "smoke" if args.smoke else args.space,
        "scale": scale.to_dict(),
        "supernet": {"settings": settings.to_dict(), "steps": trained.steps, "seconds": round(supernet_seconds, 1),
                     "sizing_seconds": round(create_seconds, 1), "median_step_seconds": round(supernet_step, 4),
                     "images_per_second": round(trained.images_per_second, 1), "metrics": trained.metrics,
                     "shared_parameters": sum(p.numel() for p in supernet.parameters()),
                     "largest_parameters": supernet.num_parameters(supernet.largest),
                     "smallest_parameters": supernet.num_parameters(supernet.smallest)},
        "standalone": {"settings": alone_settings.to_dict(), "seconds": [round(s, 1) for s in alone_seconds]},
        "archs": [{"id": arch.id, "parameters": count, "one_shot": float(shot), "standalone": float(acc),
                   **{name: float(values[index]) for name, values in proxy_scores.items()},
                   **{f"short_{start}": float(scores[index]) for start, scores in short.items() if scores}}
                  for index, (arch, count, shot, acc) in enumerate(zip(archs, params, one_shot, alone, strict=True))],
        "kendall_tau": taus,
        "step_time": {"supernet_step_seconds": round(supernet_step, 4),
                      "largest_alone_step_seconds": round(largest_step, 4),
                      "ratio": round(supernet_step / largest_step, 3),
                      "subnets_per_supernet_step": 2 + args.num_random,
                      "largest_pass_through_supernet_seconds": round(largest_pass, 4),
                      "largest_pass_alone_seconds": round(alone_pass, 4),
                      "sharing_overhead": round(largest_pass / alone_pass, 3)},
        "short_steps": args.short_steps,
        "seconds": {"one_shot_eval": round(eval_seconds, 1), "zero_cost": round(proxy_seconds, 2),
                    "short_training": round(short_seconds, 1),
                    "total": round(time.perf_counter() - began, 1)},
    }


def report(figures: dict[str, Any]) -> str:
    lines = [f"space {figures['space']}, proxy width {figures['scale']['width']}, resolution "
             f"{figures['scale']['resolution']}"]
    sup = figures["supernet"]
    lines.append(f"supernet: {sup['steps']} steps in {sup['seconds']:.0f} s ({sup['images_per_second']:.0f} images/s; "
                 f"{sup['shared_parameters'] / 1e6:.2f}M shared parameters); "
                 + ", ".join(f"{key} {value:.4f}" for key, value in sup["metrics"].items()))
    short = [key for key in ("short_scratch", "short_inherited") if key in figures["kendall_tau"]]
    lines.append(f"{'arch':<14}{'params':>10}{'one-shot':>10}{'alone':>8}{'naswot':>10}{'synflow':>10}{'grad_norm':>11}"
                 + "".join(f"{key:>17}" for key in short))
    for row in figures["archs"]:
        lines.append(f"{row['id']:<14}{row['parameters']:>10}{row['one_shot']:>10.4f}{row['standalone']:>8.4f}"
                     f"{row['naswot']:>10.1f}{row['synflow']:>10.2f}{row['grad_norm']:>11.3f}"
                     + "".join(f"{row[key]:>17.4f}" for key in short))
    taus = figures["kendall_tau"]
    lines.append("Kendall tau vs stand-alone accuracy: "
                 + ", ".join(f"{key} {value:+.3f}" for key, value in taus.items()))
    step = figures["step_time"]
    lines.append(f"step time: supernet {step['supernet_step_seconds']:.3f} s ({step['subnets_per_supernet_step']} "
                 f"subnets), largest alone {step['largest_alone_step_seconds']:.3f} s, ratio {step['ratio']:.2f}; "
                 f"one pass of the largest through the supernet / alone: {step['sharing_overhead']:.2f}")
    lines.append(f"total {figures['seconds']['total']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="convnext")
    parser.add_argument("--data", default=None, help="dataset path (default: the bundled Animal-MNIST)")
    parser.add_argument("--proxy-width", type=float, default=0.125)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--supernet-epochs", type=int, default=20)
    parser.add_argument("--standalone-epochs", type=int, default=6)
    parser.add_argument("--archs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num-random", type=int, default=1)
    parser.add_argument("--ends", choices=("varied", "fixed"), default="fixed",
                        help="sandwich ends: kinds drawn each step (varied) or the same two points (fixed)")
    parser.add_argument("--scan", type=int, default=400)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--short-steps", type=int, default=DEFAULT_SHORT_STEPS,
                        help="also score each arch after this many training steps (at most one epoch) from scratch and "
                             "from its inherited weights (0: skip)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: these small models were 5-10x slower with 2 "
                             "threads on a busy 2-core machine, from spin-waiting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="seconds: tiny space, data subset, few archs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.short_steps < 0:
        parser.error(f"--short-steps must be >= 0, got {args.short_steps}")
    if args.smoke:
        args.proxy_width, args.resolution, args.supernet_epochs, args.standalone_epochs = 1.0, 16, 1, 1
        args.archs, args.scan, args.timing_steps, args.batch_size, args.short_steps = 4, 16, 4, 32, 2
        args.calibration_batches, args.threads = 2, 1
        with tempfile.TemporaryDirectory(prefix="nas-bench-") as folder:
            args.space = str(Path(folder) / "smoke.yaml")
            Path(args.space).write_text(SMOKE_SPACE)
            figures = run(args)
    else:
        figures = run(args)
    print(report(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
