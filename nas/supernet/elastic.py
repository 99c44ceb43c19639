"""Elastic weights: max-size shared tensors, and the views of them that any subnet's units use.

The supernet does not have an elastic version of each mixer. A subnet is built
with the ordinary :func:`nas.build.plan` units (a *skeleton*, built once per
unit signature), and every parameter and persistent buffer of a unit is a view
of one shared, max-size tensor, but for the fake quantisers' (see Precision below):

* **Keys.** A unit tensor is stored under ``(position, group, local name)``.
  The position is ``stem``, ``stages.S.downsample``, ``stages.S.blocks.I`` or
  ``head``. In a block, tensors inside an FFN module (the registered class of
  the block's ``ffn``) go to group ``ffn0``, ``ffn1``, ... in module order, so
  the FFN at a position is shared by every mixer kind there (a mixer that
  declares ``ffns_by_path`` holds FFNs at nested positions: they go to
  ``ffn@<path in the unit>`` instead); tensors inside
  the mixer module go to ``mixer=<kind>``; the template's norms and layer
  scales go to ``block=<kind>`` (a norm per mixer kind, in front of the shared
  FFN). Stems, downsamplers and heads use ``<role>=<kind>``. Kinds whose
  options change the meaning of rows (EfficientFormer's per-head ``key_dim``)
  declare them in their config's ``key_fields``; those options join the group
  name, so each value gets weights of its own. A block's tensors exist at
  every position of its stage, except those of a kind that holds several
  layers of the stage (``holds_layers``), which exist where the scan met it
  (:class:`Capacity`).
* **Views.** A needed tensor is a slice of the stored one
  (:class:`~nas.supernet.slicing.Rule`): prefixes ``[:d0, :d1, ...]`` by
  default; convolution kernels are cut from the centre (a 3x3 is the middle of
  a 7x7); what a kind declares in its config's ``sharing``
  (:mod:`nas.blocks.contract`) overrides that: fused ``qkv`` / ``kv`` rows and
  the concatenated neighbours of Swin's patch merging are cut per part, Swin's
  relative-position table as a centred 2-D square. The declarations of a
  block's mixer apply to the tensors of its mixer module, those of its FFN to
  its FFN modules, those of a stem, downsampler or head to the whole unit.
  A 1x1 convolution and a linear layer of the same name share
  one tensor (trailing singleton dimensions are dropped). Slicing is
  differentiable, so gradients reach the shared tensor; BatchNorm statistics
  are prefix views too, so training a subnet updates the shared statistics in
  place.
* **Precision.** A block's precision is part of its unit signature (a
  skeleton per precision, its layers fake-quantised by ``build``) but not of
  any storage key: the same float weights serve every precision, rounded to
  the sampled one in each forward, as FLIQS shares them one-shot
  (arXiv:2308.03290). The quantisers stay uncalibrated, so activation and
  weight ranges are taken per batch (dynamic min-max): no calibration state is
  shared across precisions or subnets. A subnet extracted for deployment is
  calibrated afterwards (``nas quantize``).
* **Capacity.** The max shapes come from a scan of sampled points
  (:class:`Capacity`), aggregated per *stage* rather than per position: every
  block position of a stage, up to the deepest seen, gets the largest shape
  seen anywhere in the stage for each ``(group, name)``. A rare deep position
  therefore never lacks a shape that an earlier position needed. A subnet
  needing more than was allocated raises :class:`CapacityError` naming the
  tensor; the trade-off against growing lazily is that the set of tensors and
  their shapes is fixed before training, as optimisers, checkpoints and
  DistributedDataParallel need.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import Arch, Block, Component
from nas.blocks.contract import Sharing, declared_sharing
from nas.blocks.fakequant import Quantizer
from nas.blocks.registry import module_class
from nas.build import Unit, plan
from nas.errors import NasError
from nas.lru import LruCache
from nas.supernet.sigma import spectral_step
from nas.supernet.slicing import Rule, canonical, pad, rule_for

__all__ = [
    "SHARING_VERSION",
    "Capacity",
    "CapacityError",
    "Init",
    "SharedStore",
    "Slot",
    "Storage",
    "UnitLayout",
    "Layouts",
]

Shape = tuple[int, ...]


class CapacityError(NasError):
    """A subnet needs a tensor larger than (or absent from) what the supernet allocated."""


SHARING_VERSION = 2
"""What shared weights mean; bumped when a fix changes it, so weights trained before are not reused.
2: patch merging's concatenated neighbours are cut per neighbour (they were cut as one prefix)."""


# ---------------------------------------------------------------------------
# what a unit needs


@dataclass(frozen=True)
class Init:
    """How a stored tensor starts: a constant, or random with the mean and spread of a module's own init."""

    constant: float | None
    mean: float = 0.0
    std: float = 0.0

    @classmethod
    def of(cls, tensor: torch.Tensor) -> Init:
        values = tensor.detach().reshape(-1).numpy()  # numpy: a tensor op per statistic is slow in a scan
        if values.size == 0:
            return cls(0.0)
        low, high = float(values.min()), float(values.max())
        if high - low <= 1e-12 * max(1.0, abs(high)):
            return cls(low)
        values = values.astype(np.float64)
        return cls(None, float(values.mean()), float(values.std(ddof=1)))

    def fill(self, tensor: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            if self.constant is not None or not tensor.is_floating_point():
                tensor.fill_(self.constant or 0.0)
                return
            bound = math.sqrt(3.0) * self.std  # uniform with the module init's variance
            tensor.uniform_(-bound, bound, generator=generator).add_(self.mean)

    def to_list(self) -> list[float | None]:
        return [self.constant, self.mean, self.std]


@dataclass(frozen=True)
class Slot:
    """One tensor of one unit and where it lives.

    Attributes:
        name: its state-dict name inside the unit module.
        scope: the capacity scope (``stem``, ``stages.1.downsample``, ``stages.1.blocks``, ``head``).
        entry: ``group|local name`` inside the scope.
        key: the storage key (scope position + entry).
        shape: the shape the unit needs.
        rule: how it is cut from the stored tensor.
        declared: the declaration on its kind's config that gave the rule.
    """

    name: str
    scope: str
    entry: str
    key: str
    shape: Shape
    dtype: torch.dtype
    parameter: bool
    rule: Rule
    init: Init
    linear: bool = False  # a linear or 1x1-conv weight (sigmaReparam applies)
    declared: Sharing | None = None  # what its kind declared about it (nas.blocks.contract); None: nothing


@dataclass
class UnitLayout:
    """A unit's skeleton module (tensors on ``meta``) and its slots; the skeleton is shared by equal signatures."""

    path: str
    stage: int
    module: nn.Module
    slots: list[Slot]
    parameters: int
    role: str  # the unit's role (nas.build.Unit.role)
    index: int | None  # a block's number within its stage
    holds_layers: bool = False  # a block whose mixer holds several layers of its stage (Component.holds_layers)


def _storage_key(position: str, entry: str) -> str:
    return f"{position}|{entry}".replace(".", ":")


def _group_suffix(component: Component) -> str:
    return "".join(f",{name}={getattr(component, name)}" for name in component.key_fields)


def _owner(module: nn.Module, name: str) -> nn.Module:
    owner = module
    for part in name.split(".")[:-1]:
        owner = getattr(owner, part)
    return owner


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    return name[len(prefix) + 1:] if name.startswith(prefix + ".") else None


def _place(unit: Unit) -> tuple[str, str]:
    """``(scope, position)`` of a unit: a block's scope is its stage's blocks, its position its own number."""
    if unit.role == "block":
        return f"stages.{unit.stage}.blocks", f"stages.{unit.stage}.blocks.{unit.index}"
    if unit.role == "downsample":
        return f"stages.{unit.stage}.downsample", f"stages.{unit.stage}.downsample"
    if unit.role in ("stem", "head"):
        return unit.role, unit.role
    return unit.path, unit.path  # a layout conversion: it holds no tensors


@dataclass(frozen=True)
class _Part:
    """A submodule of a unit whose tensors form one group, with the component that declares their sharing."""

    prefix: str
    group: str
    component: Component | None


def _parts(unit: Unit, module: nn.Module) -> tuple[list[_Part], _Part]:
    """The FFN and mixer parts of a unit (searched in this order) and the part that holds the rest."""
    if unit.role == "convert":
        return [], _Part("", "convert", None)
    if unit.role != "block":
        component = unit.component
        return [], _Part("", f"{unit.role}={component.kind}{_group_suffix(component)}", component)
    block: Block = unit.component
    kind, suffix = block.mixer.kind, _group_suffix(block.mixer)
    mixer_cls, ffn_cls = module_class("mixer", block.mixer), module_class("ffn", block.ffn)
    ffn_paths: list[str] = []
    mixer_path: str | None = None
    for sub_name, sub in module.named_modules():
        if mixer_path is None and isinstance(sub, mixer_cls):
            mixer_path = sub_name
        if type(sub) is ffn_cls and not any(sub_name.startswith(p + ".") for p in ffn_paths if p):
            ffn_paths.append(sub_name)
    by_path = block.mixer.ffns_by_path
    parts = [_Part(path, f"ffn@{path}" if by_path else f"ffn{index}", block.ffn)
             for index, path in enumerate(ffn_paths)]
    if mixer_path is not None:
        parts.append(_Part(mixer_path, f"mixer={kind}{suffix}", block.mixer))
    return parts, _Part("", f"block={kind}{suffix}", None)


def _raw_slots(unit: Unit, module: nn.Module) -> list[Slot]:
    """The slots of a freshly built unit module, without their position (``scope`` and ``key`` empty).

    They depend only on the unit's signature, so they are computed once per
    signature; real tensors are needed for the init statistics.
    """
    parts, rest = _parts(unit, module)
    parameters = dict(module.named_parameters())
    own = _quantizer_state(module)
    slots = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        if name in own:
            continue
        part, local = next(((part, local) for part in parts if (local := _strip(name, part.prefix)) is not None),
                           (rest, name))
        declared = declared_sharing(part.component.sharing, local) if part.component is not None else None
        owner = _owner(module, name)
        leaf = name.rsplit(".", 1)[-1]
        is_conv = isinstance(owner, nn.modules.conv._ConvNd) and leaf == "weight"
        linear = leaf == "weight" and (isinstance(owner, nn.Linear) or bool(
            is_conv and tensor.ndim == 4 and tuple(tensor.shape[2:]) == (1, 1) and getattr(owner, "groups", 0) == 1))
        slots.append(Slot(name=name, scope="", entry=f"{part.group}|{local}", key="", shape=tuple(tensor.shape),
                          dtype=tensor.dtype, parameter=name in parameters,
                          rule=rule_for(declared, conv_weight=is_conv), init=Init.of(tensor), linear=linear,
                          declared=declared))
    return slots


def _quantizer_state(module: nn.Module) -> set[str]:
    """State-dict names of the fake quantisers' buffers in a unit: they are the skeleton's own, not shared.

    Precision is not part of a storage key, so a layer's weights are the same tensors at every precision
    (FLIQS's one-shot sharing, arXiv:2308.03290) and only the quantisers differ between skeletons. They
    stay uncalibrated, so every forward takes its ranges from the batch and the weights it sees: no
    range learnt under one subnet's precision leaks into another's.
    """
    return {f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules() if isinstance(sub, Quantizer)
            for name, _ in sub.named_buffers(recurse=False)}


def _to_meta(module: nn.Module) -> None:
    """Replace a skeleton's parameters and persistent buffers by meta tensors (they are always passed in);
    fake quantisers keep theirs (:func:`_quantizer_state`)."""
    for sub in module.modules():
        if isinstance(sub, Quantizer):
            continue
        for name, parameter in list(sub._parameters.items()):
            if parameter is not None:
                sub._parameters[name] = nn.Parameter(torch.empty_like(parameter, device="meta"),
                                                     requires_grad=parameter.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                sub._buffers[name] = torch.empty_like(buffer, device="meta")


def _move_derived(module: nn.Module, device: torch.device) -> None:
    """Move a skeleton's derived (non-persistent) buffers and its fake quantisers' buffers to ``device``."""
    for sub in module.modules():
        if isinstance(sub, Quantizer):
            sub.to(device)
            continue
        for name in sub._non_persistent_buffers_set:
            buffer = sub._buffers.get(name)
            if buffer is not None:
                sub._buffers[name] = buffer.to(device)


class Layouts:
    """Per-arch unit layouts, cached: skeletons per unit signature, slots per (position, signature).

    Skeletons are built on the CPU (derived buffers such as Swin's shift mask
    need real values), their parameters then replaced by ``meta`` tensors, so
    a cached skeleton costs only its derived buffers. Caches are bounded LRU.
    """

    def __init__(self, *, max_units: int = 8192, max_archs: int = 512, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._units = LruCache[tuple[str, str], UnitLayout](maxsize=max_units)
        self._skeletons = LruCache[str, tuple[nn.Module, list[Slot]]](maxsize=max_units)
        self._archs = LruCache[str, list[UnitLayout]](maxsize=max_archs)

    def of(self, arch: Arch) -> list[UnitLayout]:
        """The layouts of ``arch``'s units in execution order (``arch`` at the scale it is built at).

        Raises:
            NasError: ``arch`` clusters tokens: that is an inference-time change of a trained model
                (arXiv:2210.01035), not a subnet to train.
        """
        clustered = [index for index, stage in enumerate(arch.stages) if stage.clustering is not None]
        if clustered:
            raise NasError(f"stages[{clustered[0]}].clustering: token clustering is applied to a trained model "
                           "without training; the supernet trains and extracts Archs without it")
        return self._archs.get_or_make(arch.id, lambda: [self._unit(unit) for unit in plan(arch).units])

    def _unit(self, unit: Unit) -> UnitLayout:
        return self._units.get_or_make((unit.path, unit.key), lambda: self._layout(unit))

    def _layout(self, unit: Unit) -> UnitLayout:
        module, raw = self._skeletons.get_or_make(unit.key, lambda: self._skeleton(unit))
        scope, position = _place(unit)
        slots = [dataclasses.replace(slot, scope=scope, key=_storage_key(position, slot.entry)) for slot in raw]
        count = sum(slot_numel(slot) for slot in slots if slot.parameter)
        holds_layers = unit.role == "block" and unit.component.mixer.holds_layers
        return UnitLayout(unit.path, unit.stage, module, slots, count, unit.role, unit.index, holds_layers)

    def _skeleton(self, unit: Unit) -> tuple[nn.Module, list[Slot]]:
        with torch.random.fork_rng(devices=[]):  # the init values only give statistics; keep them fixed
            torch.manual_seed(0)
            module = unit.make()
        raw = _raw_slots(unit, module)
        built = sum(slot_numel(slot) * slot.dtype.itemsize for slot in raw)
        _to_meta(module)
        if built >= _LARGE_SKELETON_BYTES:
            _return_freed_memory()
        if self.device.type != "cpu":
            _move_derived(module, self.device)
        return module, raw


_LARGE_SKELETON_BYTES = 64 << 20


@functools.cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def _return_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc; a no-op elsewhere).

    A full-width scan builds and frees thousands of skeletons of hundreds of MB. glibc raises its mmap
    threshold after such frees, so later tensors come from the heap, and the freed pages stay in the
    process: planning ``metaformer`` at full width grew past 24 GB and was killed for memory.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def slot_numel(slot: Slot) -> int:
    return math.prod(slot.shape)


# ---------------------------------------------------------------------------
# capacity: which tensors to allocate, at which max shapes


@dataclass
class _Entry:
    shape: Shape
    dtype: torch.dtype
    parameter: bool
    rule: str
    init: Init
    linear: bool
    numel: int


@dataclass
class Capacity:
    """Max shapes per ``(scope, group|name)`` and the deepest block position per stage, from seen subnets.

    A block entry is allocated at every position of its stage up to the deepest seen, so that a kind met
    at one position in the scan runs at any. Entries that only blocks holding several layers use
    (``Component.holds_layers``) are allocated where such a block was seen instead: copies of a stage
    body's layers at every position would multiply the supernet by the stage's depth.
    """

    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)
    positions: dict[tuple[str, str], set[int] | None] = field(default_factory=dict)  # None: every position

    def add(self, layouts: Iterable[UnitLayout]) -> None:
        """Grow to cover one subnet (its layouts, as :meth:`Layouts.of` gives them)."""
        for layout in layouts:
            if layout.role == "block" and layout.index is not None:
                scope = f"stages.{layout.stage}.blocks"
                self.depths[scope] = max(self.depths.get(scope, 0), layout.index + 1)
            for slot in layout.slots:
                self._place(slot, layout)
                shape = canonical(slot.shape)
                numel = slot_numel(slot)
                rule = slot.rule.id
                entry = self.entries.get((slot.scope, slot.entry))
                if entry is None:
                    self.entries[(slot.scope, slot.entry)] = _Entry(shape, slot.dtype, slot.parameter, rule,
                                                                    slot.init, slot.linear, numel)
                    continue
                compatible = entry.rule == rule or {entry.rule, rule} <= {"prefix", "conv"}
                if not compatible or entry.dtype != slot.dtype or entry.parameter != slot.parameter:
                    raise NasError(f"{slot.scope}|{slot.entry}: two units disagree on how this shared tensor is "
                                   f"used ({entry.rule}/{entry.dtype} vs {rule}/{slot.dtype}); give the kind its "
                                   "own weights with key_fields on its config")
                rank = max(len(entry.shape), len(shape))
                entry.shape = tuple(max(a, b) for a, b in zip(pad(entry.shape, rank), pad(shape, rank),
                                                              strict=True))
                entry.linear = entry.linear and slot.linear
                entry.rule = "conv" if "conv" in (entry.rule, rule) else entry.rule
                if numel > entry.numel:
                    entry.numel, entry.init = numel, slot.init

    def _place(self, slot: Slot, layout: UnitLayout) -> None:
        key = (slot.scope, slot.entry)
        pinned = layout.holds_layers and layout.index is not None
        if not pinned:
            self.positions[key] = None
        elif (seen := self.positions.setdefault(key, set())) is not None:
            seen.add(layout.index)

    def storage(self) -> list[Storage]:
        """One storage record per position: block entries at every position up to the depth, or where seen."""
        out = []
        for (scope, entry_name), entry in sorted(self.entries.items()):
            if scope.endswith(".blocks"):
                seen = self.positions.get((scope, entry_name))
                indices = range(self.depths[scope]) if seen is None else sorted(seen)
                positions = [f"{scope}.{index}" for index in indices]
            else:
                positions = [scope]
            for position in positions:
                out.append(Storage(_storage_key(position, entry_name), entry.shape, entry.dtype, entry.parameter,
                                   entry.init, entry.linear))
        return out


@dataclass(frozen=True)
class Storage:
    """One shared tensor: its key, max shape, dtype, whether it is trained, and how it starts."""

    key: str
    shape: Shape
    dtype: torch.dtype
    parameter: bool
    init: Init
    linear: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shape": list(self.shape), "dtype": str(self.dtype).removeprefix("torch."),
                "parameter": self.parameter, "init": self.init.to_list(), "linear": self.linear}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Storage:
        constant, mean, std = data["init"]
        return cls(data["key"], tuple(data["shape"]), getattr(torch, data["dtype"]), bool(data["parameter"]),
                   Init(constant, mean, std), bool(data.get("linear", False)))


class SharedStore(nn.Module):
    """The shared tensors, registered under their storage keys (parameters and buffers).

    Keys look like ``stages:2:blocks:5|mixer=attention|qkv:weight`` (dots are not
    allowed in parameter names). With ``sigma_reparam``, every linear weight
    (linear layers and 1x1 convolutions) is used as ``gamma / sigma(W) * W``
    with ``sigma`` the spectral norm of the *sliced* weight, estimated by one
    power iteration per training forward (Zhai et al., arXiv:2303.06296).
    """

    def __init__(self, records: list[Storage], *, seed: int, sigma_reparam: bool = False):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.records = {record.key: record for record in records}
        self.sigma_reparam = sigma_reparam
        for record in records:
            tensor = torch.empty(record.shape, dtype=record.dtype)
            record.init.fill(tensor, generator)
            if record.parameter:
                self.register_parameter(record.key, nn.Parameter(tensor))
            else:
                self.register_buffer(record.key, tensor)
            if sigma_reparam and record.linear and record.parameter:
                rows = record.shape[0]
                vector = torch.randn(rows, generator=generator)
                self.register_buffer(f"{record.key}|u", vector / vector.norm())
                self.register_parameter(f"{record.key}|gamma", nn.Parameter(torch.ones(())))

    def check(self, slot: Slot) -> str:
        """Empty if ``slot`` fits the allocated tensor, else the reason."""
        record = self.records.get(slot.key)
        if record is None:
            return f"{slot.key}: not allocated (a position or kind the supernet never saw)"
        reason = slot.rule.check(record.shape, canonical(slot.shape))
        return f"{slot.key}: {reason}" if reason else ""

    def tensor(self, key: str) -> torch.Tensor:
        """The shared tensor (parameter or buffer) stored under ``key``."""
        found = self._parameters.get(key)
        if found is not None:
            return found
        buffer = self._buffers[key]
        assert buffer is not None  # registered from a record, never None
        return buffer

    def view(self, slot: Slot) -> torch.Tensor:
        """The tensor ``slot`` needs: a differentiable slice of its shared tensor."""
        stored = self.tensor(slot.key)
        shape = slot.shape
        out = slot.rule.view(stored, canonical(shape))
        if self.sigma_reparam and slot.linear and self.records[slot.key].linear:
            out = self._sigma(slot.key, out)
        return out if out.shape == shape else out.reshape(shape)

    def _sigma(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        rows = weight.shape[0]
        state = self.tensor(f"{key}|u")
        sigma, left = spectral_step(weight.reshape(rows, -1), state[:rows], update=self.training)
        if self.training:
            with torch.no_grad():
                state[:rows] = left
        return weight * (self.tensor(f"{key}|gamma") / sigma.clamp_min(1e-12))

    def describe(self) -> list[dict[str, Any]]:
        return [record.to_dict() for record in self.records.values()]
