"""Registry-wide checks of what each kind declares on its config (nas/blocks/contract.py).

Every registered stem, downsampler, mixer, FFN and head is exercised through
its tiny arch in tests/tiny/ (tests/test_registry.py checks that each kind has
one), so a new kind is covered without editing this file:

* the supernet's ``extract(arch)`` is what ``build(proxy(arch))`` makes, with the same outputs;
* fused tensors share part with part (q with q, k with k, v with v) between a wide and a narrow subnet;
* a tensor with a dimension that is a multiple (k > 1) of the width is declared, fused or not;
* the proxy scale keeps every kind valid and buildable;
* no op a kind emits is priced as ``other`` unless the kind declares it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

import nas
from nas.arch import ROLES, Component, config_type, list_kinds
from nas.blocks.contract import FitsMap, Sharing
from nas.build import Unit, plan
from nas.op_classes import OP_CLASSES, declared_op_classes
from nas.supernet import ChunkRule, ProxyScale, Supernet, proxy
from nas.supernet.elastic import Capacity, Layouts, SharedStore, Slot
from tests.conftest import tiny_files

TINY = {path.stem: path for path in tiny_files()}
SCALE = ProxyScale(width=0.5, resolution=32)


def _configs() -> Iterator[tuple[str, str, type[Component]]]:
    for role in ROLES:
        for kind in list_kinds(role):
            yield role, kind, config_type(role, kind)


def _components(unit: Unit) -> list[Component]:
    if unit.role == "block":
        return [unit.component.mixer, unit.component.ffn, unit.component.norm]
    return [] if unit.component is None else [unit.component]


def _widths(arch: nas.Arch, unit: Unit) -> set[int]:
    """The channel widths a unit sees: what comes in and what it puts out."""
    in_dim = unit.in_shape[0] if len(unit.in_shape) == 3 else unit.in_shape[-1]
    if unit.role == "stem":
        return {arch.stem.dim}  # type: ignore[attr-defined]
    if unit.role == "head":
        return {in_dim}
    return {in_dim, arch.stages[unit.stage].dim}


def _doubled(arch: nas.Arch) -> nas.Arch:
    """``arch`` with every stage (and a stem that follows the first stage) twice as wide; nothing else changes."""
    stem = arch.stem
    if stem.dim == arch.stages[0].dim:  # type: ignore[attr-defined]
        stem = dataclasses.replace(stem, dim=2 * stem.dim)  # type: ignore[attr-defined]
    stages = tuple(dataclasses.replace(stage, dim=2 * stage.dim) for stage in arch.stages)
    return arch.replace(stem=stem, stages=stages)


def _slots(arch: nas.Arch) -> Iterator[tuple[Unit, Slot]]:
    for unit, layout in zip(plan(arch).units, Layouts().of(arch), strict=True):
        for slot in layout.slots:
            yield unit, slot


# ---------------------------------------------------------------------------- declarations are well-formed


@pytest.mark.parametrize(("role", "kind", "config"), list(_configs()), ids=lambda value: str(value))
def test_declarations_name_real_fields(role: str, kind: str, config: type[Component]) -> None:
    fields = {item.name: item for item in dataclasses.fields(config)}
    named = [*config.width_fields, *config.key_fields, *config.resolution_fields]
    named += [follower for bound in config.resolution_fields.values() for follower in bound.halved]
    assert set(named) <= set(fields), f"{role} {kind}: declares fields it does not have"
    assert all(isinstance(bound, FitsMap) for bound in config.resolution_fields.values())
    assert all(isinstance(declared, Sharing) for declared in config.sharing.values())
    assert set(config.ops.values()) <= set(OP_CLASSES)


def test_declared_op_classes_agree() -> None:
    declared_op_classes()  # raises on an unknown class or two declarations that disagree


# ---------------------------------------------------------------------------- supernet


@pytest.mark.parametrize("name", sorted(TINY))
def test_extract_is_build_of_proxy(name: str) -> None:
    supernet = Supernet.create(str(TINY[name]), scale=SCALE, scan=1)
    supernet.eval()
    arch = nas.Arch.load(TINY[name])
    small = proxy(arch, width=SCALE.width, resolution=SCALE.resolution)
    extracted = supernet.extract(arch).eval()
    built = nas.build(small)
    built.load_state_dict(extracted.state_dict())  # strict: the same modules, tensors and shapes
    built.eval()
    assert type(extracted) is nas.Model and extracted.arch == small
    images = torch.randn(2, small.input.channels, small.input.resolution, small.input.resolution,
                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(extracted(images), built(images), rtol=0, atol=0)
        torch.testing.assert_close(supernet(images, arch), built(images), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_multiple_of_the_width_is_declared(name: str) -> None:
    """A tensor dimension that grows as ``k x`` a width (k > 1) is several parts or several independent
    channels per channel; only the kind knows which, so it must say (``sharing`` on its config)."""
    arch = nas.Arch.load(TINY[name])
    wide = {slot.key: slot.shape for _, slot in _slots(_doubled(arch))}
    undeclared = []
    for unit, slot in _slots(arch):
        doubled = wide[slot.key]
        for axis, size in enumerate(slot.shape):
            widths = _widths(arch, unit)
            grows = doubled[axis] == 2 * size
            multiple = size not in widths and any(size % width == 0 and size // width > 1 for width in widths)
            if grows and multiple and slot.declared is None:
                undeclared.append(f"{slot.key} {tuple(slot.shape)} (axis {axis})")
    assert not undeclared, ("tensors with a dimension that is k x the width, not declared in the kind's "
                            f"config sharing (Chunks if fused, Prefix if not): {undeclared}")


@pytest.mark.parametrize("name", sorted(TINY))
def test_fused_parts_share_part_with_part(name: str) -> None:
    arch = proxy(nas.Arch.load(TINY[name]), width=1.0, resolution=32)
    narrow = proxy(arch, width=0.5, resolution=None)
    layouts, capacity = Layouts(), Capacity()
    for point in (arch, narrow):
        capacity.add(layouts.of(point))
    store = SharedStore(capacity.storage(), seed=0)
    wide_slots = {slot.key: slot for layout in layouts.of(arch) for slot in layout.slots}
    checked = 0
    for layout in layouts.of(narrow):
        for slot in layout.slots:
            if not isinstance(slot.rule, ChunkRule) or slot.key not in wide_slots:
                continue
            rule = slot.rule
            narrow_parts = store.view(slot).chunk(rule.parts, dim=rule.axis)
            wide_parts = store.view(wide_slots[slot.key]).chunk(rule.parts, dim=rule.axis)
            for part, (small, large) in enumerate(zip(narrow_parts, wide_parts, strict=True)):
                corner = large[tuple(slice(0, size) for size in small.shape)]
                assert torch.equal(small, corner), f"{slot.key}: part {part} is not the wide subnet's part {part}"
            checked += 1
    declares_chunks = any(isinstance(slot.rule, ChunkRule) for layout in layouts.of(arch) for slot in layout.slots)
    assert checked or not declares_chunks, "the fused tensors were never compared"


# ---------------------------------------------------------------------------- proxy


def _same_kinds(arch: nas.Arch, scaled: nas.Arch) -> Iterator[tuple[Unit, Component, Component]]:
    """Each component of ``arch`` beside its counterpart in ``scaled``, after checking they are of one kind."""
    assert [unit.role for unit in plan(scaled).units] == [unit.role for unit in plan(arch).units]
    for before, after in zip(plan(arch).units, plan(scaled).units, strict=True):
        for old, new in zip(_components(before), _components(after), strict=True):
            assert type(old) is type(new), f"{before.path}: {old.kind} became {new.kind}"
            yield before, old, new


@pytest.mark.parametrize("scale", [ProxyScale(), SCALE, ProxyScale(width=2.0, resolution=None)],
                         ids=["quarter", "half", "double"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_proxy_keeps_every_kind_valid(name: str, scale: ProxyScale) -> None:
    arch = nas.Arch.load(TINY[name])
    scaled = scale.apply(arch)  # an Arch: valid by construction
    for unit, old, new in _same_kinds(arch, scaled):
        for field in old.width_fields if scale.width > 1 else ():
            assert getattr(new, field) > getattr(old, field) or not getattr(old, field), \
                f"{unit.path}: width field {field} did not grow with the width"
    model = nas.build(scaled, device="meta").eval()
    x = torch.empty(2, scaled.input.channels, scaled.input.resolution, scaled.input.resolution, device="meta")
    assert model(x).shape == (2, scaled.head.num_classes)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- cost


@pytest.mark.parametrize("name", sorted(TINY))
def test_no_op_is_other_unless_its_kind_declares_it(name: str) -> None:
    arch = nas.Arch.load(TINY[name])
    units = {unit.path: unit for unit in plan(arch).units}
    report = nas.cost.profile(arch)
    undeclared = sorted({f"{op.unit}: {op.name}" for op in report.ops if op.op_class == "other"
                         and not any(op.name in component.ops for component in _components(units[op.unit]))})
    assert not undeclared, f"ops priced as 'other' that no kind declares (ops on its config): {undeclared}"
