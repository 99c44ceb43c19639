"""Cost of a model, traced from the real module: op list, FLOPs, bytes, params, MACs.

Costs come from running the module that :func:`nas.build` makes, never from a
second hand-written formula (DESIGN.md, "one source of truth"). Each unit of
:func:`nas.build.plan` (stem, downsampler, block, layout conversion, head) is
built on the ``meta`` device and run once on an empty input under a
``TorchDispatchMode`` that records every aten op it dispatches: its name, op
class, input and output shapes, dtype, FLOPs and bytes moved. Units with the
same signature (all six identical blocks of a stage) are traced once; the
result is kept in :data:`CACHE`, keyed by ``(unit signature, batch, dtype)``.
Within a trace, an aten op met before with the same inputs (shapes, strides,
dtypes, arguments) is replayed rather than run again (:mod:`nas.op_memo`):
the same records, at a fraction of the meta kernels' and decompositions' cost.
A block with a precision is traced as its float module (one trace serves all
its precisions; no fake quantisation shows up), and each op then names the
format it runs at (:attr:`Op.precision`, :mod:`nas.op_precision`).

Counting rules (per op, table-driven; the tables are in :mod:`nas.op_classes`,
completed by the ops the kinds declare):

* FLOPs of convolutions, matrix products and attention come from the formulas
  registered in ``torch.utils.flop_counter.flop_registry``; ops that have a
  decomposition are decomposed first, as ``FlopCounterMode`` does, so
  ``macs == FlopCounterMode total / 2`` on the same forward pass. On ``meta``,
  scaled-dot-product attention runs its math path and shows up as two ``bmm``
  and a softmax; each op of it names the call (:attr:`Op.attention_call`, :mod:`nas.op_attention`).
* Element-wise ops, activations, norms and softmax count one FLOP per output
  element; reductions and adaptive pools one per input element; windowed
  pools one per output element and window position; views, data movement and
  tensor creation none.
* Bytes read and written are the sizes of an op's input and output tensors;
  views and aliases move no bytes, and allocating an uninitialised tensor
  writes none.

:func:`profile_module` prices any ``nn.Module`` the same way (traced whole,
not cached), with each op attributed to the innermost submodule running it.

Example:
    >>> import nas
    >>> report = nas.profile(nas.zoo.get("poolformer_s12"))
    >>> report.ops[0].unit, report.ops[0].name, report.ops[0].out_shapes
    ('stem', 'aten.convolution', ((1, 64, 56, 56),))
    >>> report.by_class()["conv"] > 0.9 * report.flops
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nas.arch import Arch, Published
from nas.blocks.registry import ffn_parts
from nas.build import Unit
from nas.component import join_path
from nas.errors import ConfigError, NasError
from nas.limits import current as current_limits
from nas.lru import CacheInfo, LruCache
from nas.op_attention import AttentionCalls
from nas.op_classes import MAC_CLASSES, OP_CLASSES, SKIPPED, dilation_of, op_class, op_info
from nas.op_memo import MEMO, Capture, Replay, key_of, rebuild
from nas.op_precision import BLOCK_ROLES, FLOAT32, float_units, unit_formats

if TYPE_CHECKING:
    import pandas

__all__ = ["CACHE", "comparable_macs", "MAC_CLASSES", "OP_CLASSES", "CacheInfo", "CostReport", "Op", "check_limits",
           "float_units", "op_class", "profile", "profile_module", "unit_counts", "unit_ops"]

Metric = Literal["flops", "bytes", "bytes_read", "bytes_written"]
Shape = tuple[int, ...]

@dataclass(frozen=True, slots=True)
class Op:
    """One aten op of a traced forward pass.

    Attributes:
        unit: the unit it belongs to: an Arch path (``stages[1].blocks[0]``) for :func:`profile`, the
            dotted submodule name (``""`` for the root) for :func:`profile_module`.
        name: the aten op, e.g. ``aten.convolution``.
        op_class: one of :data:`OP_CLASSES` (conv, matmul, attention, norm, softmax, activation, ...).
        in_shapes: shapes of the tensor inputs (weights included), batch dimension included.
        out_shapes: shapes of the tensor outputs.
        dtype: the dtype it computes in (of its first output), e.g. ``float32``.
        flops: floating-point operations (a multiply-add counts 2).
        bytes_read: bytes of its tensor inputs; 0 for views.
        bytes_written: bytes of its tensor outputs; 0 for views and allocations.
        sources: indices (in the report's op list) of the ops whose outputs it reads; empty when it
            reads only the image and weights. These edges make the op graph (:mod:`nas.graph`).
        precision: the number format it runs at (:mod:`nas.op_precision`; ``fp32`` in a float32 model);
            ``dtype`` stays the traced dtype, since blocks are traced as their float module.
        dilation: a convolution's largest dilation, 1 for other ops (it sets the kind, :mod:`nas.latency.kinds`).
        attention_call: the ``scaled_dot_product_attention`` call it runs inside, numbered from 1 within its unit
            (its module for :func:`profile_module`), 0 outside any: a runtime may fuse the call into one kernel.
    """

    unit: str
    name: str
    op_class: str
    in_shapes: tuple[Shape, ...]
    out_shapes: tuple[Shape, ...]
    dtype: str
    flops: int
    bytes_read: int
    bytes_written: int
    sources: tuple[int, ...] = ()
    precision: str = FLOAT32
    dilation: int = 1
    attention_call: int = 0


_OP_COLUMNS = ("unit", "name", "op_class", "in_shapes", "out_shapes", "dtype", "flops", "bytes_read",
               "bytes_written", "precision")


@dataclass(frozen=True)
class CostReport:
    """The cost of one forward pass at ``batch``.

    Attributes:
        ops: every aten op in execution order.
        params: parameter count (tied parameters once).
        macs: multiply-accumulates of the conv, matmul and attention ops (their FLOPs / 2), whole batch.
        flops: FLOPs of every op, whole batch.
        bytes_read: bytes read by every op.
        bytes_written: bytes written by every op.
        batch: the batch size traced.
    """

    ops: tuple[Op, ...]
    params: int
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    batch: int = 1

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        """MACs in billions (whole batch)."""
        return self.macs / 1e9

    def by_class(self, metric: Metric = "flops") -> dict[str, float]:
        """``metric`` summed per op class, classes in order of first appearance.

        Args:
            metric: ``flops``, ``bytes_read``, ``bytes_written`` or ``bytes`` (read + written).
        """
        return self._group("op_class", metric)

    def by_unit(self, metric: Metric = "flops") -> dict[str, float]:
        """``metric`` summed per unit (Arch path or submodule), in execution order."""
        return self._group("unit", metric)

    def _group(self, field: str, metric: Metric) -> dict[str, float]:
        if metric not in ("flops", "bytes", "bytes_read", "bytes_written"):
            raise NasError(f"metric must be one of flops, bytes, bytes_read, bytes_written, got {metric!r}")
        out: dict[str, float] = {}
        for op in self.ops:
            value = op.bytes_read + op.bytes_written if metric == "bytes" else getattr(op, metric)
            key = getattr(op, field)
            out[key] = out.get(key, 0) + value
        return out

    def to_frame(self) -> pandas.DataFrame:
        """The ops as a DataFrame, one row per op, columns named like :class:`Op`'s fields."""
        import pandas

        return pandas.DataFrame({column: [getattr(op, column) for op in self.ops] for column in _OP_COLUMNS},
                                columns=list(_OP_COLUMNS))


# -- recording ------------------------------------------------------------------


def _tensors(values: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for value in values:
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(item for item in value if isinstance(item, torch.Tensor))
    return out


_Record = tuple[str, str, str, tuple[Shape, ...], tuple[Shape, ...], str, int, int, int, tuple[int, ...], int, int]
_INPUT = -1  # stands for the traced module's input in a record's sources


class _Recorder(TorchDispatchMode):
    """Records every aten op dispatched while active, as :class:`Op` field tuples.

    Data flow is followed by tensor identity: ``producer`` maps ``id(tensor)`` to the index of
    the record that made it (``_INPUT`` for the module's input), and ``alive`` keeps those
    tensors referenced so their ids are not reused during the trace.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: nothing is compiled under a trace, and torch would otherwise wrap every dispatch in a
        dynamo-disabling frame, a fixed cost on each of the tens of ops a unit dispatches."""
        return False

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = []
        self.units: list[str] = []
        self.producer: dict[int, int] = {}
        self.alive: list[torch.Tensor] = []
        self.calls = AttentionCalls()  # the attention call running, which each record names

    def mark_input(self, tensor: torch.Tensor) -> None:
        self.producer[id(tensor)] = _INPUT
        self.alive.append(tensor)

    def output_of(self, tensor: Any) -> int:
        """Index of the record that produced ``tensor`` (``_INPUT`` if it is the input passed through)."""
        return self.producer.get(id(tensor), _INPUT)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if not isinstance(func, torch._ops.OpOverload):
            return NotImplemented
        if func in SKIPPED:
            return func(*args, **kwargs)
        keyed = key_of(func, args, kwargs, self.producer)
        if keyed is None:
            return self._record(func, args, kwargs)
        key, tensors, producers = keyed
        replay = MEMO.get(key)
        if replay is not None:
            return self._replay(replay, tensors, producers)
        start = len(self.records)
        out = self._record(func, args, kwargs)
        captured = Capture(tensors, producers, start).replay(self.records[start:], out, self.producer)
        if captured is not None:
            MEMO.put(key, captured)
        return out

    def _replay(self, replay: Replay, tensors: list[torch.Tensor], producers: list[int | None]) -> Any:
        """Append what a call with this key recorded before and return outputs of the same layout
        (:mod:`nas.op_memo`)."""
        start = len(self.records)
        unit = self.units[-1] if self.units else ""

        def source(code: int) -> int:
            return start + code if code >= 0 else producers[-1 - code]  # type: ignore[return-value]

        for record in replay.records:
            sources = tuple(sorted({source(code) for code in record[8]}))
            self.records.append((unit, *record[:8], sources, record[9], self.calls.current))
        made: list[torch.Tensor] = []
        out = rebuild(replay.outputs, tensors, made)
        for tensor, code in zip(made, replay.producers, strict=True):
            if code is not None:
                self.producer[id(tensor)] = source(code)
        self.alive.extend(made)
        return out

    def _record(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run ``func`` (decomposed where it has a decomposition) and record it."""
        info = op_info(func)
        if info.decomposes:
            # As FlopCounterMode does, so both see the same ops (and the MACs agree).
            with self:
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        outputs = _tensors(out if isinstance(out, (list, tuple)) else (out,))
        if not outputs:
            return out
        inputs = _tensors(args)
        if kwargs:
            inputs.extend(_tensors(kwargs.values()))
        if info.formula is not None:
            flops = int(info.formula(*args, **kwargs, out_val=out))
        else:
            flops = info.rule(args, inputs, outputs)
        sources = tuple(sorted({self.producer[id(t)] for t in inputs if id(t) in self.producer}))
        index = len(self.records)
        for tensor in outputs:
            self.producer[id(tensor)] = index
        self.alive.extend(outputs)
        read = written = 0
        if info.moves_bytes:
            read = sum(t.numel() * t.element_size() for t in inputs)
            written = sum(t.numel() * t.element_size() for t in outputs)
        self.records.append((
            self.units[-1] if self.units else "", info.name, info.op_class, tuple(tuple(t.shape) for t in inputs),
            tuple(tuple(t.shape) for t in outputs), str(outputs[0].dtype).removeprefix("torch."), flops, read,
            written, sources, dilation_of(info, args, kwargs), self.calls.current))
        return out


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the trace and restore every submodule's flag after."""
    flags = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in flags:
            sub.training = training


@contextmanager
def _tracking(module: nn.Module, recorder: _Recorder) -> Iterator[None]:
    """Attribute ops to the innermost running submodule (local hooks, removed after)."""

    def enter(name: str, *_: Any) -> None:
        recorder.units.append(name)

    def leave(*_: Any) -> None:
        recorder.units.pop()

    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(partial(enter, name)))
        handles.append(sub.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _state(module: nn.Module, device: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        cast = dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype
        state[name] = torch.zeros(tensor.shape, device=device, dtype=cast)
    return state


def _on(module: nn.Module, device: str, dtype: torch.dtype | None) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.device.type == device and (dtype is None or not t.is_floating_point() or t.dtype == dtype)
               for t in tensors)


def _run(module: nn.Module, shape: Shape, dtype: torch.dtype, device: str, param_dtype: torch.dtype | None,
         track: bool) -> tuple[list[_Record], int]:
    recorder = _Recorder()
    x = torch.zeros(shape, device=device, dtype=dtype)
    recorder.mark_input(x)
    with torch.no_grad(), _eval_mode(module), (_tracking(module, recorder) if track else nullcontext()):
        if device == "meta" and _on(module, device, param_dtype):
            with recorder.calls, recorder:
                out = module(x)
        else:
            # Swap in stand-in weights on ``device``: the caller's module is not moved or changed.
            state = _state(module, device, param_dtype)
            with recorder.calls, recorder:
                out = torch.func.functional_call(module, state, (x,))
    return recorder.records, recorder.output_of(out)


def _trace(module: nn.Module, shape: Shape, dtype: torch.dtype, param_dtype: torch.dtype | None,
           track: bool, path: str = "") -> tuple[list[_Record], int]:
    """Trace on meta (CPU with zeros for data-dependent ops); the records and the output's producer.

    The CPU fallback allocates the weights and the input, so both are held to ``NAS_MAX_PARAMS`` first.
    """
    try:
        return _run(module, shape, dtype, "meta", param_dtype, track)
    except (NotImplementedError, RuntimeError):
        limits = current_limits()
        limits.check("params", sum(p.numel() for p in module.parameters()), join_path(path, "params"))
        limits.check("params", math.prod(shape), join_path(path, "input"))
        return _run(module, shape, dtype, "cpu", param_dtype, track)


# -- the cache --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _UnitCost:
    """One traced unit; for blocks, each record's first field is the submodule that ran it and ``ffn`` names the
    FFN submodules, from which :func:`nas.op_precision.unit_formats` gives each op its format."""

    records: tuple[_Record, ...]
    output: int
    params: int
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    ffn: tuple[str, ...] = ()


def _summarise(records: Sequence[_Record], output: int, params: int, ffn: tuple[str, ...] = ()) -> _UnitCost:
    mac_flops = sum(record[6] for record in records if record[2] in MAC_CLASSES)
    return _UnitCost(tuple(records), output, params, mac_flops // 2, sum(record[6] for record in records),
                     sum(record[7] for record in records), sum(record[8] for record in records), ffn)


CACHE = LruCache[tuple[str, int, torch.dtype], _UnitCost](maxsize=4096)
"""The process-wide cache :func:`profile` uses: traced units by ``(unit signature, batch, dtype)``, the least
recently used dropped first."""


# -- public entry points -------------------------------------------------------------


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise NasError(f"batch must be an int >= 1, got {batch!r}")


def _unit_cost(unit: Unit, batch: int, dtype: torch.dtype) -> _UnitCost:
    return CACHE.get_or_make((unit.key, batch, dtype), lambda: _trace_unit(unit, batch, dtype))


def _trace_unit(unit: Unit, batch: int, dtype: torch.dtype) -> _UnitCost:
    try:
        module = unit.make(device="meta", dtype=dtype)
    except (NotImplementedError, RuntimeError):
        module = unit.make(device="cpu", dtype=dtype)
    blocks = unit.role in BLOCK_ROLES
    records, output = _trace(module, (batch, *unit.in_shape), dtype, dtype, track=blocks, path=unit.path)
    ffn = tuple(name for name, _ in ffn_parts(module)) if blocks else ()
    return _summarise(records, output, sum(p.numel() for p in module.parameters()), ffn)


def comparable_macs(report: CostReport, published: Published) -> int:
    """``report``'s MACs counted as ``published`` counts them: without the attention products (``aten.bmm``)
    where its source's counter leaves them out (``attention_products: false``)."""
    if published.attention_products:
        return report.macs
    return report.macs - sum(op.flops for op in report.ops if op.name == "aten.bmm") // 2


def profile(arch: Arch, *, batch: int = 1, dtype: torch.dtype = torch.float32) -> CostReport:
    """Trace ``arch`` unit by unit on meta tensors: op list, params, MACs, FLOPs, bytes.

    Each distinct unit signature is traced once per ``(batch, dtype)`` and kept in
    :data:`CACHE`, so repeated blocks and repeated calls cost a lookup.

    Args:
        arch: the architecture; priced as :func:`nas.build` builds it, in eval mode.
        batch: images per forward pass; MACs, FLOPs and bytes are for the whole batch.
        dtype: the dtype of weights and activations.

    Raises:
        NasError: ``batch`` is not a positive int, or the Arch cannot be built.

    Example:
        >>> import nas
        >>> report = nas.profile(nas.zoo.get("poolformer_s12"))
        >>> round(report.params_m, 2), round(report.gmacs, 2)
        (11.92, 1.81)
    """
    _check_batch(batch)
    units = float_units(arch)
    costs = [_unit_cost(unit, batch, dtype) for unit in units]
    return CostReport(_assemble(units, costs, arch), sum(c.params for c in costs), sum(c.macs for c in costs),
                      sum(c.flops for c in costs),
                      sum(c.bytes_read for c in costs), sum(c.bytes_written for c in costs), batch)


def _assemble(units: Sequence[Unit], costs: Sequence[_UnitCost], arch: Arch | None = None) -> tuple[Op, ...]:
    """The ops of ``units`` in order, each unit's first ops reading the output of the unit before it; with
    ``arch`` (the Arch the units were planned from, precisions included), each op carries its format."""
    ops: list[Op] = []
    previous_output = _INPUT  # the image
    for unit, unit_cost in zip(units, costs, strict=True):
        offset = len(ops)
        formats = unit_formats(unit, unit_cost.records, unit_cost.ffn, arch)
        for number, record in enumerate(unit_cost.records):
            sources = tuple(previous_output if source == _INPUT else offset + source for source in record[9])
            sources = tuple(source for source in sources if source != _INPUT)
            precision = FLOAT32 if formats is None else formats[number]
            ops.append(Op(unit.path, *record[1:9], sources, precision, *record[10:]))
        if unit_cost.output != _INPUT:
            previous_output = offset + unit_cost.output
    return tuple(ops)


def unit_ops(units: Sequence[Unit], *, batch: int = 1, dtype: torch.dtype = torch.float32,
             arch: Arch | None = None) -> tuple[Op, ...]:
    """The ops of some units of one plan, listed as :func:`profile` lists them, from the same :data:`CACHE`.

    For pricing a few new units of an Arch without assembling all of its ops
    (:class:`nas.latency.batch.BatchPredictor`): an op's fields and its sources inside its own unit are
    those of :func:`profile`'s list; a unit's first ops read the output of the unit before it *in
    ``units``*, which is its predecessor in the plan only when ``units`` is the whole plan.

    Args:
        units: units of :func:`float_units` (a plan of the Arch without its precisions).
        arch: the Arch they were planned from, whose precisions give the ops their formats (None: all fp32).

    Raises:
        NasError: ``batch`` is not a positive int, or a unit cannot be built.
    """
    _check_batch(batch)
    return _assemble(units, [_unit_cost(unit, batch, dtype) for unit in units], arch)


def check_limits(arch: Arch, *, source: str | None = None) -> CostReport:
    """``arch``'s cost at batch 1, after checking its parameters and MACs against the limits (:mod:`nas.limits`).

    Counted on ``meta`` (:func:`profile`), so a model too large to build is refused before anything is
    allocated: commands call this before they build or price a point.

    Raises:
        ConfigError: the parameters or MACs exceed ``NAS_MAX_PARAMS`` or ``NAS_MAX_MACS`` (naming the file).
    """
    try:
        report = profile(arch)
        limits = current_limits()
        limits.check("params", report.params, "params")
        limits.check("macs", report.macs, "macs")
    except ConfigError as exc:
        raise exc.located(source=source) from None
    return report


def unit_counts(units: Sequence[Unit], *, batch: int = 1,
                dtype: torch.dtype = torch.float32) -> list[tuple[str, int, int]]:
    """``(unit path, parameters, MACs)`` of each of ``units`` (units of :func:`nas.build.plan`), in order.

    The same numbers :func:`profile` adds up (over the whole plan, its ``params`` and ``macs`` are the
    sums), from the same :data:`CACHE`, without assembling the op list: :class:`nas.latency.batch.CostTable`
    prices params and MACs per unit with it.

    Raises:
        NasError: ``batch`` is not a positive int, or a unit cannot be built.
    """
    _check_batch(batch)
    out = []
    for unit in units:
        cost = _unit_cost(unit, batch, dtype)
        out.append((unit.path, cost.params, cost.macs))
    return out


def profile_module(module: nn.Module, input_shape: Sequence[int], *, batch: int = 1,
                   dtype: torch.dtype | None = None) -> CostReport:
    """Trace any module's forward pass on one input of ``(batch, *input_shape)``.

    The module is traced whole and not cached. It runs in eval mode on meta
    tensors (stand-in weights are swapped in, so the caller's module is neither
    moved nor changed; training flags are restored); if it cannot run on meta
    (data-dependent ops such as ``nonzero`` or ``.item()``), it runs on CPU with
    zero-filled weights and input. Ops are attributed to the innermost submodule.

    Args:
        module: any module taking one tensor.
        input_shape: the input's shape without the batch dimension, e.g. ``(3, 224, 224)``.
        batch: the batch size.
        dtype: dtype of the input and of floating weights; by default the module's first floating
            parameter's dtype (float32 if it has none).

    Raises:
        NasError: ``batch`` or ``input_shape`` is not positive ints.

    Example:
        >>> import torch.nn as nn
        >>> from nas.cost import profile_module
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
        >>> report = profile_module(net, (3, 32, 32))
        >>> report.macs == 8 * 32 * 32 * 3 * 3 * 3 + 8 * 32 * 32 * 10
        True
    """
    _check_batch(batch)
    shape = tuple(input_shape)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in shape):
        raise NasError(f"input_shape must be positive ints (without the batch dimension), got {input_shape!r}")
    param_dtype = dtype
    if dtype is None:
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    records, output = _trace(module, (batch, *shape), dtype, param_dtype, track=True)
    cost = _summarise(records, output, sum(p.numel() for p in module.parameters()))
    ops = tuple(Op(*record[:9], tuple(s for s in record[9] if s != _INPUT), dilation=record[10],
                   attention_call=record[11]) for record in records)
    return CostReport(ops, cost.params, cost.macs, cost.flops,
                      cost.bytes_read, cost.bytes_written, batch)
