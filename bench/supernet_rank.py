"""Does the supernet rank architectures like stand-alone training does? Kendall tau, proxies, step time.

1. Train a supernet over a space (default ``metaformer``) on the bundled data at a proxy scale.
2. Sample ``--archs`` points; score each one-shot (weights inherited, BatchNorm recalibrated).
3. Train each alone at the same proxy scale with a fixed budget (``--standalone-epochs``), from scratch.
4. Train each arch for ``--short-steps`` (default 60, about half an epoch) twice, with another seed: from
   scratch and from its inherited weights, and score both (BatchNorm recalibrated).
5. Print Kendall tau between one-shot and stand-alone accuracy, the tau of each zero-cost proxy
   (``nas.supernet.zero_cost``), of the parameter count (a baseline any predictor should beat) and of the two
   short trainings, and the step-time ratio of a supernet (sandwich) step against a step of the largest
   subnet alone.

Goals (issue 5): tau >= 0.5 for the supernet; step-time ratio <= 1.5.

The defaults (metaformer at width 0.125, 32 px, 3 supernet epochs, 12 archs, 2 stand-alone epochs each) keep
the supernet within 20 minutes on 2 cores; at the CLI's default width 0.25 a sandwich step of the
metaformer supernet is about 4x slower. One run each on a shared 2-core machine (one intra-op thread, nice 19
beside two other jobs):

* metaformer: supernet 363 steps in 15 min (largest subnet 0.846, smallest 0.577 top-1); tau supernet +0.39,
  params -0.30, naswot +0.27, synflow -0.03, grad_norm -0.24; step-time ratio 1.43; 42 min in all.
* convnext (``--space convnext``): supernet 6 min (largest 0.585, smallest 0.407); tau supernet +0.26,
  params +0.17, naswot +0.30, synflow +0.14, grad_norm +0.05; step-time ratio 1.76; 13 min in all.

How far one run's tau can be trusted (metaformer, the bench's recipe; the bench's 12 archs and the 12 drawn next,
stand-alone accuracies of one run reused): supernet seed 0 gives tau +0.40 on the 24 (+0.455 on the first 12),
seed 1 +0.35 (+0.21); 2 epochs +0.17 (+0.06) and, seed 1, +0.23 (+0.39); 4 epochs +0.15 (-0.24), 6 epochs +0.23
(+0.03), although the sandwich ends improve (largest 0.84 -> 0.88 -> 0.91): no trend in length, and seed 0's 3-epoch
+0.40 is the top of the spread. Other sampling rules ranked worse (24 archs): no smallest end (largest + 3 random)
+0.35, varied ends +0.21, uniform single-path (4 random, no ends, no distillation) +0.08. The one-shot scores of
two supernets agree with each other only at tau 0.22-0.50, while re-evaluating one supernet (another calibration
draw, or 32 calibration batches instead of 8) agrees at 0.96-0.98: the spread comes from training, not from the
evaluation, and a 12-arch tau moves by +-0.25 between seeds. An exponential moving average of the weights
(~40-step horizon) changed tau by -0.02 to -0.03.
The stand-alone side is not what limits tau: the bench's 12 archs trained alone with a second seed agree with the
first at tau +0.79 (mean |difference| 0.025 top-1); trained for 5 epochs instead of 2 (0.81-0.91 top-1) they agree
with the 2-epoch ranking at +0.76, and the supernet's tau is +0.455 against either budget. Ranking the 24 archs by the
mean one-shot rank of six supernets (seeds, epochs, sharing variants) still gives only +0.38 against stand-alone: the
supernet ranks them differently in a systematic way (deeper archs, and archs with many EfficientFormer-attention
blocks, score lower one-shot than alone), not only noisily.

Where the ranking is lost (2026-11-22; the 24 archs above with fresh stand-alone accuracies; one run each). On
metaformer the bench's supernet (seeds 0, 1) ranked at +0.26 / +0.29, and its random subnets scored near chance
one-shot: mean 0.21 top-1 against 0.73 alone, while the fixed ends reach ~0.8 / ~0.5. Splitting that supernet by
stage-3 block family into four sub-supernets (few-shot NAS, arXiv:2006.06863; half an epoch of fine-tuning each)
gave +0.29 against +0.27 for the same fine-tuning unsplit. Two subspaces of metaformer, each with the kinds of one
bench arch pinned and a supernet trained on that subspace only (its ends the subspace's extremes), tell the two
causes apart:

* sizes only (the 17 widths, depths, ratios and kernels free; the setting of OFA and BigNAS): two stand-alone
  seeds agree at +0.75 (mean |difference| 0.010). At 3 epochs one-shot accuracy is sound (mean 0.67 against 0.79
  alone) but the ranking is not: seeds 0 / 1 give +0.26..+0.33, ordering by depth where training alone orders by
  width (tau of the summed stage widths +0.36, of depth +0.21). At 9 epochs (17-18 min on one core) seeds 0 / 1
  give +0.49..+0.55 against either stand-alone seed (one-shot mean 0.81). Without distillation, 3 epochs: +0.36.
* sizes and mixer kinds free (24 decisions; norms, layer scales, stem, downsamplers and block families pinned):
  at 3 epochs one-shot accuracy falls to a mean of 0.42 and tau is +0.31.

So over sizes the supernet ranks at about the issue's goal once it trains long enough, as the anchors report; mixing
kinds costs one-shot accuracy, and on the whole metaformer space longer training does not help (4 and 6 epochs
above). The convnext family space is sizes only, and there this bench meets the goal within the 20 minutes:
``--space convnext --supernet-epochs 20 --archs 24`` trained the supernet in 16 min (largest 0.92, smallest 0.85
top-1) and ranked the 24 archs at +0.56 (+0.55 on the first 16); 9 epochs (7 min) gave +0.48 on 16 (params +0.14,
naswot +0.25). Step-time ratio 1.56 (beside another job).

Short training beats the supernet here (metaformer, the 24 archs above, seed-0 supernet; one run each): 60 steps from
a random start rank them at tau +0.565 (this bench's recipe: lr 2e-3, no warm-up, seed 1; +0.576 on the first 12),
+0.722 (the same, seed 2; +0.748) and +0.667 (lr 1e-3 constant, other batches), against the supernet's +0.40. Starting
the same 60 steps from the inherited weights gives +0.507 and +0.645: no better than a random start. 10 / 30 steps
from the inherited weights give +0.45 / +0.49. So at this budget the shared weights hold less ranking information than
half an epoch of training, which costs about 20 s per arch on one core against a few seconds one-shot. A sanity check
rules out the machinery: the supernet trained on one arch only (2 epochs) scores it one-shot at 0.68 and 0.76 (0.75
and 0.79 alone); the loss comes from sharing. Neither keying block norms and layer scales by norm kind and initial
value (seeds 0 and 1: +0.40 and +0.27 on the 19 and 21 of the 24 they can run, where the default gives +0.35 and
+0.36) nor tying the mixer and FFN tensors of a stage's positions (all: +0.14; beyond the third: +0.14) helped, and a
linear probe refitted on the inherited features (mean 0.51 top-1) ranked at +0.26.

The search's own signals on the same 24 archs (one run each): the default supernet it trains once per space
(``nas.runs.supernets``: 1 epoch, one random subnet per step) ranks them at +0.05 to +0.15, whether evaluated
with the search's settings (2 calibration batches, 512 validation images) or the bench's (8 x 256, the whole
split); on the seed-0 3-epoch supernet the search's settings cost 0.03-0.09 of tau. NASWOT on one 64-image
batch at the proxy scale gives +0.22 (two batch seeds; now the ``zero-cost`` source, 0.2 s per arch), grad_norm
-0.05 to -0.08, the parameter count -0.20 and log10 MACs (the ``proxy`` source) -0.03. The ``zero-cost`` source used
to score full-scale archs (224 px, 16 images): NASWOT +0.17 at 10-20 s per arch, synflow (its default then) -0.17,
overflowing float64 on 2 of the 24. Short training is the ``short-train`` accuracy source of ``nas search``.

Usage:
    python bench/supernet_rank.py                  # the full run (about 50 minutes on 2 cores)
    python bench/supernet_rank.py --space convnext --supernet-epochs 20 --archs 24   # a sizes-only space (~25 min)
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

from nas.data import Dataset, load_dataset, loaders
from nas.supernet import (
    EvalBatches,
    ModelJob,
    ProxyScale,
    Supernet,
    SupernetJob,
    Trainer,
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
    trained = Trainer(job, dataset, settings, progress=not args.quiet, log=_log, evaluate=True).run()
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
        result = Trainer(ModelJob(arch, scale, seed=args.seed), dataset, alone_settings, progress=False,
                         evaluate=True).run()
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
                      max_steps=args.timing_steps, progress=False, evaluate=False).run()
    largest_step = _median_step(largest.history)

    # zero-cost proxies on one training batch at the proxy scale
    train_loader, _ = loaders(dataset, batch_size=args.batch_size, resolution=args.resolution, channels=3,
                              augment=False, seed=args.seed)
    batch = next(train_loader.iter_epoch(0))
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
                      "subnets_per_supernet_step": 2 + args.num_random},
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
                 f"subnets), largest alone {step['largest_alone_step_seconds']:.3f} s, ratio {step['ratio']:.2f}")
    lines.append(f"total {figures['seconds']['total']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--data", default=None, help="dataset path (default: the bundled Animal-MNIST)")
    parser.add_argument("--proxy-width", type=float, default=0.125)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--supernet-epochs", type=int, default=3)
    parser.add_argument("--standalone-epochs", type=int, default=2)
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num-random", type=int, default=2)
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
