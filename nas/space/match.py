"""Matching an Arch against a space's tree: the point vector of an Arch, or why it is not a point.

:func:`match` walks a node and an Arch part together and returns the slot
assignments that reproduce the part; a stage's blocks are matched by
:func:`match_blocks`, which yields every way a block structure can cover a
prefix of the blocks (a run of 2 or of 3, ...). :class:`Matcher` keeps the most
telling reason for a failure: the deepest path, a wrong value before a wrong kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import singledispatch
from typing import Any

from nas.arch import Block, Component
from nas.space.tree import Blocks, Concat, Const, Node, Pick, Record, Run, Same, Single, label_of

__all__ = ["Matcher", "match", "match_blocks", "first_difference"]

Assignment = dict[int, int]  # slot -> option index


class Matcher:
    """Keeps the most telling reason why an Arch is not a point (the deepest failure).

    Args:
        first_dim: the Arch's first stage width, which an unset stem width takes.
    """

    def __init__(self, first_dim: int):
        self.first_dim = first_dim
        self.best: tuple[tuple[int, int], str, str] | None = None

    def fail(self, path: str, message: str, *, weak: bool = False) -> None:
        score = (path.count(".") + path.count("["), 0 if weak else 1)
        if self.best is None or score > self.best[0]:
            self.best = (score, path, message)

    @property
    def reason(self) -> str:
        return "no match" if self.best is None else f"{self.best[1]}: {self.best[2]}"


@singledispatch
def match(node: Node, x: Any, path: str, m: Matcher) -> Assignment | None:
    """The slot assignments under which ``node`` gives ``x``, or None (the reason goes to ``m``)."""
    raise TypeError(f"cannot match a {type(node).__name__}")


@singledispatch
def match_blocks(node: Node, blocks: tuple[Block, ...], start: int, path: str,
                 m: Matcher) -> Iterator[tuple[int, Assignment]]:
    """Every ``(end, assignments)`` under which the block structure ``node`` gives ``blocks[start:end]``."""
    raise TypeError(f"{type(node).__name__} is not a block structure")


@match.register
def _(node: Const, x: Any, path: str, m: Matcher) -> Assignment | None:
    if x == node.constant and type(x) is type(node.constant):
        return {}
    m.fail(path, f"{label_of(x)} is not {label_of(node.constant)}")
    return None


@match.register
def _(node: Pick, x: Any, path: str, m: Matcher) -> Assignment | None:
    if node.leaf:
        for index, option in enumerate(node.options):
            if x == option.constant and type(x) is type(option.constant):  # type: ignore[attr-defined]
                return {node.slot: index}
        m.fail(path, f"{label_of(x)} is not one of [{', '.join(o.label() for o in node.options)}]")
        return None
    kinds = [getattr(option, "kind", None) for option in node.options]
    if isinstance(x, Component) and all(kinds) and x.kind not in kinds:
        m.fail(f"{path}.kind", f"{x.kind!r} is not one of [{', '.join(map(repr, kinds))}]", weak=True)
        return None
    for index, option in enumerate(node.options):
        found = match(option, x, path, m)
        if found is not None:
            found[node.slot] = index
            return found
    return None


@match.register
def _(node: Same, x: Any, path: str, m: Matcher) -> Assignment | None:
    return match(node.target, x, path, m)  # a clash with the tied decision shows in the final check


@match.register
def _(node: Record, x: Any, path: str, m: Matcher) -> Assignment | None:
    if type(x) is not node.cls:
        if node.kind is not None and isinstance(x, Component):
            m.fail(f"{path}.kind", f"{x.kind!r} is not {node.kind!r}", weak=True)
        else:
            m.fail(path, f"{type(x).__name__} is not {node.cls.__name__}", weak=True)
        return None
    out: Assignment = {}
    for name, field in node.fields.items():
        saved = m.best
        found = match(field, getattr(x, name), f"{path}.{name}", m)
        if found is None:
            return None
        m.best = saved  # failures inside a part that matched say nothing about the whole
        out.update(found)
    for name, default in node.defaults.items():
        value = getattr(x, name)
        if path == "stem" and name == "dim":  # the Arch fills an unset stem width with the first stage's
            if value in (None, m.first_dim):
                continue
            m.fail(f"{path}.dim", f"{value} is not the first stage's width {m.first_dim} (the space leaves the "
                                  f"stem width to the first stage)")
            return None
        if value != default:
            m.fail(f"{path}.{name}", f"{label_of(value)} is not {label_of(default)} (the space keeps the default)")
            return None
    return out


@match.register
def _(node: Blocks, x: Any, path: str, m: Matcher) -> Assignment | None:
    reached = 0
    for end, found in match_blocks(node, x, 0, path, m):
        if end == len(x):
            return found
        reached = max(reached, end)
    allowed = sorted(node.lengths())
    if len(x) not in allowed:
        shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
        m.fail(path, f"{len(x)} blocks; the space allows [{shown}] here")
    else:
        m.fail(path, f"the {len(x)} blocks do not follow the space's block structure (the first {reached} match)")
    return None


def _block_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


@match_blocks.register
def _(node: Pick, blocks: tuple[Block, ...], start: int, path: str,
      m: Matcher) -> Iterator[tuple[int, Assignment]]:
    for index, option in enumerate(node.options):
        for end, found in match_blocks(option, blocks, start, path, m):
            yield end, {**found, node.slot: index}


@match_blocks.register
def _(node: Same, blocks: tuple[Block, ...], start: int, path: str,
      m: Matcher) -> Iterator[tuple[int, Assignment]]:
    return match_blocks(node.target, blocks, start, path, m)


@match_blocks.register
def _(node: Single, blocks: tuple[Block, ...], start: int, path: str,
      m: Matcher) -> Iterator[tuple[int, Assignment]]:
    if start < len(blocks):
        found = match(node.block, blocks[start], _block_path(path, start), m)
        if found is not None:
            yield start + 1, found


def _match_unit(unit: list[Node], blocks: tuple[Block, ...], start: int, path: str, m: Matcher) -> Assignment | None:
    if start + len(unit) > len(blocks):
        return None
    out: Assignment = {}
    for offset, node in enumerate(unit):
        found = match(node, blocks[start + offset], _block_path(path, start + offset), m)
        if found is None:
            return None
        out.update(found)
    return out


@match_blocks.register
def _(node: Run, blocks: tuple[Block, ...], start: int, path: str, m: Matcher) -> Iterator[tuple[int, Assignment]]:
    width = len(node.units[0])
    if node.independent:
        found_units: list[Assignment] = []
        for unit in node.units:
            found = _match_unit(unit, blocks, start + len(found_units) * width, path, m)
            if found is None:
                break
            found_units.append(found)
        runs = len(found_units)
    else:
        first = _match_unit(node.units[0], blocks, start, path, m)
        runs = 0
        if first is not None:
            repeated = blocks[start:start + width]
            runs = 1
            while blocks[start + runs * width:start + (runs + 1) * width] == repeated:
                runs += 1
        found_units = [first or {}] * runs
    options = list(enumerate(node.counts)) if isinstance(node.repeat, Pick) else [(None, node.counts[0])]
    for index, count in options:
        if count <= runs:
            out = {key: value for found in found_units[:count if node.independent else min(count, 1)]
                   for key, value in found.items()}
            if index is not None:
                out[node.repeat.slot] = index  # type: ignore[attr-defined]
            yield start + count * width, out


@match_blocks.register
def _(node: Concat, blocks: tuple[Block, ...], start: int, path: str,
      m: Matcher) -> Iterator[tuple[int, Assignment]]:
    def walk(index: int, position: int, found: Assignment) -> Iterator[tuple[int, Assignment]]:
        if index == len(node.parts):
            yield position, found
            return
        for end, more in match_blocks(node.parts[index], blocks, position, path, m):
            yield from walk(index + 1, end, {**found, **more})

    yield from walk(0, start, {})


def first_difference(theirs: Any, mine: Any, path: str) -> str:
    """Where two plain-data Archs first differ, worded for a tie the Arch breaks."""
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for key in list(theirs) + [k for k in mine if k not in theirs]:
            if theirs.get(key) != mine.get(key):
                return first_difference(theirs.get(key), mine.get(key), f"{path}.{key}" if path else key)
    if isinstance(theirs, list) and isinstance(mine, list) and len(theirs) == len(mine):
        for index, (a, b) in enumerate(zip(theirs, mine, strict=True)):
            if a != b:
                return first_difference(a, b, f"{path}[{index}]")
    return f"{path}: {theirs!r}, but the space ties it to a decision this Arch takes as {mine!r}"
