"""Space operations per second: sample + mutate + encode on vectors, and Arch decode / encode.

The goal (the issue for ``nas/space``): at least 20k points/s for
sample + mutate + encode, on point vectors in batches as a search uses them
(``sample_vectors``, ``mutate_vectors``, then ``features``, the numeric
encoding a predictor reads). Each space is loaded fresh, so the validity
check's tables (``nas/space/validity.py``) start empty and the figure includes
their warm-up. Building Archs is slower and printed on its own: ``decode``
(vector -> validated Arch) and ``encode`` (Arch -> vector, which also checks
membership).

Usage::

    python bench/space.py                 # every shipped space, 20k points each
    python bench/space.py --smoke         # 1k points, for CI
    python bench/space.py --strict        # exit 1 if a space misses the goal
    python bench/space.py metaformer swin
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from nas.space import Space, list_spaces, spaces_dir

GOAL_POINTS_PER_S = 20_000
BATCH = 1000
POINTS = 20_000
SMOKE_POINTS = 1000
ARCH_POINTS = 300
SMOKE_ARCH_POINTS = 30


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>9,.0f}/s" if seconds > 0 else "      inf/s"


def bench(name: str, points: int, arch_points: int, seed: int) -> float:
    """Print one space's figures; returns its sample + mutate + encode rate (points/s)."""
    space = Space.load(spaces_dir() / f"{name}.yaml")
    rng = np.random.default_rng(seed)
    timings = {"sample": 0.0, "mutate": 0.0, "encode": 0.0}
    done = 0
    while done < points:
        count = min(BATCH, points - done)
        start = time.perf_counter()
        vectors = space.sample_vectors(rng, count)
        sampled = time.perf_counter()
        mutated = space.mutate_vectors(vectors, rng)
        moved = time.perf_counter()
        space.features(mutated)
        timings["sample"] += sampled - start
        timings["mutate"] += moved - sampled
        timings["encode"] += time.perf_counter() - moved
        done += count
    total = sum(timings.values())
    vectors = space.sample_vectors(rng, arch_points)
    start = time.perf_counter()
    archs = [space.decode(vector) for vector in vectors]
    decoded = time.perf_counter()
    for arch in archs:
        space.encode(arch)
    encoded = time.perf_counter()
    rate = points / total
    verdict = "ok" if rate >= GOAL_POINTS_PER_S else f"below the {GOAL_POINTS_PER_S:,}/s goal"
    print(f"{name:<16} {space.size_text():>16} {_rate(points, total)} "
          f"({_rate(points, timings['sample'])} sample, {_rate(points, timings['mutate'])} mutate, "
          f"{_rate(points, timings['encode'])} encode)  Arch: {_rate(arch_points, decoded - start)} decode, "
          f"{_rate(arch_points, encoded - decoded)} encode  {verdict}")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spaces", nargs="*", help="shipped spaces to time (default: all)")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_POINTS} points per space, for CI")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a space misses the goal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = args.spaces or list_spaces()
    unknown = sorted(set(names) - set(list_spaces()))
    if unknown:
        parser.error(f"unknown spaces {unknown}; known: {', '.join(list_spaces())}")
    points = SMOKE_POINTS if args.smoke else POINTS
    arch_points = SMOKE_ARCH_POINTS if args.smoke else ARCH_POINTS
    print(f"{'space':<16} {'size':>16} sample + mutate + encode, points/s (batches of {BATCH}; goal "
          f"{GOAL_POINTS_PER_S:,}/s)")
    rates = [bench(name, points, arch_points, args.seed) for name in names]
    return 1 if args.strict and min(rates) < GOAL_POINTS_PER_S else 0


if __name__ == "__main__":
    sys.exit(main())
