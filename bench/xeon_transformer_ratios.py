"""Set the Xeon settings' attention and softmax/norm/GELU compute efficiencies from kernels timed on this machine.

No Xeon calibration row has a transformer (issue 26), so the ``bmm`` group (activation x activation
products: attention) and the ``special`` group (softmax, layer norm, GELU and other transcendental
activations) of every Xeon setting are not fitted. This script times, with eager PyTorch on one thread,
small modules at the shapes vision transformers run at 224 px (attention products of ViT-S, Swin-T
windows, PVTv2's reduced keys, EfficientFormer-L1; softmaxes, layer norms and GELUs of ViT-S and
Swin-T) against the kernels the settings *did* fit on CNN rows: linear layers of the same models, which
every Xeon setting prices with its fitted ``pwconv`` efficiencies (``shared_kernels``). Here every one of
them is bound by compute (the tensors stay in cache), so what carries over is a compute rate: per Xeon
setting, the group's compute efficiency is set to the one pricing linear layers times a factor ``k``,

    k = geomean over the group's probes i of (model_i / measured_i) / geomean over the linear probes j of
        (model_j / measured_j)

where ``model`` is the probe's compute time as the setting prices it (the group at the linear layers'
compute efficiency, memory terms left out) and ``measured`` the probe's time here less the time of a tiny
op of the same launch group (eager PyTorch's per-call cost, which the settings' ``launch_us`` carry).
Memory efficiencies are not set: this machine's caches hold every probe, while the settings price
memory traffic at a 4-core instance's DRAM bandwidth, so no memory rate measured here transfers. The
factors are printed per probe, so the spread within a group (softmax against layer norm against GELU)
shows. Layout copies (Swin's window partition and shift) are only checked, against adds of as many
elements and with the memory terms in (copies and adds are both bound by memory): the settings price
them with the fitted ``vector`` efficiencies, and their factor says how far off that is.

Timing protocol (``nas.latency.measure.time_chunk``): one thread, each run timed by the thread's CPU
time, probes interleaved round-robin, the minimum of the repeats; each run repeats the probe enough
times to last about a millisecond. The machine is shared: the spread of the repeats is printed.

Usage::

    python bench/xeon_transformer_ratios.py [--repeats 15]

It prints the measured times, the factors and, per Xeon setting, the values to put into the setting's
``priors`` (hand-edited, with the ``measurement`` block that names them; ``predictors/README.md``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from nas.cost import profile_module
from nas.latency.coefficients import Coefficients
from nas.latency.kinds import COMPUTE_GROUP_OF, COMPUTE_GROUPS, kind_of
from nas.latency.machine import machine_facts, runtime_versions
from nas.latency.measure import Protocol, time_chunk
from nas.latency.opmodel import features, op_parts, params_of
from nas.latency.optable import build_table
from nas.latency.targets import Setting, get_target

REFERENCE_GROUP = {"bmm": "matmul", "special": "matmul"}
"""Group whose compute efficiency is set here -> the group it is measured against: linear layers, which every Xeon
setting prices with the fitted ``pwconv`` efficiencies (``shared_kernels``)."""
CHECKED_GROUP = {"movement": "vector"}
"""Kinds only checked, not set: layout copies (window partitions, rolls) run on the fitted ``vector`` efficiencies;
their factor says how far the copies' measured rate is from an add's (1: priced right)."""
RUN_SECONDS = 1e-3


class _Product(nn.Module):
    """An activation x activation product: scores ``x @ x^T``, or weights ``x`` (N x M) times values, an M x ``width``
    slice of ``x``."""

    def __init__(self, width: int | None = None):
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (x.transpose(-1, -2) if self.width is None else x[..., :x.shape[-1], :self.width])


class _Add(nn.Module):
    """A residual add of two tensors of one shape."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.register_buffer("other", torch.randn(1, *shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


class _WindowPartition(nn.Module):
    """Swin's window partition of a (H, W, C) map into windows of ``size`` x ``size``: a permuted copy."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        s = self.size
        windows = x.view(batch, height // s, s, width // s, s, channels).permute(0, 1, 3, 2, 4, 5)
        return windows.contiguous()


class _Roll(nn.Module):
    """Swin's cyclic shift of a (H, W, C) map by ``shift`` pixels."""

    def __init__(self, shift: int):
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, (-self.shift, -self.shift), (1, 2))


@dataclass(frozen=True)
class Probe:
    """One module timed here: its name, the module and its input shape (without the batch dimension)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]


def probes() -> list[Probe]:
    """The attention products, special ops and their references, at the shapes of 224-px transformers."""
    vit, swin, pvt, swin_hidden = (197, 384), (3136, 96), (3136, 64), (3136, 384)
    return [
        Probe("bmm ViT-S scores 6x197x64", _Product(), (6, 197, 64)),
        Probe("bmm ViT-S values 6x197x197.64", _Product(64), (6, 197, 197)),
        Probe("bmm Swin-T windows 192x49x32", _Product(), (192, 49, 32)),
        Probe("bmm Swin-T values 192x49x49.32", _Product(32), (192, 49, 49)),
        Probe("bmm PVTv2 values 1x3136x49.32", _Product(32), (1, 3136, 49)),
        Probe("bmm EfficientFormer 8x49x32", _Product(), (8, 49, 32)),
        Probe("linear ViT-S qkv 197x384>1152", nn.Linear(384, 1152), vit),
        Probe("linear ViT-S fc2 197x1536>384", nn.Linear(1536, 384), (197, 1536)),
        Probe("linear Swin-T qkv 3136x96>288", nn.Linear(96, 288), swin),
        Probe("linear Swin-T fc1 3136x96>384", nn.Linear(96, 384), swin),
        Probe("linear PVTv2 q 3136x64>64", nn.Linear(64, 64), pvt),
        Probe("softmax ViT-S 6x197x197", nn.Softmax(-1), (6, 197, 197)),
        Probe("softmax Swin-T 192x49x49", nn.Softmax(-1), (192, 49, 49)),
        Probe("norm ViT-S 197x384", nn.LayerNorm(384), vit),
        Probe("norm Swin-T 3136x96", nn.LayerNorm(96), swin),
        Probe("gelu ViT-S 197x1536", nn.GELU(), (197, 1536)),
        Probe("gelu Swin-T 3136x384", nn.GELU(), swin_hidden),
        Probe("add ViT-S 197x384", _Add(vit), vit),
        Probe("add ViT-S 197x1536", _Add((197, 1536)), (197, 1536)),
        Probe("add Swin-T 3136x96", _Add(swin), swin),
        Probe("add Swin-T 3136x384", _Add(swin_hidden), swin_hidden),
        Probe("add 6x197x197", _Add((6, 197, 197)), (6, 197, 197)),
        Probe("add 192x49x49", _Add((192, 49, 49)), (192, 49, 49)),
        Probe("movement Swin-T window partition 56x56x96", _WindowPartition(7), (56, 56, 96)),
        Probe("movement Swin-T shift (roll) 56x56x96", _Roll(3), (56, 56, 96)),
    ]


TINY = {"matmul": Probe("tiny linear 1x16>16", nn.Linear(16, 16), (1, 16)),
        "vector": Probe("tiny add 1x16", _Add((1, 16)), (1, 16))}
"""Per launch group, an op whose time here is eager PyTorch's per-call cost."""


def _group(probe: Probe) -> str:
    """The compute group of the probe's one priced op (``movement`` for a copy, which the vector group prices)."""
    kinds = [kind for op in profile_module(probe.module, probe.shape).ops if (kind := kind_of(op)) is not None]
    assert len(kinds) == 1, f"{probe.name}: expected one priced op, got {kinds}"
    return kinds[0] if kinds[0] in CHECKED_GROUP else COMPUTE_GROUP_OF[kinds[0]]


def _runner(probe: Probe, calls: int) -> Callable[[], object]:
    example = torch.randn(1, *probe.shape)
    module = probe.module.eval()

    def run() -> object:
        with torch.inference_mode():
            for _ in range(calls):
                module(example)
        return None

    return run


def time_probes(every: Sequence[Probe], repeats: int) -> tuple[list[float], list[float]]:
    """Per probe, microseconds per call (minimum of ``repeats``) and the relative spread of the repeats."""
    protocol = Protocol(threads=1, warmup=1, repeats=1)
    calls = []
    for probe in every:  # one untimed call per probe sizes its loop to about RUN_SECONDS
        single = time_chunk([_runner(probe, 3)], protocol)[0].latency_ms("min") / 3 * 1e-3
        calls.append(max(1, round(RUN_SECONDS / max(single, 1e-7))))
    timings = time_chunk([_runner(probe, n) for probe, n in zip(every, calls, strict=True)],
                         Protocol(threads=1, warmup=2, repeats=repeats, chunk=len(every)))
    best = [timing.latency_ms("min") * 1e3 / n for timing, n in zip(timings, calls, strict=True)]
    spread = [statistics.median(timing.samples_ms) / min(timing.samples_ms) - 1.0 for timing in timings]
    return best, spread


def model_us(probe: Probe, setting: Setting, coefficients: Coefficients) -> float:
    """The probe's execution time priced by ``setting`` with ``coefficients`` (launch left out), microseconds."""
    table = build_table(profile_module(probe.module, probe.shape).ops, setting, by_unit=False)
    execute, _ = op_parts(features(table, setting), params_of(coefficients))
    return float(execute.sum()) * 1e6


def pricing_group(setting: Setting, group: str) -> str:
    """The group whose efficiencies price ``group``'s ops in ``setting`` (itself unless ``shared_kernels``)."""
    return setting.shared_kernels.get(group, group)


def as_reference(setting: Setting, coefficients: Coefficients, group: str) -> Coefficients:
    """``coefficients`` with ``group``'s compute efficiency replaced by the one that prices its reference group."""
    reference = pricing_group(setting, REFERENCE_GROUP[group])
    return coefficients.replace_values(
        {f"compute_efficiency.{group}": coefficients.get(f"compute_efficiency.{reference}")})


def compute_only(coefficients: Coefficients) -> Coefficients:
    """``coefficients`` with memory so fast that every op is priced by its compute time alone."""
    return coefficients.replace_values({f"memory_efficiency.{group}": 1e9 for group in COMPUTE_GROUPS})


def priced_us(probe: Probe, group: str, setting: Setting) -> float:
    """The probe's time as :func:`factors` compares it: compute alone at the reference group's compute efficiency
    for a group set here and for its reference probes, the whole execution for a checked kind and its adds."""
    coefficients = setting.coefficients
    if group in REFERENCE_GROUP:
        coefficients = as_reference(setting, coefficients, group)
    if group in (*REFERENCE_GROUP, *REFERENCE_GROUP.values()):
        coefficients = compute_only(coefficients)
    return model_us(probe, setting, coefficients)


def factors(setting: Setting, group: str, every: Sequence[Probe], groups: Sequence[str],
            net_us: Sequence[float]) -> list[float]:
    """Per probe of ``group``: (model / measured) over the geomean of (model / measured) of its references."""
    reference = {**REFERENCE_GROUP, **CHECKED_GROUP}[group]
    out = []
    for probe, g, us in zip(every, groups, net_us, strict=True):
        if g != group:
            continue
        scale = _geomean([priced_us(other, h, setting) / other_us
                          for other, h, other_us in zip(every, groups, net_us, strict=True)
                          if h == reference and (group in REFERENCE_GROUP
                                                 or math.prod(other.shape) == math.prod(probe.shape))])
        out.append(priced_us(probe, group, setting) / us / scale)
    return out


def _geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(value) for value in values) / len(values))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per probe (their minimum is kept)")
    args = parser.parse_args(argv)
    every = probes()
    groups = [_group(probe) for probe in every]
    tiny_us, _ = time_probes(list(TINY.values()), args.repeats)
    overhead = dict(zip(TINY, tiny_us, strict=True))
    load = os.getloadavg()[0]
    measured, spread = time_probes(every, args.repeats)
    machine = machine_facts()
    print(f"{datetime.date.today()}  {machine.cpu_model}, {machine.cores} cores, torch {torch.__version__}, 1 thread; "
          f"1-min load {load:.1f}; per-call cost: linear {overhead['matmul']:.1f} us, add {overhead['vector']:.1f} us")
    print(f"  versions: {runtime_versions()}")
    net = [max(us - overhead["matmul" if group in ("matmul", "bmm") else "vector"], 0.05 * us)
           for us, group in zip(measured, groups, strict=True)]
    default = get_target("xeon").setting()
    print(f"\n{'probe':36s} {'group':8s} {'measured us':>11s} {'net us':>8s} {'spread':>7s} {'model us':>9s}"
          f"  (model: as {default.label} prices it for the comparison)")
    for probe, group, us, net_us, rel in zip(every, groups, measured, net, spread, strict=True):
        print(f"{probe.name:36s} {group:8s} {us:11.1f} {net_us:8.1f} {100 * rel:6.1f}% "
              f"{priced_us(probe, group, default):9.1f}")
    print("\nper Xeon setting: k per group (per-probe factors), and the compute efficiency it sets")
    for setting in get_target("xeon").settings.values():
        print(f"  {setting.name}")
        coefficients = setting.coefficients
        for group, reference in REFERENCE_GROUP.items():
            per_probe = factors(setting, group, every, groups, net)
            k = _geomean(per_probe)
            value = coefficients.get(f"compute_efficiency.{pricing_group(setting, reference)}") * k
            print(f"    {group:8s} k {k:.4f} (probes {', '.join(f'{v:.3g}' for v in per_probe)}) -> "
                  f"compute_efficiency.{group} {value:.3g}")
        for group in CHECKED_GROUP:
            per_probe = factors(setting, group, every, groups, net)
            print(f"    {group:8s} k {_geomean(per_probe):.3f} (probes {', '.join(f'{v:.2f}' for v in per_probe)}): "
                  "a check only, priced by the vector group")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
