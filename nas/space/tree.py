"""The tree a space file compiles to: one node per value, choice, tie, record or block structure.

Every node owns the contiguous decision slots ``[lo, hi)`` that the compiler
(:mod:`nas.space.compiler`) numbered depth-first, a choice's slot before those
of its options, plus ``extra`` slots outside that range when a tie
(``{same: id}``) inside it reads an earlier decision; :meth:`Node.slots` gives
both. A node computes its typed value from a point vector (memoised by those
slots), counts its points, and traces which file location produced each part
of an Arch. Matching an Arch against the tree lives in :mod:`nas.space.match`,
batch validity in :mod:`nas.space.validity`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.arch import Block, Component, Precision, Stage
from nas.yamlio import LocatedDict, LocatedList

__all__ = ["VECTOR_DTYPE", "Where", "Decision", "Node", "Const", "Pick", "Same", "Cached", "Record", "Blocks",
           "Single", "Run", "Concat", "resolve", "label_of", "component_types"]

VECTOR_DTYPE = np.int16
_CACHE_LIMIT = 65_536  # entries per node cache before it is cleared (memory bound)


@dataclass(frozen=True)
class Where:
    """A position in the space file: key path and line."""

    path: str
    line: int | None

    def key(self, data: Any, name: str) -> Where:
        line = data.lines.get(name, self.line) if isinstance(data, LocatedDict) else self.line
        return Where(f"{self.path}.{name}" if self.path else name, line)

    def item(self, data: Any, index: int) -> Where:
        line = data.lines[index] if isinstance(data, LocatedList) and index < len(data.lines) else self.line
        return Where(f"{self.path}[{index}]", line)


@dataclass(frozen=True)
class Decision:
    """One slot of the point vector.

    Attributes:
        path: key path of the choice in the space file (``stages[1].dim``).
        line: its line in the file.
        form: ``choice`` (categorical), ``ordinal`` or ``range`` (both ordered).
        options: a short label per option.
        parent: slot of the decision this one depends on, or -1.
        when: the parent's option indices under which this decision exists.
    """

    path: str
    line: int | None
    form: str
    options: tuple[str, ...]
    parent: int
    when: tuple[int, ...]

    @property
    def ordered(self) -> bool:
        return self.form != "choice"


def label_of(value: Any) -> str:
    """A short YAML-like label of an option value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(label_of(item) for item in value) + "]"
    return str(value)


class Node:
    """Base of the tree's nodes (see the module docstring)."""

    __slots__ = ("lo", "hi", "extra", "where")

    def __init__(self, where: Where):
        self.where = where
        self.lo = self.hi = 0
        self.extra: np.ndarray | None = None  # slots outside [lo, hi) the value depends on (ties)

    def slots(self) -> np.ndarray:
        """Every slot this node's value depends on, sorted: its own range and the tied decisions outside it."""
        own = np.arange(self.lo, self.hi, dtype=np.int64)
        return own if self.extra is None else np.union1d(own, self.extra)

    def value(self, v: np.ndarray) -> Any:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def trace(self, v: np.ndarray, path: str, out: dict[str, Where]) -> None:
        out[path] = self.where

    def label(self) -> str:
        return "..."


class Const(Node):
    """A fixed value (no decision)."""

    __slots__ = ("constant",)

    def __init__(self, constant: Any, where: Where):
        super().__init__(where)
        self.constant = constant

    def value(self, v: np.ndarray) -> Any:
        return self.constant

    def count(self) -> int:
        return 1

    def label(self) -> str:
        return label_of(self.constant)


class Pick(Node):
    """A decision: one slot choosing among option sub-trees."""

    __slots__ = ("slot", "options", "leaf")

    def __init__(self, slot: int, options: list[Node], where: Where):
        super().__init__(where)
        self.slot = slot
        self.options = options
        self.leaf = all(isinstance(option, Const) for option in options)

    def value(self, v: np.ndarray) -> Any:
        return self.options[v[self.slot]].value(v)

    def count(self) -> int:
        return sum(option.count() for option in self.options)

    def lengths(self) -> set[int]:
        return set().union(*(option.lengths() for option in self.options))  # type: ignore[attr-defined]

    def trace(self, v: np.ndarray, path: str, out: dict[str, Where]) -> None:
        out[path] = self.where
        if not self.leaf:  # a value is placed at its decision; a sub-tree at its option
            self.options[v[self.slot]].trace(v, path, out)

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        return self.options[v[self.slot]].trace_blocks(v, path, start, out)  # type: ignore[attr-defined]

    def label(self) -> str:
        return "choice"


class Same(Node):
    """A tie: takes the value of an earlier decision (``{same: id}``) and adds none."""

    __slots__ = ("target", "name")

    def __init__(self, target: Pick, name: str, where: Where):
        super().__init__(where)
        self.target = target
        self.name = name

    def value(self, v: np.ndarray) -> Any:
        return self.target.value(v)

    def count(self) -> int:
        return 1

    def lengths(self) -> set[int]:
        return self.target.lengths()

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        return self.target.trace_blocks(v, path, start, out)

    def label(self) -> str:
        return f"same as {self.name}"


class Cached(Node):
    """A node whose value is memoised by its slots' contents."""

    __slots__ = ("cache", "constant")

    def __init__(self, where: Where):
        super().__init__(where)
        self.cache: dict[bytes, Any] = {}
        self.constant: Any = None

    def seal(self) -> None:
        """Called once slots are numbered: a node without decisions is computed now."""
        if self.lo == self.hi and self.extra is None:
            self.constant = self.build(np.zeros(0, dtype=VECTOR_DTYPE))

    def value(self, v: np.ndarray) -> Any:
        if self.lo == self.hi and self.extra is None:
            return self.constant
        key = v[self.lo:self.hi].tobytes()
        if self.extra is not None:
            key += v[self.extra].tobytes()
        found = self.cache.get(key)
        if found is None:
            if len(self.cache) >= _CACHE_LIMIT:
                self.cache.clear()
            found = self.cache[key] = self.build(v)
        return found

    def build(self, v: np.ndarray) -> Any:
        raise NotImplementedError


class Record(Cached):
    """A dataclass (component, block, stage, input, precision) from field nodes.

    ``defaults`` holds the fields the file leaves out (a component's own
    defaults), which an Arch must match to be a point of the space.
    """

    __slots__ = ("cls", "kind", "fields", "defaults")

    def __init__(self, cls: type, fields: dict[str, Node], where: Where, *, kind: str | None = None,
                 defaults: dict[str, Any] | None = None):
        super().__init__(where)
        self.cls = cls
        self.kind = kind
        self.fields = fields
        self.defaults = defaults or {}

    def build(self, v: np.ndarray) -> Any:
        return self.cls(**{name: node.value(v) for name, node in self.fields.items()})

    def count(self) -> int:
        return math.prod(node.count() for node in self.fields.values())

    def trace(self, v: np.ndarray, path: str, out: dict[str, Where]) -> None:
        out[path] = self.where
        for name, node in self.fields.items():
            if self.cls is Stage and name == "blocks":
                node.trace_blocks(v, f"{path}.blocks", 0, out)  # type: ignore[attr-defined]
            else:
                node.trace(v, f"{path}.{name}", out)

    def label(self) -> str:
        if self.kind is not None:
            fixed = [f"{name}={node.label()}" for name, node in self.fields.items() if isinstance(node, Const)]
            return f"{self.kind}({', '.join(fixed)})" if fixed else self.kind
        if self.cls is Block:
            return f"block({self.fields['mixer'].label()})"
        if self.cls is Precision:  # options differ only in their formats: name the ones that are not fp32
            given = [f"{name}={node.label()}" for name, node in self.fields.items()
                     if not isinstance(node, Const) or node.constant != getattr(Precision, name)]
            return f"precision({', '.join(given) or 'fp32'})"
        return self.cls.__name__.lower()


class Blocks(Cached):
    """Base of a stage's block structures; the value is a tuple of Blocks."""

    def lengths(self) -> set[int]:
        """The numbers of blocks this structure can expand to."""
        raise NotImplementedError

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        raise NotImplementedError


def _block_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


class Single(Blocks):
    """One block."""

    __slots__ = ("block",)

    def __init__(self, block: Node, where: Where):
        super().__init__(where)
        self.block = block

    def build(self, v: np.ndarray) -> Any:
        return (self.block.value(v),)

    def count(self) -> int:
        return self.block.count()

    def lengths(self) -> set[int]:
        return {1}

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        self.block.trace(v, _block_path(path, start), out)
        return start + 1

    def label(self) -> str:
        return self.block.label()


class Run(Blocks):
    """``repeat`` times a unit of blocks: shared decisions, or one copy of them per repeat (independent)."""

    __slots__ = ("repeat", "counts", "units", "independent")

    def __init__(self, repeat: Node, units: list[list[Node]], independent: bool, where: Where):
        super().__init__(where)
        self.repeat = repeat
        self.counts: list[int] = ([o.constant for o in repeat.options] if isinstance(repeat, Pick)  # type: ignore
                                  else [repeat.constant])  # type: ignore[attr-defined]
        self.units = units
        self.independent = independent

    def build(self, v: np.ndarray) -> Any:
        count = self.repeat.value(v)
        if self.independent:
            return tuple(node.value(v) for unit in self.units[:count] for node in unit)
        return tuple(node.value(v) for node in self.units[0]) * count

    def count(self) -> int:
        each = math.prod(node.count() for node in self.units[0])
        if self.independent:
            return sum(each ** count for count in self.counts)
        return sum(each if count else 1 for count in self.counts)

    def lengths(self) -> set[int]:
        return {count * len(self.units[0]) for count in self.counts}

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        count = self.repeat.value(v)
        for repeat in range(count):
            unit = self.units[repeat if self.independent else 0]
            for node in unit:
                node.trace(v, _block_path(path, start), out)
                start += 1
        return start

    def label(self) -> str:
        unit = self.units[0]
        body = unit[0].label() if len(unit) == 1 else "pattern(" + ", ".join(n.label() for n in unit) + ")"
        return f"repeat {body}"


class Concat(Blocks):
    """Runs of blocks one after the other."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Node], where: Where):
        super().__init__(where)
        self.parts = parts

    def build(self, v: np.ndarray) -> Any:
        return tuple(block for part in self.parts for block in part.value(v))

    def count(self) -> int:
        return math.prod(part.count() for part in self.parts)

    def lengths(self) -> set[int]:
        totals = {0}
        for part in self.parts:
            totals = {total + length for total in totals for length in part.lengths()}  # type: ignore[attr-defined]
        return totals

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        for part in self.parts:
            start = part.trace_blocks(v, path, start, out)  # type: ignore[attr-defined]
        return start

    def label(self) -> str:
        return " + ".join(part.label() for part in self.parts)


def resolve(node: Node, v: np.ndarray) -> Node:
    """The option sub-tree a vector takes at ``node``."""
    while isinstance(node, (Pick, Same)):
        node = node.options[v[node.slot]] if isinstance(node, Pick) else node.target
    return node


def component_types(node: Node) -> set[type[Component]]:
    """The component config classes a component node can take (every option, through ties)."""
    if isinstance(node, Pick):
        return set().union(*(component_types(option) for option in node.options))
    if isinstance(node, Same):
        return component_types(node.target)
    if isinstance(node, Record) and node.kind is not None:
        return {node.cls}
    if isinstance(node, Const) and isinstance(node.constant, Component):
        return {type(node.constant)}
    return set()
