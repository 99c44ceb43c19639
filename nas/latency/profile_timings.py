"""The timings of a ``nas profile``: every model timed in passes, cached so that a killed profile resumes.

Why passes: on a shared machine the slowdown other processes cause changes over minutes, and the repeats of
one model (run back to back, a few seconds apart) all see the same slowdown, so a minimum over them does not
remove it. The profile therefore times every model in ``passes`` sweeps over the whole list, one after the
other, and a model's latency is the statistic over the runs of all its passes. Two passes also measure the
measurement: the share of models whose passes agree within +-10% (:func:`noise`) is close to 100% on a quiet
machine. Well below it, the machine's noise alone moves models by more than the predictor's +-10% band, and a
held-out figure short of its goal says as much about the machine as about the predictor.

Cache: ``$NAS_HOME/profile/<setting>.json`` holds every finished pass of every model, rewritten atomically
after each chunk; a killed profile resumes at the chunk it was in. A cache from another machine or protocol
(the statistic and the number of passes aside, as both apply to the stored runs) is ignored, and a damaged
one only costs the time to measure again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.atomic import write_atomic
from nas.latency.measure import Protocol, Timing, prepare, time_chunk
from nas.yamlio import dump_json

__all__ = ["Measurer", "AGREEMENT_BAND", "default_measurer", "cache_header", "load_cached", "measure_passes",
           "joined", "load_summary", "noise"]

Measurer = Callable[[Sequence[Arch], Protocol], list[Timing]]
"""Times a chunk of Archs once (the default prepares and times them, :func:`nas.latency.measure.time_chunk`)."""

AGREEMENT_BAND = 10.0
"""Passes of a model agree when their minima are within this many percent of each other (the predictor's band)."""
_SCHEMA = 2  # 2: a list of passes per model


def default_measurer(archs: Sequence[Arch], protocol: Protocol) -> list[Timing]:
    return time_chunk([prepare(arch, protocol) for arch in archs], protocol)


def cache_header(protocol: Protocol, cpu_model: str) -> dict[str, Any]:
    """What cached timings must match to be reused."""
    timing = {key: value for key, value in protocol.to_dict().items() if key not in ("statistic", "passes")}
    return {"schema": _SCHEMA, "cpu_model": cpu_model, "protocol": timing}


def _timing(value: dict[str, Any]) -> Timing:
    return Timing(tuple(float(x) for x in value["samples_ms"]), tuple(float(x) for x in value["wall_ms"]),
                  float(value["load_before"]), float(value["load_after"]))


def load_cached(path: Path, header: dict[str, Any]) -> dict[str, list[Timing]]:
    """The passes cached at ``path`` per Arch id, if its header is ``header`` (else, or if damaged, none)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or any(data.get(key) != value for key, value in header.items()):
            return {}
        return {key: [_timing(one) for one in passes] for key, passes in data["timings"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # absent or damaged: only lost time, never wrong figures


def _save(path: Path, header: dict[str, Any], timings: dict[str, list[Timing]]) -> None:
    stored = {key: [{"samples_ms": list(one.samples_ms), "wall_ms": list(one.wall_ms),
                     "load_before": one.load_before, "load_after": one.load_after} for one in passes]
              for key, passes in timings.items()}
    write_atomic(path, dump_json({**header, "timings": stored}))


def measure_passes(archs: Sequence[Arch], protocol: Protocol, *, cache: Path, resume: bool, header: dict[str, Any],
                   measurer: Measurer, progress: bool) -> tuple[dict[str, list[Timing]], int]:
    """Up to ``protocol.passes`` timings per Arch id, a pass over every Arch finished before the next begins
    (cached passes reused if ``resume``); also how many Archs were timed now. The cache is rewritten after
    every chunk either way."""
    timings = load_cached(cache, header) if resume else {}
    timings = {arch.id: timings.get(arch.id, [])[:protocol.passes] for arch in archs}
    todo = sum(protocol.passes - len(timings[arch.id]) for arch in archs)
    timed_now: set[str] = set()
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=todo, unit="model", desc=f"timing {protocol.passes} pass(es) "
                                                  f"({len(archs) * protocol.passes - todo} cached)")
    try:
        for index in range(protocol.passes):
            pending = [arch for arch in archs if len(timings[arch.id]) == index]
            for start in range(0, len(pending), protocol.chunk):
                chunk = pending[start:start + protocol.chunk]
                for arch, timing in zip(chunk, measurer(chunk, protocol), strict=True):
                    timings[arch.id].append(timing)
                    timed_now.add(arch.id)
                _save(cache, header, timings)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return timings, len(timed_now)


def joined(passes: Sequence[Timing]) -> Timing:
    """One model's passes as one timing: every run, the load before the first and after the last."""
    return Timing(tuple(x for one in passes for x in one.samples_ms), tuple(x for one in passes for x in one.wall_ms),
                  passes[0].load_before, passes[-1].load_after)


def load_summary(timings: Sequence[Timing]) -> dict[str, float]:
    loads = [value for timing in timings for value in (timing.load_before, timing.load_after)]
    return {"min": round(min(loads), 2), "median": round(float(np.median(loads)), 2), "max": round(max(loads), 2)}


def noise(passes: Sequence[Sequence[Timing]]) -> dict[str, float | None]:
    """How far the measurement repeats: the spread of a model's runs (median over models of (max - min) /
    median) by the protocol's clock and by the wall clock, the median ratio of wall time to the clock's time
    (1 on an idle machine), and, with two passes or more, the share of models (%) whose passes' minima agree
    within :data:`AGREEMENT_BAND` (``None`` with one pass)."""
    every = [joined(one) for one in passes]

    def spread(samples: Sequence[float]) -> float:
        return (max(samples) - min(samples)) / float(np.median(samples))

    ratio = [np.median(t.wall_ms) / np.median(t.samples_ms) for t in every]
    several = [one for one in passes if len(one) > 1]
    agree = None
    if several:
        bands = [max(min(t.samples_ms) for t in one) / min(min(t.samples_ms) for t in one) for one in several]
        agree = round(100.0 * float(np.mean(np.asarray(bands) <= 1 + AGREEMENT_BAND / 100)), 2)
    return {"range_over_median": round(float(np.median([spread(t.samples_ms) for t in every])), 4),
            "wall_range_over_median": round(float(np.median([spread(t.wall_ms) for t in every])), 4),
            "wall_over_clock": round(float(np.median(ratio)), 4),
            "passes_agree_within_10_pct": agree}
