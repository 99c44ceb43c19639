"""The tree a space file compiles to, and the compiler; used by :mod:`nas.space`.

Every node owns the contiguous decision slots ``[lo, hi)`` that the compiler
numbered depth-first (a choice's slot before those of its options), plus
``extra`` slots outside that range when a tie (``{same: id}``) inside it reads
an earlier decision. A node computes its typed value from a point vector
(memoised by those slots), counts its points, matches an Arch part to slot
assignments, and traces which file location produced each part of an Arch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from nas.arch import Block, Component, InputSpec, Precision, Stage, config_type
from nas.arch import _coerce as coerce_field  # the Arch file's own field coercion: one schema
from nas.errors import ConfigError, UnknownKindError
from nas.yamlio import LocatedDict, LocatedList

__all__ = ["VECTOR_DTYPE", "Decision", "Where", "Matcher", "Node", "Const", "Pick", "Same", "Cached", "Record",
           "Blocks", "Single", "Run", "Concat", "Compiler", "resolve", "yaml_key_path", "label_of"]

VECTOR_DTYPE = np.int16
_ITEMSIZE = np.dtype(VECTOR_DTYPE).itemsize
_MAX_OPTIONS = 4096
_CACHE_LIMIT = 65_536  # entries per node cache before it is cleared (memory bound)
_PICK_FORMS = [{"choice"}, {"ordinal"}, {"range"}, {"range", "step"}]


# ---------------------------------------------------------------------------
# locations and decisions


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


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def label_of(value: Any) -> str:
    """A short YAML-like label of an option value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(label_of(item) for item in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------
# the tree a space file compiles to; every node owns the contiguous slots [lo, hi)


class Matcher:
    """Keeps the most telling reason why an Arch is not a point (the deepest failure)."""

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


class Node:
    """Base of the tree's nodes (see the module docstring)."""

    __slots__ = ("lo", "hi", "blo", "bhi", "extra", "where")

    def __init__(self, where: Where):
        self.where = where
        self.lo = self.hi = self.blo = self.bhi = 0
        self.extra: np.ndarray | None = None  # slots outside [lo, hi) the value depends on (ties)

    def key(self, v: np.ndarray, raw: bytes) -> bytes:
        """The slots this node's value depends on, as bytes; ``raw`` is ``v.tobytes()``."""
        own = raw[self.blo:self.bhi]
        return own if self.extra is None else own + v[self.extra].tobytes()

    def value(self, v: np.ndarray) -> Any:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
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

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
        if x == self.constant and type(x) is type(self.constant):
            return {}
        m.fail(path, f"{label_of(x)} is not {label_of(self.constant)}")
        return None

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

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
        if self.leaf:
            for index, option in enumerate(self.options):
                if x == option.constant and type(x) is type(option.constant):  # type: ignore[attr-defined]
                    return {self.slot: index}
            m.fail(path, f"{label_of(x)} is not one of [{', '.join(o.label() for o in self.options)}]")
            return None
        kinds = [getattr(option, "kind", None) for option in self.options]
        if isinstance(x, Component) and all(kinds) and x.kind not in kinds:
            m.fail(f"{path}.kind", f"{x.kind!r} is not one of [{', '.join(map(repr, kinds))}]", weak=True)
            return None
        for index, option in enumerate(self.options):
            found = option.match(x, path, m)
            if found is not None:
                found[self.slot] = index
                return found
        return None

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        for index, option in enumerate(self.options):
            for end, found in option.match_blocks(blocks, start, path, m):  # type: ignore[attr-defined]
                yield end, {**found, self.slot: index}

    def lengths(self) -> set[int]:
        return set().union(*(option.lengths() for option in self.options))  # type: ignore[attr-defined]

    def trace(self, v: np.ndarray, path: str, out: dict[str, Where]) -> None:
        out[path] = self.where
        if not self.leaf:  # a value is placed at its decision; a sub-tree at its option
            self.options[v[self.slot]].trace(v, path, out)

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        return self.options[v[self.slot]].trace_blocks(v, path, start, out)  # type: ignore[attr-defined]

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        self.options[v[self.slot]].expand(v, out)  # type: ignore[attr-defined]

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

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
        return self.target.match(x, path, m)  # a clash with the tied decision shows in the final check

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        return self.target.match_blocks(blocks, start, path, m)

    def lengths(self) -> set[int]:
        return self.target.lengths()

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        return self.target.trace_blocks(v, path, start, out)

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        self.target.expand(v, out)

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
    """A dataclass (component, block, stage, input, precision) from field nodes."""

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

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
        if type(x) is not self.cls:
            if self.kind is not None and isinstance(x, Component):
                m.fail(f"{path}.kind", f"{x.kind!r} is not {self.kind!r}", weak=True)
            else:
                m.fail(path, f"{type(x).__name__} is not {self.cls.__name__}", weak=True)
            return None
        out: dict[int, int] = {}
        for name, node in self.fields.items():
            saved = m.best
            found = node.match(getattr(x, name), f"{path}.{name}", m)
            if found is None:
                return None
            m.best = saved  # failures inside a part that matched say nothing about the whole
            out.update(found)
        for name, default in self.defaults.items():
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

    def trace(self, v: np.ndarray, path: str, out: dict[str, Where]) -> None:
        out[path] = self.where
        for name, node in self.fields.items():
            if self.cls is Stage and name == "blocks":
                node.trace_blocks(v, f"{path}.blocks", 0, out)  # type: ignore[union-attr]
            else:
                node.trace(v, f"{path}.{name}", out)

    def label(self) -> str:
        if self.kind is not None:
            fixed = [f"{name}={node.label()}" for name, node in self.fields.items() if isinstance(node, Const)]
            return f"{self.kind}({', '.join(fixed)})" if fixed else self.kind
        if self.cls is Block:
            return f"block({self.fields['mixer'].label()})"
        return self.cls.__name__.lower()


class Blocks(Cached):
    """Base of a stage's block structures; the value is a tuple of Blocks."""

    def match(self, x: Any, path: str, m: Matcher) -> dict[int, int] | None:
        reached = 0
        for end, found in self.match_blocks(x, 0, path, m):
            if end == len(x):
                return found
            reached = max(reached, end)
        allowed = sorted(self.lengths())
        if len(x) not in allowed:
            shown = ", ".join(map(str, allowed[:12])) + (", ..." if len(allowed) > 12 else "")
            m.fail(path, f"{len(x)} blocks; the space allows [{shown}] here")
        else:
            m.fail(path, f"the {len(x)} blocks do not follow the space's block structure "
                         f"(the first {reached} match)")
        return None

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        raise NotImplementedError

    def lengths(self) -> set[int]:
        raise NotImplementedError

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        raise NotImplementedError

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        """Append ``(unit nodes, repeats)`` for every run of blocks, in order."""
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

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        if start < len(blocks):
            found = self.block.match(blocks[start], _block_path(path, start), m)
            if found is not None:
                yield start + 1, found

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        self.block.trace(v, _block_path(path, start), out)
        return start + 1

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        out.append(([self.block], 1))

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

    def _unit_count(self, unit: list[Node]) -> int:
        return math.prod(node.count() for node in unit)

    def count(self) -> int:
        each = self._unit_count(self.units[0])
        if self.independent:
            return sum(each ** count for count in self.counts)
        return sum(each if count else 1 for count in self.counts)

    def lengths(self) -> set[int]:
        return {count * len(self.units[0]) for count in self.counts}

    def _options(self) -> list[tuple[int | None, int]]:
        if isinstance(self.repeat, Pick):
            return [(index, count) for index, count in enumerate(self.counts)]
        return [(None, self.counts[0])]

    def _match_unit(self, unit: list[Node], blocks: tuple[Block, ...], start: int, path: str,
                    m: Matcher) -> dict[int, int] | None:
        if start + len(unit) > len(blocks):
            return None
        out: dict[int, int] = {}
        for offset, node in enumerate(unit):
            found = node.match(blocks[start + offset], _block_path(path, start + offset), m)
            if found is None:
                return None
            out.update(found)
        return out

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        width = len(self.units[0])
        slot = self.repeat.slot if isinstance(self.repeat, Pick) else None
        if self.independent:
            found_units: list[dict[int, int]] = []
            for unit in self.units:
                found = self._match_unit(unit, blocks, start + len(found_units) * width, path, m)
                if found is None:
                    break
                found_units.append(found)
            runs = len(found_units)
        else:
            first = self._match_unit(self.units[0], blocks, start, path, m)
            runs = 0
            if first is not None:
                unit = blocks[start:start + width]
                runs = 1
                while blocks[start + runs * width:start + (runs + 1) * width] == unit:
                    runs += 1
            found_units = [first or {}] * runs
        for index, count in self._options():
            if count <= runs:
                out = {key: value for found in found_units[:count if self.independent else min(count, 1)]
                       for key, value in found.items()}
                if slot is not None:
                    out[slot] = index  # type: ignore[index]
                yield start + count * width, out

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        count = self.repeat.value(v)
        for repeat in range(count):
            unit = self.units[repeat if self.independent else 0]
            for node in unit:
                node.trace(v, _block_path(path, start), out)
                start += 1
        return start

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        count = self.repeat.value(v)
        if self.independent:
            out.extend((unit, 1) for unit in self.units[:count])
        elif count:
            out.append((self.units[0], count))

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

    def match_blocks(self, blocks: tuple[Block, ...], start: int, path: str,
                     m: Matcher) -> Iterator[tuple[int, dict[int, int]]]:
        def walk(index: int, position: int, found: dict[int, int]) -> Iterator[tuple[int, dict[int, int]]]:
            if index == len(self.parts):
                yield position, found
                return
            for end, more in self.parts[index].match_blocks(blocks, position, path, m):  # type: ignore[attr-defined]
                yield from walk(index + 1, end, {**found, **more})

        yield from walk(0, start, {})

    def trace_blocks(self, v: np.ndarray, path: str, start: int, out: dict[str, Where]) -> int:
        out.setdefault(path, self.where)
        for part in self.parts:
            start = part.trace_blocks(v, path, start, out)  # type: ignore[attr-defined]
        return start

    def expand(self, v: np.ndarray, out: list[tuple[list[Node], int]]) -> None:
        for part in self.parts:
            part.expand(v, out)  # type: ignore[attr-defined]

    def label(self) -> str:
        return " + ".join(part.label() for part in self.parts)


# ---------------------------------------------------------------------------
# compiling a space file into the tree


_HINTS = {cls: typing.get_type_hints(cls) for cls in (Block, Stage, InputSpec, Precision)}


class Compiler:
    """Turns located YAML data into nodes, numbering decisions depth-first, and reports errors with file:line."""

    def __init__(self, source: str):
        self.source = source
        self.decisions: list[Decision] = []
        self._names: dict[str, tuple[Pick, str]] = {}
        self._ties: list[tuple[int, int]] = []
        self._parent = -1
        self._when: tuple[int, ...] = ()

    def error(self, message: str, where: Where) -> ConfigError:
        return ConfigError(message, path=where.path, source=self.source, line=where.line)

    @contextmanager
    def _condition(self, slot: int, when: tuple[int, ...]) -> Iterator[None]:
        saved = self._parent, self._when
        self._parent, self._when = slot, when
        try:
            yield
        finally:
            self._parent, self._when = saved

    def _mark(self) -> tuple[int, int]:
        """Where a node starts: its first slot and its first tie."""
        return len(self.decisions), len(self._ties)

    def _finish(self, node: Node, start: tuple[int, int]) -> Node:
        node.lo, node.hi = start[0], len(self.decisions)
        node.blo, node.bhi = node.lo * _ITEMSIZE, node.hi * _ITEMSIZE
        outside = {slot for lo, hi in self._ties[start[1]:] for slot in range(lo, hi)
                   if not node.lo <= slot < node.hi}
        node.extra = np.array(sorted(outside), dtype=np.int64) if outside else None
        if isinstance(node, Cached):
            node.seal()
        return node

    # -- choices ----------------------------------------------------------------

    def _pick(self, data: Any, where: Where, compile_option: Callable[[Any, Where], Node], *,
              position: str) -> Node | None:
        """A choice node (``choice``, ``ordinal``, ``range``; optional ``id``) or a tie (``same``), else None."""
        if not isinstance(data, dict):
            return None
        keys = set(data)
        if keys == {"same"}:
            return self._same(data, where, position)
        if keys - {"id"} not in _PICK_FORMS:
            return None
        start = self._mark()
        form = next(iter(keys - {"step", "id"}))
        if form == "range":
            values, value_where = self._range_values(data, where)
            items: list[tuple[Any, Where]] = [(value, value_where) for value in values]
        else:
            options = data[form]
            if not isinstance(options, list) or not options:
                raise self.error(f"{form} needs a non-empty list of options, got {options!r}", where.key(data, form))
            if len(options) > _MAX_OPTIONS:
                raise self.error(f"at most {_MAX_OPTIONS} options, got {len(options)}", where.key(data, form))
            option_where = where.key(data, form)
            items = [(option, option_where.item(options, index)) for index, option in enumerate(options)]
        slot = len(self.decisions)
        self.decisions.append(Decision(where.path, where.line, form, (), self._parent, self._when))
        nodes = []
        for index, (option, option_where) in enumerate(items):
            with self._condition(slot, (index,)):
                nodes.append(compile_option(option, option_where))
        self.decisions[slot] = dataclasses.replace(self.decisions[slot],
                                                   options=tuple(node.label() for node in nodes))
        pick = self._finish(Pick(slot, nodes, where), start)
        if "id" in data:
            name = data["id"]
            if not isinstance(name, str) or not name:
                raise self.error(f"must be a non-empty string, got {name!r}", where.key(data, "id"))
            self._names[name] = (pick, position)  # type: ignore[assignment]
        return pick

    def _same(self, data: dict[str, Any], where: Where, position: str) -> Node:
        """A tie: the value of the nearest preceding choice with that ``id``; no decision of its own."""
        name = data["same"]
        at = where.key(data, "same")
        if name not in self._names:
            known = ", ".join(sorted(self._names)) or "none so far"
            raise self.error(f"no choice with id {name!r} before this point (ids: {known})", at)
        target, target_position = self._names[name]
        if target_position != position:
            raise self.error(f"choice {name!r} gives a {target_position}, but a {position} is needed here", at)
        decision = self.decisions[target.slot]
        parent, when = self._parent, self._when
        while decision.parent >= 0 and not (parent == decision.parent and set(when) <= set(decision.when)):
            if parent < 0:
                raise self.error(f"choice {name!r} does not exist wherever this tie does (it depends on "
                                 f"{decision.path}); tie within the option that holds it", at)
            parent, when = self.decisions[parent].parent, self.decisions[parent].when
        start = self._mark()
        self._ties.append((target.lo, target.hi))
        return self._finish(Same(target, name, where), start)

    def _range_values(self, data: dict[str, Any], where: Where) -> tuple[list[int], Where]:
        bounds, step = data["range"], data.get("step", 1)
        range_where = where.key(data, "range")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            raise self.error(f"range needs [low, high] integers, got {bounds!r}", range_where)
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise self.error(f"must be an integer >= 1, got {step!r}", where.key(data, "step"))
        low, high = bounds
        if low > high:
            raise self.error(f"low <= high must hold, but got (low={low}, high={high})", range_where)
        values = list(range(low, high + 1, step))
        if len(values) > _MAX_OPTIONS:
            raise self.error(f"at most {_MAX_OPTIONS} values, got {len(values)}", range_where)
        return values, range_where

    def _not_a_pick(self, data: Any, where: Where, expected: str) -> ConfigError:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else ""
        return self.error(f"expected {expected} or a choice ({{choice: [...]}}, {{ordinal: [...]}}, "
                          f"{{range: [low, high], step: s}}), got a mapping with keys [{keys}]", where)

    # -- values -------------------------------------------------------------------

    def value(self, data: Any, where: Where, annotation: Any,
              check: Callable[[Any], str | None] | None = None) -> Node:
        """A field value, or a choice of them, coerced by the field's own annotation."""
        pick = self._pick(data, where, lambda option, at: self.value(option, at, annotation, check),
                          position=f"value of type {_type_name(annotation)}")
        if pick is not None:
            return pick
        if isinstance(data, dict):
            raise self._not_a_pick(data, where, "a value")
        try:
            typed = coerce_field(data, annotation, where.path)
        except ConfigError as exc:
            raise exc.located(source=self.source, line=where.line) from None
        problem = check(typed) if check else None
        if problem:
            raise self.error(problem, where)
        return Const(typed, where)

    def component(self, data: Any, where: Where, role: str, *, optional: bool = False) -> Node:
        pick = self._pick(data, where, lambda option, at: self.component(option, at, role, optional=optional),
                          position=f"{role} component")
        if pick is not None:
            return pick
        start = self._mark()
        if data is None:
            if optional:
                return Const(None, where)
            raise self.error(f"a {role} is required here", where)
        if isinstance(data, str):
            data = LocatedDict(kind=data)
            data.lines = {}
        if not isinstance(data, dict):
            raise self.error(f"a {role} must be a kind or a mapping with 'kind', got {data!r}", where)
        if "kind" not in data:
            raise self._not_a_pick(data, where, f"a {role} (a mapping with 'kind')")
        kind_where = where.key(data, "kind")
        kind = data["kind"]
        if isinstance(kind, dict):
            raise self.error(f"'kind' cannot be a choice; make the {role} a choice of whole options, each with its "
                             f"own parameters", kind_where)
        if not isinstance(kind, str):
            raise self.error(f"must be a string, got {kind!r}", kind_where)
        try:
            cls = config_type(role, kind, path=kind_where.path)
        except UnknownKindError as exc:
            raise exc.located(source=self.source, line=kind_where.line) from None
        fields = {item.name: item for item in dataclasses.fields(cls)}
        nodes = self._fields(data, where, cls, fields, skip=("kind",))
        defaults = {name: item.default for name, item in fields.items() if name not in nodes}
        return self._finish(Record(cls, nodes, where, kind=kind, defaults=defaults), start)

    def _fields(self, data: dict[str, Any], where: Where, cls: type, fields: dict[str, Any],
                skip: tuple[str, ...] = ()) -> dict[str, Node]:
        hints = _HINTS.get(cls) or typing.get_type_hints(cls)
        nodes: dict[str, Node] = {}
        for key, value in data.items():
            if key in skip:
                continue
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(f"unknown key {key!r}{hint}; allowed: {', '.join(fields)}", where.key(data, key))
            nodes[key] = self.value(value, where.key(data, key), hints[key])
        for name, item in fields.items():
            required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
            if name not in nodes and required:
                raise self.error(f"missing required key {name!r}", where)
        return nodes

    def _mapping(self, data: Any, where: Where, what: str, allowed: tuple[str, ...],
                 required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.error(f"{what} must be a mapping, got {data!r}", where)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}", where.key(data, key))
        for key in required:
            if key not in data:
                raise self.error(f"missing required key {key!r}", where)
        return data

    def record(self, data: Any, where: Where, cls: type, what: str) -> Node:
        """InputSpec or Precision: a dataclass without kind."""
        pick = self._pick(data, where, lambda option, at: self.record(option, at, cls, what), position=what)
        if pick is not None:
            return pick
        start = self._mark()
        fields = {item.name: item for item in dataclasses.fields(cls)}
        data = self._mapping(data, where, what, tuple(fields))
        nodes = self._fields(data, where, cls, fields)
        for name, item in fields.items():
            if name not in nodes:
                nodes[name] = Const(item.default, where)
        return self._finish(Record(cls, nodes, where), start)

    # -- blocks and stages ------------------------------------------------------------

    def block(self, data: Any, where: Where) -> Node:
        pick = self._pick(data, where, self.block, position="block")
        if pick is not None:
            return pick
        start = self._mark()
        data = self._mapping(data, where, "a block", ("mixer", "ffn", "norm", "layer_scale", "precision"),
                             required=("mixer",))
        at = lambda key: where.key(data, key)  # noqa: E731
        nodes = {
            "mixer": self.component(data["mixer"], at("mixer"), "mixer"),
            "ffn": self.component(data.get("ffn", "none"), at("ffn"), "ffn"),
            "norm": self.component(data.get("norm", "none"), at("norm"), "norm"),
            "layer_scale": self.value(data.get("layer_scale"), at("layer_scale"), _HINTS[Block]["layer_scale"]),
            "precision": (Const(Precision(), at("precision")) if data.get("precision") is None
                          else self.record(data["precision"], at("precision"), Precision, "precision")),
        }
        return self._finish(Record(Block, nodes, where), start)

    def blocks(self, data: Any, where: Where) -> Node:
        pick = self._pick(data, where, self.blocks, position="blocks")
        if pick is not None:
            return pick
        start = self._mark()
        if isinstance(data, list):
            if not data:
                raise self.error("must be a non-empty list of blocks or runs", where)
            parts = [self.blocks(item, where.item(data, index)) for index, item in enumerate(data)]
            return self._finish(Concat(parts, where), start)
        if isinstance(data, dict) and "repeat" in data:
            return self._run(data, where, start)
        return self._finish(Single(self.block(data, where), where), start)

    def _run(self, data: dict[str, Any], where: Where, start: tuple[int, int]) -> Node:
        self._mapping(data, where, "a run", ("repeat", "block", "pattern", "independent"), required=("repeat",))
        if ("block" in data) == ("pattern" in data):
            raise self.error("a repeat needs exactly one of 'block' or 'pattern' beside it", where)
        independent = self.value(data.get("independent", False), where.key(data, "independent"), bool)
        if not isinstance(independent, Const):
            raise self.error("must be true or false, not a choice", where.key(data, "independent"))
        repeat_where = where.key(data, "repeat")
        repeat = self.value(data["repeat"], repeat_where, int,
                            lambda count: None if count >= 0 else f"must be >= 0, got {count}")
        if isinstance(repeat, Same) or (isinstance(repeat, Pick) and not repeat.leaf):
            raise self.error("must be an integer or one choice of integers (not nested)", repeat_where)
        counts = [o.constant for o in repeat.options] if isinstance(repeat, Pick) else [repeat.constant]  # type: ignore
        if "block" in data:
            items, unit_where = [data["block"]], [where.key(data, "block")]
        else:
            pattern = data["pattern"]
            pattern_where = where.key(data, "pattern")
            if not isinstance(pattern, list) or not pattern:
                raise self.error("must be a non-empty list of blocks", pattern_where)
            items = list(pattern)
            unit_where = [pattern_where.item(pattern, index) for index in range(len(pattern))]
        slot = repeat.slot if isinstance(repeat, Pick) else None
        units: list[list[Node]] = []
        copies = max(counts) if independent.constant else 1
        for copy in range(copies):
            needed = copy + 1 if independent.constant else 1
            when = tuple(index for index, count in enumerate(counts) if count >= needed)
            # copies after the first get their own path (``block@2``) so their decisions can be told apart
            wheres = [Where(f"{at.path}@{copy}", at.line) if copy else at for at in unit_where]
            if slot is not None and len(when) < len(counts):
                with self._condition(slot, when):
                    units.append([self.block(item, at) for item, at in zip(items, wheres, strict=True)])
            else:
                units.append([self.block(item, at) for item, at in zip(items, wheres, strict=True)])
        return self._finish(Run(repeat, units, independent.constant, where), start)

    def stage(self, data: Any, where: Where) -> Node:
        pick = self._pick(data, where, self.stage, position="stage")
        if pick is not None:
            return pick
        start = self._mark()
        data = self._mapping(data, where, "a stage", ("dim", "downsample", "blocks"), required=("dim", "blocks"))
        nodes = {
            "dim": self.value(data["dim"], where.key(data, "dim"), _HINTS[Stage]["dim"]),
            "downsample": self.component(data.get("downsample"), where.key(data, "downsample"), "downsample",
                                         optional=True),
            "blocks": self.blocks(data["blocks"], where.key(data, "blocks")),
        }
        return self._finish(Record(Stage, nodes, where), start)


def resolve(node: Node, v: np.ndarray) -> Node:
    """The option sub-tree a vector takes at ``node``."""
    while isinstance(node, (Pick, Same)):
        node = node.options[v[node.slot]] if isinstance(node, Pick) else node.target
    return node


def yaml_key_path(text: str, line: int) -> str:
    """Key path of the (last) mapping key on ``line``: used to place errors YAML reports by line only."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return ""
    found = ""

    def walk(node: yaml.Node, path: str) -> None:
        nonlocal found
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                key_path = f"{path}.{key.value}" if path else str(key.value)
                if key.start_mark.line + 1 == line:
                    found = key_path
                walk(value, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        walk(root, "")
    return found
