"""Which decisions share weights badly? A fresh supernet trained briefly with some decision groups drawn at random.

Why: the rank bench (``supernet_rank.py``) takes 40 minutes and mixes every cause into one Kendall tau. Here each
configuration draws only some groups of decisions at random for every subnet of every step and holds the rest at
one base point (:meth:`nas.space.Space.merge_vectors`); a group whose kinds cannot share the layers after them
keeps the loss at chance (``ln(classes)``) although each subnet alone learns in a few dozen steps. A remedy for
the supernet (shared kernels across kinds, split supernets, ...) can be tried here in minutes.

Groups, by decision path: ``sizes`` (every ordered decision: widths, depths, ratios, kernels), ``norms`` (norm
kinds, layer scales, BN flags), ``branches`` (block family, token mixer and FFN kinds: inside residual
branches), ``trunk`` (stem and downsampler kinds: on the main path), or ``stem`` / ``downsample`` alone.

Measured (metaformer, width 0.125, 32 px, batch 64, 4 subnets per step, 100 steps, one thread, the defaults;
13 minutes on the 2-core machine beside the test suite; mean training loss over the last 20 steps, chance 2.30):
sizes 1.59; sizes + norms 1.77; + branches 1.84; + trunk instead of branches 2.31; everything 2.31; and in a
second run sizes + norms + stem 1.84, sizes + norms + downsample 2.31 (2.31 again after patch merging's weights
were cut per neighbour, which alone took "conv k3 BN or patch merging" from 2.32 to 1.82). With ``--seed 1``
(another base point), after that fix: sizes + norms + downsample 1.73, everything 2.31. Single runs differ by up
to 0.6 between base points: compare configurations over several seeds.

Everything drawn at random is a plateau, not a failure: run longer (``--steps 200``), the supernet waits at
chance, then learns: with ``--seed 1`` it leaves chance at step 166 (last 20 steps 2.10), with ``--seed 0``
around step 115 (about 1.9). Kinds whose weights start unrelated (a representation of their own for the layers
after them) are what it waits on; the column "leaves chance" measures it. Tried and reverted (commits c0de99d,
9ad0e9e): patch merging reading the conv downsampler's kernel and the patch stem the overlapping stem's cut
the wait to steps 52 / 66 (seeds 1 / 0; last 1.76 / 1.84) and raised the random subnets' one-shot accuracy,
but the rank bench's Kendall tau on 24 archs fell from +0.40 to +0.30: more sharing, less told apart.

Usage:
    python bench/supernet_sharing.py                       # the default configurations (about 5 minutes)
    python bench/supernet_sharing.py --groups sizes,trunk   # one configuration
    python bench/supernet_sharing.py --space convnext --steps 200
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import load_dataset, loaders
from nas.errors import ConfigError
from nas.supernet import ProxyScale, Supernet

GROUPS = {
    "norms": r"\.norm$|\.layer_scale$|\.batchnorm$",
    "branches": r"\.blocks$|\.mixer$|\.ffn$",
    "trunk": r"^stem$|\.downsample$",
    "stem": r"^stem$",
    "downsample": r"\.downsample$",
}
CONFIGURATIONS = ("sizes", "sizes,norms", "sizes,norms,branches", "sizes,norms,trunk", "sizes,norms,branches,trunk")


def _take(supernet: Supernet, groups: list[str]) -> np.ndarray:
    """Which decisions a configuration draws at random."""
    decisions = supernet.space.decisions
    take = np.zeros(len(decisions), dtype=bool)
    for group in groups:
        if group == "sizes":
            take |= np.array([decision.ordered for decision in decisions])
        elif group in GROUPS:
            take |= np.array([bool(re.search(GROUPS[group], decision.path)) for decision in decisions])
        else:
            raise SystemExit(f"unknown group {group!r}; known: sizes, {', '.join(GROUPS)}")
    return take


def _subnets(supernet: Supernet, base: np.ndarray, take: np.ndarray, rng: np.random.Generator, count: int) -> list:
    """``count`` runnable subnets drawing the ``take`` decisions at random."""
    space = supernet.space
    out = []
    while len(out) < count:
        try:
            merged = space.merge_vectors(base, space.sample_vectors(rng, count), take, rng)
        except ConfigError:  # a donor that no merge with the base makes valid (a map too small for its window)
            continue
        out.extend(arch for arch in (space.decode(vector) for vector in merged) if not supernet.check(arch))
    return out[:count]


def leaves_chance(losses: list[float], chance: float, window: int) -> int | None:
    """The first step whose trailing ``window``-step mean loss is 5% under chance (None: never in the run).

    Why: a configuration does not so much fail to learn as wait at chance before it starts; the end of that
    plateau separates configurations better than the last loss of a short run does.
    """
    for end in range(window, len(losses) + 1):
        if np.mean(losses[end - window:end]) < 0.95 * chance:
            return end - 1
    return None


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    scale = ProxyScale(width=args.proxy_width, resolution=args.resolution, num_classes=dataset.num_classes)
    supernet = Supernet.create(args.space, scale=scale, seed=args.seed, scan=args.scan)
    initial = copy.deepcopy(supernet.state_dict())
    base = supernet.space.sample_vectors(np.random.default_rng([args.seed, 1]), 1)[0]
    train, _ = loaders(dataset, batch_size=args.batch_size, resolution=args.resolution, channels=3, augment=False,
                       seed=args.seed)
    chance = math.log(dataset.num_classes)
    rows = []
    for configuration in args.groups:
        supernet.load_state_dict(initial)
        supernet.train()
        take = _take(supernet, configuration.split(","))
        optimizer = torch.optim.AdamW(supernet.parameters(), lr=args.lr, weight_decay=0.05)
        rng = np.random.default_rng([args.seed, 2])
        losses: list[float] = []
        overflows = 0
        began = time.perf_counter()
        batches = (batch for epoch in range(10**6) for batch in train.iter_epoch(epoch))
        for _ in range(args.steps):
            images, labels = next(batches)
            optimizer.zero_grad(set_to_none=True)
            step = []
            for arch in _subnets(supernet, base, take, rng, args.subnets):
                loss = F.cross_entropy(supernet(images, arch), labels)
                if not torch.isfinite(loss):  # as the trainer does: an overflowing subnet is left out
                    overflows += 1
                    continue
                (loss / args.subnets).backward()
                step.append(float(loss.detach()))
            grads = [p for p in supernet.parameters() if p.grad is not None]
            if grads and math.isfinite(float(torch.nn.utils.clip_grad_norm_(grads, 5.0))):
                optimizer.step()
            if step:
                losses.append(float(np.mean(step)))
        window = max(1, min(20, args.steps // 5))
        rows.append({"groups": configuration, "first": float(np.mean(losses[:window])),
                     "last": float(np.mean(losses[-window:])), "leaves_chance": leaves_chance(losses, chance, 10),
                     "overflows": overflows, "chance": chance, "seconds": time.perf_counter() - began})
        print(f"{configuration:<30} loss {rows[-1]['first']:.3f} -> {rows[-1]['last']:.3f}, leaves chance at step "
              f"{rows[-1]['leaves_chance']}, {overflows} subnets overflowed ({rows[-1]['seconds']:.0f} s)",
              file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'drawn at random':<30}{'first':>8}{'last':>8}{'leaves chance':>15}{'overflows':>11}  (mean training "
             f"loss over the first and last steps, chance {rows[0]['chance']:.2f}; the step whose 10-step mean is 5% "
             "under chance, '-' if none)"]
    lines.extend(f"{row['groups']:<30}{row['first']:>8.3f}{row['last']:>8.3f}"
                 f"{'-' if row['leaves_chance'] is None else row['leaves_chance']:>15}{row['overflows']:>11}"
                 for row in rows)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--data", default=None, help="dataset path (default: the bundled Animal-MNIST)")
    parser.add_argument("--groups", type=lambda text: text.split(";"), default=list(CONFIGURATIONS),
                        help="configurations separated by ';', each a comma list of groups (sizes, "
                             f"{', '.join(GROUPS)})")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--subnets", type=int, default=4, help="subnets per step")
    parser.add_argument("--proxy-width", type=float, default=0.125)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--scan", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = run(args)
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
