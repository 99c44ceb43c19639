"""From a traced op list to the table the latency model prices: kinds, fusion, placement.

:func:`build_table` walks the ops of a :class:`nas.cost.CostReport` once and

1. drops free ops (views, allocations, constants; see :mod:`nas.latency.kinds`)
   and the kinds the setting lists as ``eliminated`` by its runtime; under a setting with
   ``fused_attention``, replaces the ops of each attention call its runtime fuses by one op, the fused
   kernel (:mod:`nas.latency.fused_attention`);
2. places each op on the main processor or, for kinds the setting sends to its
   fallback processor (the ZCU104's ARM cores), on the fallback; a kind listed
   as ``unsupported`` raises :class:`UnsupportedOpError`, so no op is ever priced
   at zero by omission;
3. pads the FLOPs of matrix products (dense and grouped convolutions, linear
   layers, attention products) to the device's ``channel_tile``: a kernel that
   blocks channels by 16 (AVX-512 lanes, the DPU's channel parallelism) or 32
   (a GPU GEMM tile) does the work of a full block for a group of 4 channels,
   which is why ResNeXt's 32x4d groups run far below a dense convolution's
   rate while its 32x48d groups do not. The output dimension (output channels
   per group) and the reduction dimension (input channels per group x kernel
   area) are each rounded up to the tile;
4. keeps a concatenation the setting lists as ``eliminated`` when it reads another concatenation's
   output in the same segment (DenseNet's and PeleeNet's growing feature maps): a runtime removes a
   concatenation by having its producers write into slices of its buffer, but an input that is itself a
   concatenation already lives in that concatenation's buffer, so TensorRT copies it. Priced as a copy,
   DenseNet's and PeleeNet's held-out V100 errors drop sharply (the target's validation block lists the
   held-out MAPE per family, ``lofo_mape_pct_by_family``; ``bench/predictors.py`` reruns the validation);
5. applies the setting's fusion rules. A *head* op (a convolution, a linear
   layer, ...) absorbs the ops that directly follow it when their kind is listed
   under the head's kind, they consume the previous op's output (same number of
   elements), and they run on the same processor: conv + batch norm + ReLU +
   residual add is one kernel under TensorRT, oneDNN, Core ML and the DPU
   compiler. A fused op keeps its FLOPs, loses its launch, and loses the traffic
   of the intermediate tensor (the head no longer writes it, the fused op no
   longer reads it), so its bytes become ``read + written - 2 x intermediate``.
   An op the setting lists under ``plugins`` neither fuses nor heads: Paddle
   Inference hands hardswish to a TensorRT plugin, which TensorRT cannot fuse
   into the convolution before it. Priced so, the V100 setting predicts the
   hardswish families (MobileNetV3, PP-LCNet, EfficientNet) markedly better
   on held-out data (same validation block);
6. counts the switches between processors and the bytes they move;
7. places each op by its number format (:attr:`nas.cost.Op.precision`): a float32 op runs at the
   setting's precision (the runtime deploys the float model so, unless the setting keeps float ops,
   :attr:`~nas.latency.targets.Setting.keep_float`); an op at another format runs where the main
   processor's ``formats`` say (:meth:`~nas.latency.targets.Device.runs`): at a peak format of its own,
   on the fallback processor (the ZCU104's DPU sends every float format to the A53, which computes it in
   its own precision), or nowhere, which raises :class:`UnsupportedPrecisionError` naming the op and the
   format. Each such op keeps a label (``int8``, ``int8 as fp16``, ``fp16 on a53``) that the prediction's
   breakdown shows.

Fusion only looks inside a *segment*: for an Arch, one unit of
:func:`nas.build.plan` (a block, a stem, a downsampler), because a block's
first op never consumes the previous unit's last op without the residual
branch also needing it (pre-norm blocks read ``x`` twice); for a plain module,
the whole op list. Each segment is assumed to start and end on the main
processor, so a run of fallback ops inside it costs two switches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas.cost import Op
from nas.errors import NasError
from nas.latency.fused_attention import fused_attention_calls
from nas.latency.kinds import KINDS, RULE_KIND_OF, kind_of, numel
from nas.latency.targets import FALLBACK, PEAK_FORMATS, PEAK_OF_FORMAT, UNSUPPORTED, Setting
from nas.op_precision import FLOAT32

__all__ = ["SPLIT_REDUCTION", "UnsupportedOpError", "UnsupportedPrecisionError", "OpTable", "build_table",
           "segments_of"]

_KIND_INDEX = {kind: index for index, kind in enumerate(KINDS)}


class UnsupportedOpError(NasError):
    """A model contains an op the target setting cannot run (and no fallback is modelled for it)."""


class UnsupportedPrecisionError(UnsupportedOpError):
    """A model contains an op at a number format the target setting cannot run (e.g. fp8 on a V100)."""


@dataclass(frozen=True)
class OpTable:
    """The priced ops of one model, after fusion and placement (arrays of equal length ``n``).

    Attributes:
        kind: index into :data:`~nas.latency.kinds.KINDS` per op.
        flops: FLOPs the processor executes per op (whole batch): the traced FLOPs, matrix products padded to
            the channel tile.
        parallelism: independent work items per op: its output elements, times ``reduction / 256`` for a
            matrix product whose reduction is longer than that (libraries split long reductions across
            threads when the output alone cannot fill the processor; a GEMV over 2048 inputs is not one
            thread's work).
        bytes: bytes moved per op at float32 (scaled to the setting's precision when priced).
        launch: 1.0 for an op that launches its own kernel, 0.0 for a fused one.
        host: True for an op placed on the fallback processor.
        segment: index of the op's segment.
        segment_names: name of each segment (the Arch unit path, or ``""`` for a module).
        switches: per segment, switches between main and fallback processor.
        transfer_bytes: per segment, float32 bytes crossing between the processors.
        fmt: per op, the peak format it computes at on the main processor, as an index into
            :data:`~nas.latency.targets.PEAK_FORMATS` plus one; 0 for the setting's own precision (every
            op of a float32 model) and for every op on the fallback processor (which computes in its own).
        label: per op, index into ``labels``: how its number format was placed (0: ``""``, at the setting's
            precision).
        labels: the distinct labels (``""``, ``int8``, ``int8 as fp16``, ``fp16 on a53``).
    """

    kind: np.ndarray
    flops: np.ndarray
    parallelism: np.ndarray
    bytes: np.ndarray
    launch: np.ndarray
    host: np.ndarray
    segment: np.ndarray
    segment_names: tuple[str, ...]
    switches: np.ndarray
    transfer_bytes: np.ndarray
    fmt: np.ndarray
    label: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.kind)


def segments_of(ops: Sequence[Op], *, by_unit: bool) -> list[tuple[str, list[Op]]]:
    """Split ``ops`` into fusion segments: runs of equal ``unit`` if ``by_unit``, else one segment."""
    if not by_unit:
        return [("", list(ops))]
    out: list[tuple[str, list[Op]]] = []
    for op in ops:
        if not out or out[-1][0] != op.unit:
            out.append((op.unit, []))
        out[-1][1].append(op)
    return out


SPLIT_REDUCTION = 256
"""Reduction length one work item of a matrix product covers (see :attr:`OpTable.parallelism`)."""


def _reduction(op: Op, kind: str) -> int:
    """The reduction length of a matrix product (input channels per group x kernel area, or K); 1 otherwise."""
    if kind in ("conv", "pwconv", "gconv", "dwconv") and len(op.in_shapes) >= 2 and len(op.in_shapes[1]) >= 2:
        return max(numel(op.in_shapes[1][1:]), 1)
    if kind in ("matmul", "bmm") and len(op.in_shapes) >= 2 and op.in_shapes[-2]:
        return max(op.in_shapes[-2][-1], 1)
    return 1


def _padded(size: int, tile: int) -> float:
    return float(-(-size // tile) * tile) / size if size > 0 else 1.0


def _tile_factor(op: Op, kind: str, tile: int) -> float:
    """How much work a matrix product does once its output and reduction dimensions are padded to ``tile``."""
    if tile <= 1 or kind not in ("conv", "pwconv", "gconv", "matmul", "bmm") or len(op.in_shapes) < 2:
        return 1.0
    if kind in ("conv", "pwconv", "gconv"):
        x, weight = op.in_shapes[0], op.in_shapes[1]
        if len(x) < 2 or len(weight) < 2 or weight[1] == 0:
            return 1.0
        groups = max(x[1] // weight[1], 1)
        out_per_group = weight[0] // groups
        reduction = weight[1] * numel(weight[2:])
        return _padded(out_per_group, tile) * _padded(reduction, tile)
    # mm (x, w), addmm (bias, x, w), bmm (a, b): the last two shapes are the operands, (..., M, K) x (..., K, N).
    left, right = op.in_shapes[-2], op.in_shapes[-1]
    if len(left) < 2 or len(right) < 2:
        return 1.0
    return _padded(right[-1], tile) * _padded(left[-1], tile)


def _element_size(op: Op) -> float:
    elements = sum(numel(shape) for shape in op.out_shapes)
    return op.bytes_written / elements if elements and op.bytes_written else 4.0


class _Builder:
    def __init__(self, setting: Setting):
        self.setting = setting
        self.host_kinds = frozenset(setting.fallback.kinds) if setting.fallback else frozenset()
        self.unsupported = frozenset(setting.unsupported)
        self.eliminated = frozenset(setting.eliminated)
        self.plugins = frozenset(setting.plugins)
        self.tiles = (setting.device.channel_tile, setting.fallback.device.channel_tile if setting.fallback else 1)
        self.kind: list[int] = []
        self.flops: list[float] = []
        self.parallelism: list[float] = []
        self.bytes: list[float] = []
        self.launch: list[float] = []
        self.host: list[bool] = []
        self.segment: list[int] = []
        self.switches: list[int] = []
        self.transfer: list[float] = []
        self.fmt: list[int] = []
        self.label: list[int] = []
        self.labels: dict[str, int] = {"": 0}
        self.placed: dict[str, tuple[str, int]] = {}  # number format -> (how it runs, peak format index + 1)

    def place(self, op: Op, kind: str, host: bool) -> tuple[bool, int, int]:
        """``(on the fallback, peak format index + 1, label index)`` of ``op``, placed by its number format."""
        number_format = op.precision
        if number_format == FLOAT32 and not self.setting.keep_float:
            return host, 0, 0
        placed = self.placed.get(number_format)
        if placed is None:
            runs = self.setting.device.runs(number_format)
            index = PEAK_FORMATS.index(runs) + 1 if runs in PEAK_FORMATS else 0
            placed = self.placed[number_format] = (runs, index)
        runs, index = placed
        fallback = self.setting.fallback
        if fallback is not None and (host or runs == FALLBACK):
            text = f"{number_format} on {fallback.device.name}"
            return True, 0, self.labels.setdefault(text, len(self.labels))
        if runs in (UNSUPPORTED, FALLBACK):
            setting = self.setting
            why = ("" if number_format in setting.device.formats else
                   f" (its device lists no {PEAK_OF_FORMAT[number_format]} figure in peak_tops nor {number_format} "
                   f"under formats)")
            raise UnsupportedPrecisionError(
                f"{setting.label}: {op.name} ({kind}) in {op.unit or 'the model'} runs at {number_format}, which "
                f"{setting.device.title} cannot run under {setting.runtime}, and no fallback is modelled for it{why}")
        text = number_format if runs == PEAK_OF_FORMAT[number_format] else f"{number_format} as {runs}"
        return False, index, self.labels.setdefault(text, len(self.labels))

    def add_segment(self, index: int, ops: Sequence[Op], first: int) -> None:
        """Add the ops of segment ``index``, whose first op is ``first`` in the traced op list."""
        concats: set[int] = set()
        head_kind: str | None = None
        head_host = False
        previous_elements = -1
        previous_bytes = 0.0
        on_host = False
        switches = 0
        transfer = 0.0
        fused = fused_attention_calls(ops, first) if self.setting.fused_attention else {}
        for position, op in enumerate(ops, start=first):
            if position - first in fused:  # an op of an attention call run as one kernel: that kernel, or nothing
                kernel = fused[position - first]
                if kernel is None:
                    continue
                op = kernel
            real_kind = kind_of(op)
            kind = RULE_KIND_OF.get(real_kind, real_kind)  # rules and shapes see the kind it refines
            copied = kind == "concat" and not concats.isdisjoint(op.sources)
            if kind == "concat":
                concats.add(position)
            if kind is None or (kind in self.eliminated and not copied):
                continue
            if kind in self.unsupported:
                raise UnsupportedOpError(
                    f"{self.setting.label}: {op.name} ({kind}) in {op.unit or 'the model'} cannot run on "
                    f"{self.setting.device.title} under {self.setting.runtime}, and no fallback is modelled for it")
            host, fmt, label = self.place(op, kind, kind in self.host_kinds)
            if host != on_host:
                switches += 1
                # The tensor crossing: the op's first input (entering or leaving the fallback processor).
                transfer += 4.0 * (numel(op.in_shapes[0]) if op.in_shapes else numel(op.out_shapes[0]))
                on_host = host
            plugin = op.name.rstrip("_") in self.plugins
            fuses = (head_kind is not None and not plugin and host == head_host
                     and kind in self.setting.fusion.get(head_kind, ())
                     and any(numel(shape) == previous_elements for shape in op.in_shapes))
            moved = float(op.bytes_read + op.bytes_written)
            if fuses:
                moved = max(0.0, moved - 2.0 * previous_bytes)
            else:
                head_kind = kind if kind in self.setting.fusion and not plugin else None
                head_host = host
            out_elements = numel(op.out_shapes[0]) if op.out_shapes else 0
            self.kind.append(_KIND_INDEX[real_kind])
            self.flops.append(op.flops * _tile_factor(op, kind, self.tiles[host]))
            split = max(1.0, _reduction(op, kind) / SPLIT_REDUCTION)
            self.parallelism.append(float(max(out_elements, 1)) * split)
            self.bytes.append(moved)
            self.launch.append(0.0 if fuses else 1.0)
            self.host.append(host)
            self.segment.append(index)
            self.fmt.append(fmt)
            self.label.append(label)
            previous_elements = out_elements
            previous_bytes = out_elements * _element_size(op)
        if on_host:
            switches += 1
            transfer += 4.0 * max(previous_elements, 0)
        self.switches.append(switches)
        self.transfer.append(transfer)

    def table(self, names: tuple[str, ...]) -> OpTable:
        return OpTable(np.asarray(self.kind, dtype=np.int64), np.asarray(self.flops, dtype=np.float64),
                       np.asarray(self.parallelism, dtype=np.float64), np.asarray(self.bytes, dtype=np.float64),
                       np.asarray(self.launch, dtype=np.float64),
                       np.asarray(self.host, dtype=bool), np.asarray(self.segment, dtype=np.int64), names,
                       np.asarray(self.switches, dtype=np.float64), np.asarray(self.transfer, dtype=np.float64),
                       np.asarray(self.fmt, dtype=np.int64), np.asarray(self.label, dtype=np.int64),
                       tuple(self.labels))


def build_table(ops: Sequence[Op], setting: Setting, *, by_unit: bool) -> OpTable:
    """The priced op table of ``ops`` under ``setting``.

    Args:
        ops: the traced ops, in execution order.
        setting: the target setting (fusion rules, fallback, unsupported kinds).
        by_unit: fuse within runs of equal ``Op.unit`` (Arch units) instead of over the whole list.

    Raises:
        UnsupportedOpError: an op's kind is in ``setting.unsupported``.
        UnsupportedPrecisionError: an op's number format is one the setting cannot run.
    """
    builder = _Builder(setting)
    segments = segments_of(ops, by_unit=by_unit)
    first = 0
    for index, (_, segment_ops) in enumerate(segments):
        builder.add_segment(index, segment_ops, first)
        first += len(segment_ops)
    return builder.table(tuple(name for name, _ in segments))
