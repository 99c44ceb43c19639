"""Compiling a space file (located YAML data) into the tree of :mod:`nas.space.tree`.

Decisions are numbered depth-first as the file is read; every kind, key and
value is checked with the Arch file's own coercion (:func:`nas.arch.coerce_field`),
and errors carry ``file:line`` and the key path
(``stages[1].blocks.block.mixer.choice[2].heads``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from nas.arch import SCHEMA_VERSION, Block, InputSpec, Precision, Stage, coerce_field, config_type
from nas.errors import ConfigError, UnknownKindError
from nas.limits import Limits
from nas.limits import current as current_limits
from nas.space.tree import Cached, Concat, Const, Decision, Node, Pick, Record, Run, Same, Single, Where
from nas.walk import number_problem
from nas.yamlio import LocatedDict

__all__ = ["CompiledSpace", "Compiler", "compile_space", "yaml_key_path"]

_MAX_OPTIONS = 4096
_PICK_FORMS = [{"choice"}, {"ordinal"}, {"range"}, {"range", "step"}]


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


_HINTS: dict[type, dict[str, Any]] = {cls: typing.get_type_hints(cls) for cls in (Block, Stage, InputSpec, Precision)}


class Compiler:
    """Turns located YAML data into nodes, numbering decisions depth-first, and reports errors with file:line."""

    def __init__(self, source: str):
        self.source = source
        self.decisions: list[Decision] = []
        self._names: dict[str, tuple[Pick, str]] = {}
        self._ties: list[tuple[int, int]] = []
        self._parent = -1
        self._when: tuple[int, ...] = ()
        self.limits = current_limits()

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
        count = (high - low) // step + 1  # counted before it is listed: a range may be 10^30 wide
        if count > _MAX_OPTIONS:
            raise self.error(f"at most {_MAX_OPTIONS} values, got {count}", range_where)
        return list(range(low, high + 1, step)), range_where

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
            nodes[key] = self.value(value, where.key(data, key), hints[key], self._bounded(cls, key))
        for name, item in fields.items():
            required = item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
            if name not in nodes and required:
                raise self.error(f"missing required key {name!r}", where)
        return nodes

    def _bounded(self, cls: type, field: str) -> Callable[[Any], str | None]:
        """The size limit of a field (:mod:`nas.limits`), checked on every option as the file is read, so a
        space whose options cannot exist says so at load time."""
        limits = self.limits
        if cls is InputSpec and field == "resolution":
            return lambda value: limits.exceeded("resolution", value)
        return lambda value: _numbers_problem(limits, field, value)

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
                            lambda count: f"must be >= 0, got {count}" if count < 0
                            else self.limits.exceeded("blocks", count))
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
            "dim": self.value(data["dim"], where.key(data, "dim"), _HINTS[Stage]["dim"], self._bounded(Stage, "dim")),
            "downsample": self.component(data.get("downsample"), where.key(data, "downsample"), "downsample",
                                         optional=True),
            "blocks": self.blocks(data["blocks"], where.key(data, "blocks")),
        }
        # Token clustering is an inference-time change of a trained model (arXiv:2210.01035), not a decision of
        # a space: a space's points leave it out, and a clustered Arch is no point of any space.
        return self._finish(Record(Stage, nodes, where, defaults={"clustering": None}), start)




def _numbers_problem(limits: Limits, field: str, value: Any) -> str | None:
    """The first number of ``value`` (a number or a tuple of them) over its limit, as the walk judges it."""
    for number in value if isinstance(value, tuple) else (value,):
        problem = number_problem(limits, field, number)
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class CompiledSpace:
    """A space file compiled: its metadata, the tree of each Arch part, and the decisions (slot order)."""

    name: str
    description: str
    source: str
    input: Node
    stem: Node
    stages: tuple[Node, ...]
    head: Node
    decisions: tuple[Decision, ...]


def compile_space(data: Any, *, source: str = "<space>", default_name: str = "space") -> CompiledSpace:
    """Compile located YAML data of a space file (see ``spaces/README.md`` for the format).

    Raises:
        ConfigError: a malformed space, with ``file:line`` and the key path.
    """
    compiler = Compiler(source)
    root = Where("", getattr(data, "line", None))
    data = compiler._mapping(data, root, "a space", ("schema", "name", "description", "input", "stem", "stages",
                                                      "head"), required=("schema", "input", "stem", "stages", "head"))
    if data["schema"] != SCHEMA_VERSION:
        raise compiler.error(f"must be {SCHEMA_VERSION}, got {data['schema']!r}", root.key(data, "schema"))
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise compiler.error(f"must be a string, got {data[key]!r}", root.key(data, key))
    stages = data["stages"]
    if not isinstance(stages, list) or not stages:
        raise compiler.error("must be a non-empty list of stages (the number of stages is fixed per space)",
                             root.key(data, "stages"))
    input_node = compiler.record(data["input"], root.key(data, "input"), InputSpec, "input")
    stem = compiler.component(data["stem"], root.key(data, "stem"), "stem")
    stages_where = root.key(data, "stages")
    stage_nodes = tuple(compiler.stage(item, stages_where.item(stages, index)) for index, item in enumerate(stages))
    head = compiler.component(data["head"], root.key(data, "head"), "head")
    return CompiledSpace(name=data.get("name", default_name), description=" ".join(data.get("description", "").split()),
                         source=source, input=input_node, stem=stem, stages=stage_nodes, head=head,
                         decisions=tuple(compiler.decisions))


def yaml_key_path(text: str, line: int) -> str:
    """Key path of the (last) mapping key on ``line``: used to place errors YAML reports by line only."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return ""
    found = ""

    seen: set[int] = set()  # an alias is walked once: a billion-laughs document stays cheap, a cycle ends

    def walk(node: yaml.Node, path: str) -> None:
        nonlocal found
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):  # a complex key (the loader refuses it) has no path
                    continue
                key_path = f"{path}.{key.value}" if path else str(key.value)
                if key.start_mark.line + 1 == line:
                    found = key_path
                walk(value, key_path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        try:
            walk(root, "")
        except RecursionError:
            return ""
    return found
