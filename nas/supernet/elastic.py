"""Elastic weights: max-size shared tensors, and the views of them that any subnet's units use.

The supernet does not have an elastic version of each mixer. A subnet is built
with the ordinary :func:`nas.build.plan` units (a *skeleton*, built once per
unit signature), and every parameter and persistent buffer of a unit is a view
of one shared, max-size tensor:

* **Keys.** A unit tensor is stored under ``(position, group, local name)``.
  The position is ``stem``, ``stages.S.downsample``, ``stages.S.blocks.I`` or
  ``head``. In a block, tensors inside an FFN module (the registered class of
  the block's ``ffn``) go to group ``ffn0``, ``ffn1``, ... in module order, so
  the FFN at a position is shared by every mixer kind there; tensors inside
  the mixer module go to ``mixer=<kind>``; the template's norms and layer
  scales go to ``block=<kind>`` (a norm per mixer kind, in front of the shared
  FFN). Stems, downsamplers and heads use ``<role>=<kind>``. Kinds whose
  options change the meaning of rows (EfficientFormer's per-head ``key_dim``)
  add those options to the group (:data:`KEY_FIELDS`) and so get weights of
  their own per option.
* **Views.** A needed tensor is a slice of the stored one (:class:`Rule`):
  prefixes ``[:d0, :d1, ...]`` by default; convolution kernels are cut from
  the centre (a 3x3 is the middle of a 7x7); fused ``qkv`` / ``kv`` rows and
  the concatenated neighbours of Swin's patch merging are cut per part
  (:class:`Chunks`); Swin's relative-position table is cut as a centred 2-D
  square (:class:`RelativeTable`). :data:`KIND_RULES` is the small per-kind
  table. A 1x1 convolution and a linear layer of the same name share
  one tensor (trailing singleton dimensions are dropped). Slicing is
  differentiable, so gradients reach the shared tensor; BatchNorm statistics
  are prefix views too, so training a subnet updates the shared statistics in
  place.
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

import dataclasses
import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nas.arch import Arch
from nas.blocks.registry import module_class
from nas.build import Unit, plan
from nas.errors import NasError
from nas.supernet.sigma import spectral_step

__all__ = [
    "SHARING_VERSION",
    "KEY_FIELDS",
    "KIND_RULES",
    "Capacity",
    "CapacityError",
    "Chunks",
    "ConvKernel",
    "Init",
    "Prefix",
    "RelativeTable",
    "Rule",
    "SharedStore",
    "Slot",
    "Storage",
    "UnitLayout",
    "Layouts",
]

Shape = tuple[int, ...]


class CapacityError(NasError):
    """A subnet needs a tensor larger than (or absent from) what the supernet allocated."""


# ---------------------------------------------------------------------------
# rules: how a needed tensor is cut from the stored one


def _pad(shape: Shape, rank: int) -> Shape:
    return shape + (1,) * (rank - len(shape))


def _canonical(shape: Shape) -> Shape:
    """Drop trailing singleton dimensions beyond the second (a 1x1 conv weight is a linear weight)."""
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


class Rule:
    """Cuts a tensor of ``shape`` out of a stored max-size tensor; the default cuts prefixes.

    Shapes are canonical (see :func:`_canonical`); where the stored tensor has
    more dimensions than the needed one, the extra (singleton) dimensions are
    taken at their centre.
    """

    name: ClassVar[str] = "prefix"

    def check(self, stored: Shape, shape: Shape) -> str:
        """Empty if ``shape`` fits in ``stored``, else why not."""
        padded = _pad(shape, len(stored))
        if len(shape) > len(stored) or any(need > have for need, have in zip(padded, stored, strict=True)):
            return f"needs {tuple(shape)}, allocated {tuple(stored)}"
        return ""

    def starts(self, stored: Shape, shape: Shape, rank: int) -> list[int]:
        """First index per dimension; ``rank`` is the needed tensor's own rank (later dimensions are padding)."""
        return [0 if axis < rank else (have - 1) // 2 for axis, have in enumerate(stored)]

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        padded = _pad(shape, stored.ndim)
        starts = self.starts(tuple(stored.shape), padded, len(shape))
        out = stored[tuple(slice(start, start + size) for start, size in zip(starts, padded, strict=True))]
        return out if out.shape == shape else out.reshape(shape)


class Prefix(Rule):
    """``stored[:d0, :d1, ...]``: channel ``c`` means the same channel in every subnet."""


class ConvKernel(Rule):
    """Prefix on the channel dimensions, centred on the kernel's spatial ones (OFA's centre crop)."""

    name = "conv"

    def starts(self, stored: Shape, shape: Shape, rank: int) -> list[int]:
        return [0 if axis < 2 else (have - need) // 2
                for axis, (have, need) in enumerate(zip(stored, shape, strict=True))]


@dataclass(frozen=True)
class Chunks(Rule):
    """A dimension made of ``parts`` equal parts, each cut on its own: fused ``[q; k; v]`` rows (``axis`` 0), or
    the input columns of a linear layer over concatenated neighbours (Swin's patch merging: ``axis`` 1)."""

    parts: int = 3
    axis: int = 0
    name: ClassVar[str] = "chunks"

    def check(self, stored: Shape, shape: Shape) -> str:
        if shape[self.axis] % self.parts or stored[self.axis] % self.parts:
            return (f"{self.parts} fused parts do not divide dimension {self.axis} of {tuple(shape)} / "
                    f"{tuple(stored)}")
        return super().check(stored, shape)

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        have, need = stored.shape[self.axis] // self.parts, shape[self.axis] // self.parts
        part_shape = tuple(need if axis == self.axis else size for axis, size in enumerate(shape))
        return torch.cat([Rule.view(self, stored.narrow(self.axis, index * have, have), part_shape)
                          for index in range(self.parts)], dim=self.axis)


class RelativeTable(Rule):
    """A ``(2w-1)**2 x heads`` relative-position table: a centred square of offsets, a prefix of heads."""

    name = "relative_table"

    def check(self, stored: Shape, shape: Shape) -> str:
        for rows in (stored[0], shape[0]):
            if math.isqrt(rows) ** 2 != rows:
                return f"{rows} rows are not a square table of offsets"
        return super().check(stored, shape)

    def view(self, stored: torch.Tensor, shape: Shape) -> torch.Tensor:
        have, need = math.isqrt(stored.shape[0]), math.isqrt(shape[0])
        start = (have - need) // 2
        table = stored.view(have, have, *stored.shape[1:])
        return table[start:start + need, start:start + need, :shape[1]].reshape(shape)


SHARING_VERSION = 2
"""What shared weights mean; bumped when a fix changes it, so weights trained before are not reused.
2: patch merging's concatenated neighbours are cut per neighbour (they were cut as one prefix)."""

# Per-kind exceptions to prefix slicing: (mixer kind, name inside the mixer module) or (stem / downsampler kind,
# name inside the unit) -> rule.
KIND_RULES: dict[tuple[str, str], Rule] = {
    # [top-left | bottom-left | top-right | bottom-right] neighbours, each in_dim wide: a prefix of the whole
    # would hand one neighbour's weights to another whenever the stage before is narrower than its widest.
    ("patch_merging", "norm.weight"): Chunks(4),
    ("patch_merging", "norm.bias"): Chunks(4),
    ("patch_merging", "reduction.weight"): Chunks(4, axis=1),
    ("attention", "qkv.weight"): Chunks(3),
    ("attention", "qkv.bias"): Chunks(3),
    ("window_attention", "qkv.weight"): Chunks(3),
    ("window_attention", "qkv.bias"): Chunks(3),
    ("window_attention", "relative_position_bias"): RelativeTable(),
    ("spatial_reduction_attention", "kv.weight"): Chunks(2),
    ("spatial_reduction_attention", "kv.bias"): Chunks(2),
}

# Options that change what the rows of a kind's weights mean get separate weights per value.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "efficientformer_attention": ("key_dim",),  # rows are [q k v] per head, each key_dim wide
}


def _rule_id(rule: Rule) -> str:
    if isinstance(rule, Chunks):
        return f"chunks{rule.parts}" + (f"@{rule.axis}" if rule.axis else "")
    return rule.name


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


@dataclass
class UnitLayout:
    """A unit's skeleton module (tensors on ``meta``) and its slots; the skeleton is shared by equal signatures."""

    path: str
    stage: int
    module: nn.Module
    slots: list[Slot]
    parameters: int


_BLOCK = re.compile(r"^stages\[(\d+)\]\.blocks\[(\d+)\]$")
_DOWN = re.compile(r"^stages\[(\d+)\]\.downsample$")


def _storage_key(position: str, entry: str) -> str:
    return f"{position}|{entry}".replace(".", ":")


def _group_suffix(component: Any) -> str:
    names = KEY_FIELDS.get(component.kind, ())
    return "".join(f",{name}={getattr(component, name)}" for name in names)


def _owner(module: nn.Module, name: str) -> nn.Module:
    owner = module
    for part in name.split(".")[:-1]:
        owner = getattr(owner, part)
    return owner


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    return name[len(prefix) + 1:] if name.startswith(prefix + ".") else None


def _position(path: str) -> tuple[str, str, int | None]:
    """``(scope, position, block stage)`` of a unit path (``stages[1].blocks[2]`` -> ``stages.1.blocks``, ...)."""
    block_match = _BLOCK.match(path)
    if block_match:
        stage = int(block_match.group(1))
        return f"stages.{stage}.blocks", f"stages.{stage}.blocks.{block_match.group(2)}", stage
    down_match = _DOWN.match(path)
    if down_match:
        scope = f"stages.{down_match.group(1)}.downsample"
        return scope, scope, None
    return path, path, None


def _raw_slots(arch: Arch, unit: Unit, module: nn.Module) -> list[Slot]:
    """The slots of a freshly built unit module, without their position (``scope`` and ``key`` empty).

    They depend only on the unit's signature, so they are computed once per
    signature; real tensors are needed for the init statistics.
    """
    path = unit.path
    block_match, down_match = _BLOCK.match(path), _DOWN.match(path)
    ffn_paths: list[str] = []
    mixer_path: str | None = None
    kind = ""
    component_kind = ""  # a stem's or downsampler's kind: its KIND_RULES apply to the whole unit
    if block_match:
        block = arch.stages[int(block_match.group(1))].blocks[int(block_match.group(2))]
        kind = block.mixer.kind
        suffix = _group_suffix(block.mixer)
        mixer_cls = module_class("mixer", block.mixer)
        ffn_cls = module_class("ffn", block.ffn)
        for sub_name, sub in module.named_modules():
            if mixer_path is None and isinstance(sub, mixer_cls):
                mixer_path = sub_name
            if type(sub) is ffn_cls and not any(sub_name.startswith(p + ".") for p in ffn_paths if p):
                ffn_paths.append(sub_name)
        other_group = f"block={kind}{suffix}"
        mixer_group = f"mixer={kind}{suffix}"
    elif down_match:
        component = arch.stages[int(down_match.group(1))].downsample
        other_group = f"downsample={component.kind}{_group_suffix(component)}"  # type: ignore[union-attr]
        mixer_group = other_group
        component_kind = component.kind  # type: ignore[union-attr]
    elif path in ("stem", "head"):
        component = arch.stem if path == "stem" else arch.head
        other_group = f"{path}={component.kind}{_group_suffix(component)}"
        mixer_group = other_group
        component_kind = component.kind
    else:
        other_group = mixer_group = "convert"
    parameters = dict(module.named_parameters())
    slots = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        rule: Rule | None = None
        for index, ffn_path in enumerate(ffn_paths):
            local = _strip(name, ffn_path)
            if local is not None:
                group = f"ffn{index}"
                break
        else:
            local = _strip(name, mixer_path) if mixer_path is not None else None
            if local is not None:
                group = mixer_group
                rule = KIND_RULES.get((kind, local))
            else:
                group, local = other_group, name
                rule = KIND_RULES.get((component_kind, local)) if component_kind else None
        owner = _owner(module, name)
        leaf = name.rsplit(".", 1)[-1]
        is_conv = isinstance(owner, nn.modules.conv._ConvNd) and leaf == "weight"
        if rule is None:
            rule = ConvKernel() if is_conv else Prefix()
        linear = leaf == "weight" and (isinstance(owner, nn.Linear) or bool(
            is_conv and tensor.ndim == 4 and tuple(tensor.shape[2:]) == (1, 1) and getattr(owner, "groups", 0) == 1))
        slots.append(Slot(name=name, scope="", entry=f"{group}|{local}", key="", shape=tuple(tensor.shape),
                          dtype=tensor.dtype, parameter=name in parameters, rule=rule, init=Init.of(tensor),
                          linear=linear))
    return slots


def _to_meta(module: nn.Module) -> None:
    """Replace a skeleton's parameters and persistent buffers by meta tensors (they are always passed in)."""
    for sub in module.modules():
        for name, parameter in list(sub._parameters.items()):
            if parameter is not None:
                sub._parameters[name] = nn.Parameter(torch.empty_like(parameter, device="meta"),
                                                     requires_grad=parameter.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                sub._buffers[name] = torch.empty_like(buffer, device="meta")


def _move_derived(module: nn.Module, device: torch.device) -> None:
    """Move a skeleton's derived (non-persistent) buffers to ``device``."""
    for sub in module.modules():
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
        self._units: OrderedDict[tuple[str, str], UnitLayout] = OrderedDict()
        self._skeletons: OrderedDict[str, tuple[nn.Module, list[Slot]]] = OrderedDict()
        self._archs: OrderedDict[str, list[UnitLayout]] = OrderedDict()
        self.max_units = max_units
        self.max_archs = max_archs

    def of(self, arch: Arch) -> list[UnitLayout]:
        """The layouts of ``arch``'s units in execution order (``arch`` at the scale it is built at)."""
        found = self._archs.get(arch.id)
        if found is not None:
            self._archs.move_to_end(arch.id)
            return found
        layouts = [self._unit(arch, unit) for unit in plan(arch).units]
        self._archs[arch.id] = layouts
        if len(self._archs) > self.max_archs:
            self._archs.popitem(last=False)
        return layouts

    def _unit(self, arch: Arch, unit: Unit) -> UnitLayout:
        cache_key = (unit.path, unit.key)
        found = self._units.get(cache_key)
        if found is not None:
            self._units.move_to_end(cache_key)
            return found
        built = self._skeletons.get(unit.key)
        if built is None:
            with torch.random.fork_rng(devices=[]):  # the init values only give statistics; keep them fixed
                torch.manual_seed(0)
                module = unit.make()
            raw = _raw_slots(arch, unit, module)
            _to_meta(module)
            if self.device.type != "cpu":
                _move_derived(module, self.device)
            built = self._skeletons[unit.key] = (module, raw)
            if len(self._skeletons) > self.max_units:
                self._skeletons.popitem(last=False)
        else:
            self._skeletons.move_to_end(unit.key)
        module, raw = built
        scope, position, _ = _position(unit.path)
        slots = [dataclasses.replace(slot, scope=scope, key=_storage_key(position, slot.entry)) for slot in raw]
        count = sum(slot_numel(slot) for slot in slots if slot.parameter)
        layout = self._units[cache_key] = UnitLayout(unit.path, unit.stage, module, slots, count)
        if len(self._units) > self.max_units:
            self._units.popitem(last=False)
        return layout


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
    """Max shapes per ``(scope, group|name)`` and the deepest block position per stage, from seen subnets."""

    entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)

    def add(self, layouts: Iterable[UnitLayout]) -> None:
        """Grow to cover one subnet (its layouts, as :meth:`Layouts.of` gives them)."""
        for layout in layouts:
            match = _BLOCK.match(layout.path)
            if match:
                scope = f"stages.{match.group(1)}.blocks"
                self.depths[scope] = max(self.depths.get(scope, 0), int(match.group(2)) + 1)
            for slot in layout.slots:
                shape = _canonical(slot.shape)
                numel = slot_numel(slot)
                rule = _rule_id(slot.rule)
                entry = self.entries.get((slot.scope, slot.entry))
                if entry is None:
                    self.entries[(slot.scope, slot.entry)] = _Entry(shape, slot.dtype, slot.parameter, rule,
                                                                    slot.init, slot.linear, numel)
                    continue
                compatible = entry.rule == rule or {entry.rule, rule} <= {"prefix", "conv"}
                if not compatible or entry.dtype != slot.dtype or entry.parameter != slot.parameter:
                    raise NasError(f"{slot.scope}|{slot.entry}: two units disagree on how this shared tensor is "
                                   f"used ({entry.rule}/{entry.dtype} vs {rule}/{slot.dtype}); give the kind its "
                                   "own key in nas.supernet.elastic.KEY_FIELDS")
                rank = max(len(entry.shape), len(shape))
                entry.shape = tuple(max(a, b) for a, b in zip(_pad(entry.shape, rank), _pad(shape, rank),
                                                              strict=True))
                entry.linear = entry.linear and slot.linear
                entry.rule = "conv" if "conv" in (entry.rule, rule) else entry.rule
                if numel > entry.numel:
                    entry.numel, entry.init = numel, slot.init

    def storage(self) -> list[Storage]:
        """One storage record per position: block scopes are expanded to every position up to the depth."""
        out = []
        for (scope, entry_name), entry in sorted(self.entries.items()):
            if scope.endswith(".blocks"):
                positions = [f"{scope}.{index}" for index in range(self.depths[scope])]
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
        reason = slot.rule.check(record.shape, _canonical(slot.shape))
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
        out = slot.rule.view(stored, _canonical(shape))
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
