"""Cost-tracing time per zoo model: cold (trace cache cleared) and warm (second call).

Goals (the issue for ``nas/cost.py``): under 1 s cold and under 50 ms warm per
model. The first trace in a process also pays torch's one-time start-up (its
meta kernels import ``torch._dynamo`` on first use); that is printed on its own
line and kept out of the per-model figures.

Usage::

    python bench/cost.py              # every zoo model
    python bench/cost.py --smoke      # two models, for CI
    python bench/cost.py --strict     # exit 1 if a goal is missed
    python bench/cost.py swin_tiny deit_small
"""

from __future__ import annotations

import argparse
import sys
import time

import nas
from nas import cost

COLD_GOAL_S = 1.0
WARM_GOAL_S = 0.05
SMOKE_MODELS = 2


def _timed(arch: nas.Arch) -> tuple[float, cost.CostReport]:
    start = time.perf_counter()
    report = cost.profile(arch)
    return time.perf_counter() - start, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="zoo models to time (default: all)")
    parser.add_argument("--smoke", action="store_true", help=f"only the first {SMOKE_MODELS} models")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a model misses a goal")
    args = parser.parse_args(argv)

    names = args.models or nas.zoo.list_zoo()
    if args.smoke:
        names = names[:SMOKE_MODELS]
    archs = [(name, nas.zoo.get(name)) for name in names]
    if not archs:
        print("no zoo models")
        return 0

    cost.CACHE.clear()
    first, _ = _timed(archs[0][1])
    print(f"first trace in this process ({archs[0][0]}, torch start-up included): {first * 1e3:.0f} ms")
    print(f"{'model':<24} {'cold ms':>9} {'warm ms':>9} {'params M':>9} {'GMACs':>8} {'ops':>6} {'traced':>7}")
    colds: list[float] = []
    warms: list[float] = []
    for name, arch in archs:
        cost.CACHE.clear()
        cold, _ = _timed(arch)
        traced = cost.CACHE.info().misses
        warm, report = _timed(arch)
        colds.append(cold)
        warms.append(warm)
        print(f"{name:<24} {cold * 1e3:9.1f} {warm * 1e3:9.2f} {report.params_m:9.2f} {report.gmacs:8.3f} "
              f"{len(report.ops):6d} {traced:7d}")
    max_cold, max_warm = max(colds), max(warms)
    missed = max_cold >= COLD_GOAL_S or max_warm >= WARM_GOAL_S
    print(f"summary: {len(archs)} models, max cold {max_cold * 1e3:.1f} ms (goal < {COLD_GOAL_S * 1e3:.0f}), "
          f"max warm {max_warm * 1e3:.2f} ms (goal < {WARM_GOAL_S * 1e3:.0f}): {'MISSED' if missed else 'ok'}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
