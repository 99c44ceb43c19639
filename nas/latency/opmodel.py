"""The per-op time model: roofline (compute vs memory), launch costs and their overlap, vectorised.

For an op of kind ``k`` (compute group ``g``, launch group ``l``) on processor ``u``::

    compute = flops / (peak_u(precision, g) * compute_efficiency_u[g]) * (1 + saturation_u / parallelism)
    memory  = bytes * bytes_per_element / 4 / (bandwidth_u * memory_efficiency_u[g])
    execute = max(compute, memory) + launched * kernel_us_u
    issue   = launched * launch_us_u[l]

A setting's ``shared_kernels`` prices a group with another group's efficiencies
(linear layers as 1x1 convolutions where the runtime runs both as one GEMM), as
does an optional group the setting's priors leave out
(:attr:`~nas.latency.coefficients.UnitCoefficients.leaders`: ``dwconv_large`` runs
on ``dwconv``'s).
``peak_u`` is the device's MAC peak for the convolution and matmul groups and
its vector peak for the rest, at the setting's precision (the fallback
processor's own precision for fallback ops), or at the peak format an op's own
number format runs at (:attr:`nas.latency.optable.OpTable.fmt`: an int8 op of a
quantised block on a float32 setting takes the int8 peaks). ``bytes`` were
traced at float32 and are scaled to the element size of the format the op
computes in. ``parallelism`` counts the
op's independent work items (:attr:`nas.latency.optable.OpTable.parallelism`):
an op too small to fill the processor computes below its efficiency, while
its memory traffic is not penalised (a small op's weights still stream at full
bandwidth). ``launched`` is 0 for an op fused into the one before it.

A model's latency::

    latency = fixed_ms + input_ms_per_mb * input MB + switches + combine(sum(execute), sum(issue))

where ``combine`` is ``max`` for settings whose host issues ops asynchronously
while the device runs (``overlap: true``, GPU runtimes: a small network at
batch 1 is bound by issuing kernels, a large one by running them) and ``+``
otherwise; ``switches`` is ``switch_us`` per change between the main and the
fallback processor plus the crossing tensor at the fallback's bandwidth (its
``vector`` memory efficiency).

The split into *features* (everything that does not depend on the coefficients:
``flops / peak``, ``bytes / bandwidth``, group indices) and the arithmetic here
is what makes fitting cheap: features are built once per calibration row, and
the fit only re-evaluates. Parameter vectors: compute and memory efficiencies
are indexed ``unit * len(COMPUTE_GROUPS) + group``; kernel costs and
saturation by ``unit``; launch costs ``unit * len(LAUNCH_GROUPS) + group``
(unit 0 = main processor, 1 = fallback).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas.latency.coefficients import Coefficients, UnitCoefficients
from nas.latency.kinds import COMPUTE_GROUP_OF, COMPUTE_GROUPS, KINDS, LAUNCH_GROUP_OF, LAUNCH_GROUPS
from nas.latency.optable import OpTable
from nas.latency.targets import BYTES_PER_ELEMENT, PEAK_FORMATS, Setting

__all__ = ["NC", "NL", "TRANSFER_INDEX", "Features", "Params", "features", "concat", "compress", "params_of",
           "op_parts", "row_parts", "combine", "transfer_seconds", "evaluate", "breakdown_ms"]

_MAC_GROUPS = frozenset({"conv", "pwconv", "dwconv", "dwconv_large", "gconv", "matmul", "bmm"})
_COMPUTE_INDEX = np.array([COMPUTE_GROUPS.index(COMPUTE_GROUP_OF[kind]) for kind in KINDS])
_LAUNCH_INDEX = np.array([LAUNCH_GROUPS.index(LAUNCH_GROUP_OF[kind]) for kind in KINDS])
_IS_VECTOR = np.array([COMPUTE_GROUP_OF[kind] not in _MAC_GROUPS for kind in KINDS])
NC = len(COMPUTE_GROUPS)
NL = len(LAUNCH_GROUPS)
TRANSFER_INDEX = NC + COMPUTE_GROUPS.index("vector")
"""Index of the memory efficiency switch transfers move at (the fallback's ``vector`` group)."""


@dataclass(frozen=True)
class Features:
    """Coefficient-free terms of a set of priced ops, possibly of many models (rows).

    Attributes:
        compute_s: per op, seconds at 100% compute efficiency.
        memory_s: per op, seconds at 100% memory efficiency.
        parallelism: per op, independent work items.
        compute_index: per op, index into the compute- and memory-efficiency vectors.
        unit: per op, 0 on the main processor, 1 on the fallback.
        launch_index: per op, index into the launch-cost vector.
        launch: per op, 1.0 if it launches a kernel.
        kind: per op, index into :data:`~nas.latency.kinds.KINDS`.
        label: per op, index into ``labels``: how its number format was placed (``OpTable.label``).
        count: per op, how many identical ops it stands for (see :func:`compress`).
        row: per op, the row (model) it belongs to.
        switches: per row, switches between processors.
        transfer_s: per row, seconds to move the crossing tensors at 100% fallback memory efficiency.
        input_bytes: per row, bytes of the float32 input tensor (0 for rows that are parts of a model).
        rows: number of rows.
        overlap: the setting issues ops asynchronously (see the module docstring).
        labels: the distinct format labels (``""``: at the setting's precision).
    """

    compute_s: np.ndarray
    memory_s: np.ndarray
    parallelism: np.ndarray
    compute_index: np.ndarray
    unit: np.ndarray
    launch_index: np.ndarray
    launch: np.ndarray
    kind: np.ndarray
    label: np.ndarray
    count: np.ndarray
    row: np.ndarray
    switches: np.ndarray
    transfer_s: np.ndarray
    input_bytes: np.ndarray
    rows: int
    overlap: bool
    labels: tuple[str, ...] = ("",)


_PER_OP = ("compute_s", "memory_s", "parallelism", "compute_index", "unit", "launch_index", "launch", "kind",
           "label", "count", "row")
_INTEGER = frozenset({"compute_index", "unit", "launch_index", "kind", "label", "row"})


@dataclass(frozen=True)
class Params:
    """Coefficients as arrays (see the module docstring for the indexing); times in seconds."""

    compute_efficiency: np.ndarray
    memory_efficiency: np.ndarray
    launch_s: np.ndarray
    kernel_s: np.ndarray
    saturation: np.ndarray
    fixed_s: float
    input_s_per_byte: float
    switch_s: float


def _unit_arrays(unit: UnitCoefficients) -> tuple[list[float], list[float], list[float], float, float]:
    return ([unit.compute_efficiency[g] for g in COMPUTE_GROUPS], [unit.memory_efficiency[g] for g in COMPUTE_GROUPS],
            [unit.launch_us[g] * 1e-6 for g in LAUNCH_GROUPS], unit.kernel_us * 1e-6, unit.saturation_parallelism)


def params_of(coefficients: Coefficients) -> Params:
    """The coefficients as the arrays the model takes (the fallback's copied from main if absent)."""
    main = _unit_arrays(coefficients.main)
    host = _unit_arrays(coefficients.host) if coefficients.host is not None else main
    return Params(np.array(main[0] + host[0]), np.array(main[1] + host[1]), np.array(main[2] + host[2]),
                  np.array([main[3], host[3]]), np.array([main[4], host[4]]), coefficients.fixed_ms * 1e-3,
                  coefficients.input_ms_per_mb * 1e-9, coefficients.switch_us * 1e-6)


def features(table: OpTable, setting: Setting, *, input_bytes: float = 0.0, per_segment: bool = False) -> Features:
    """The features of one op table: one row (a model whose float32 input has ``input_bytes``), or one row
    per segment if ``per_segment`` (parts of a model: no input term)."""
    main = setting.device
    peaks = np.array([[main.peak_ops(setting.precision), main.peak_ops(setting.precision, vector=True)], [1.0, 1.0]])
    bandwidth = np.array([main.memory_bandwidth_gbs * 1e9, 1.0])
    scale = np.array([BYTES_PER_ELEMENT[setting.precision] / 4.0, 1.0])
    if setting.fallback is not None:
        fallback = setting.fallback
        peaks[1] = [fallback.device.peak_ops(fallback.precision),
                    fallback.device.peak_ops(fallback.precision, vector=True)]
        bandwidth[1] = fallback.device.memory_bandwidth_gbs * 1e9
        scale[1] = BYTES_PER_ELEMENT[fallback.precision] / 4.0
    host_bandwidth = bandwidth[1] if setting.fallback is not None else bandwidth[0]
    unit = table.host.astype(np.int64)
    vector = _IS_VECTOR[table.kind].astype(np.int64)
    compute_s = table.flops / peaks[unit, vector]
    memory_s = table.bytes * scale[unit] / bandwidth[unit]
    if per_segment:
        row = table.segment
        switches = table.switches
        transfer_s = table.transfer_bytes / host_bandwidth
        rows = len(table.segment_names)
        inputs = np.zeros(rows)
    else:
        row = np.zeros(len(table), dtype=np.int64)
        switches = np.array([table.switches.sum()])
        transfer_s = np.array([table.transfer_bytes.sum() / host_bandwidth])
        rows = 1
        inputs = np.array([float(input_bytes)])
    for index in np.unique(table.fmt[table.fmt > 0]):  # ops at a number format of their own (none in a float model)
        peak = PEAK_FORMATS[index - 1]
        chosen = table.fmt == index
        rate = np.where(vector[chosen], main.peak_ops(peak, vector=True), main.peak_ops(peak))
        compute_s[chosen] = table.flops[chosen] / rate
        memory_s[chosen] = table.bytes[chosen] * (BYTES_PER_ELEMENT[peak] / 4.0) / bandwidth[0]
    group = _COMPUTE_INDEX[table.kind]
    for follower, leader in {**setting.priors.main.leaders, **setting.shared_kernels}.items():
        group = np.where(group == COMPUTE_GROUPS.index(follower), COMPUTE_GROUPS.index(leader), group)
    return Features(compute_s, memory_s, table.parallelism, group + unit * NC, unit,
                    _LAUNCH_INDEX[table.kind] + unit * NL, table.launch, table.kind, table.label, np.ones(len(table)),
                    row, switches, transfer_s, inputs, rows, setting.overlap, table.labels)


def concat(parts: Sequence[Features]) -> Features:
    """Stack the rows of several feature sets of one setting (row indices and format labels renumbered)."""
    offsets = np.cumsum([0] + [part.rows for part in parts[:-1]])
    labels = list(dict.fromkeys(label for part in parts for label in part.labels))
    stacked = {name: np.concatenate([getattr(part, name) for part in parts]) for name in _PER_OP[:-1]}
    stacked["label"] = np.concatenate([np.array([labels.index(label) for label in part.labels],
                                                dtype=np.int64)[part.label] for part in parts])
    return Features(**stacked,
                    row=np.concatenate([part.row + offset for part, offset in zip(parts, offsets, strict=True)]),
                    switches=np.concatenate([part.switches for part in parts]),
                    transfer_s=np.concatenate([part.transfer_s for part in parts]),
                    input_bytes=np.concatenate([part.input_bytes for part in parts]),
                    rows=int(sum(part.rows for part in parts)), overlap=parts[0].overlap, labels=tuple(labels))


def compress(feats: Features) -> Features:
    """The same features with identical ops of a row merged into one op with a count (repeated blocks)."""
    if not len(feats.kind):
        return feats
    names = [name for name in _PER_OP if name != "count"]
    table = np.stack([getattr(feats, name).astype(np.float64) for name in names], axis=1)
    unique, inverse = np.unique(table, axis=0, return_inverse=True)
    counts = np.bincount(inverse.ravel(), weights=feats.count, minlength=len(unique))
    values = {name: (unique[:, index].astype(np.int64) if name in _INTEGER else unique[:, index])
              for index, name in enumerate(names)}
    return Features(**values, count=counts, switches=feats.switches, transfer_s=feats.transfer_s,
                    input_bytes=feats.input_bytes, rows=feats.rows, overlap=feats.overlap, labels=feats.labels)


def op_parts(feats: Features, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Per op (each of the ``count`` identical ops it stands for): seconds executing, seconds issuing."""
    compute = feats.compute_s / params.compute_efficiency[feats.compute_index]
    compute = compute * (1.0 + params.saturation[feats.unit] / feats.parallelism)
    memory = feats.memory_s / params.memory_efficiency[feats.compute_index]
    execute = np.maximum(compute, memory) + feats.launch * params.kernel_s[feats.unit]
    issue = feats.launch * params.launch_s[feats.launch_index]
    return execute, issue


def row_parts(feats: Features, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Per row: seconds executing and seconds issuing (sums over its ops)."""
    execute, issue = op_parts(feats, params)
    return (np.bincount(feats.row, weights=execute * feats.count, minlength=feats.rows),
            np.bincount(feats.row, weights=issue * feats.count, minlength=feats.rows))


def combine(execute: np.ndarray | float, issue: np.ndarray | float, overlap: bool) -> np.ndarray | float:
    """Execution and issue time together: the larger if they overlap, else their sum."""
    return np.maximum(execute, issue) if overlap else execute + issue


def transfer_seconds(feats: Features, params: Params) -> np.ndarray:
    """Seconds per row spent switching between processors."""
    return feats.switches * params.switch_s + feats.transfer_s / params.memory_efficiency[TRANSFER_INDEX]


def evaluate(feats: Features, params: Params) -> np.ndarray:
    """Predicted seconds per row (whole models: the per-inference terms included)."""
    execute, issue = row_parts(feats, params)
    return (combine(execute, issue, feats.overlap) + transfer_seconds(feats, params) + params.fixed_s
            + feats.input_bytes * params.input_s_per_byte)


def breakdown_ms(feats: Features, params: Params) -> dict[str, float]:
    """Milliseconds per op kind (kinds present only), over all rows of ``feats``.

    Ops at a number format of their own are shown apart, their kind followed by how their format was
    placed: ``conv [int8]``, ``conv [int8 as fp16]``, ``norm [fp16 on a53]`` (on the fallback processor).
    With ``overlap`` an op's share is its execution time, and ``launch_bound`` is the time issuing exceeds
    executing; otherwise an op's share includes its issue cost. ``transfer`` is the switching time. The
    per-inference terms (``fixed_ms``, input) are not included.
    """
    execute, issue = op_parts(feats, params)
    share = execute if feats.overlap else execute + issue
    per_kind = np.bincount(feats.kind + len(KINDS) * feats.label, weights=share * feats.count,
                           minlength=len(KINDS) * len(feats.labels)) * 1e3
    out = {}
    for index, value in enumerate(per_kind):
        if value > 0:
            label = feats.labels[index // len(KINDS)]
            kind = KINDS[index % len(KINDS)]
            out[f"{kind} [{label}]" if label else kind] = float(value)
    if feats.overlap:
        excess = float(np.sum(issue * feats.count) - np.sum(execute * feats.count))
        if excess > 0:
            out["launch_bound"] = excess * 1e3
    transfer = float(transfer_seconds(feats, params).sum()) * 1e3
    if transfer > 0:
        out["transfer"] = transfer
    return out
