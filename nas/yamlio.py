"""YAML reading that remembers where each value came from; the one YAML and JSON dumper.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and forgets
line numbers. Configs are hand-written, so errors must say ``file:line``: the
loader here builds ``dict``/``list`` subclasses that carry the line of every key
and item, and rejects duplicate keys.

It also refuses, with ``file:line``, what would otherwise escape as a Python
error: nesting deeper than ``NAS_MAX_YAML_DEPTH`` (PyYAML composes recursively),
a document whose aliases expand to more than ``NAS_MAX_YAML_NODES`` values
(billion laughs: every later walk over the data expands them), a mapping key
that is not a scalar (``? [a, b]``), a character YAML does not allow (NUL) and
a value its tag cannot hold (``2020-13-45``). See :mod:`nas.limits`.

Every YAML file ``nas`` writes goes through :func:`dump_yaml` (laid out by a
:class:`YamlStyle`), every JSON file through :func:`dump_json`; both take
:func:`plain` data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError
from nas.limits import current as current_limits
from nas.limits import variable

__all__ = ["LocatedDict", "LocatedList", "load_yaml", "loads_yaml", "read_text", "line_of", "plain", "YamlStyle",
           "CONFIG_STYLE", "TABLE_STYLE", "dump_yaml", "dump_json"]


class LocatedDict(dict):
    """A mapping that knows the 1-based line of each key (``lines``) and of itself (``line``)."""

    line: int | None = None
    lines: dict[Any, int]


class LocatedList(list):
    """A sequence that knows the 1-based line of each item."""

    line: int | None = None
    lines: list[int]


class _Loader(yaml.SafeLoader):
    """Safe loader producing Located containers, refusing duplicate keys, deep nesting and alias bombs."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0
        self.max_depth = current_limits().yaml_depth

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise ConfigError(f"nested deeper than the limit {variable('yaml_depth')}={self.max_depth}",
                                  source=self.name, line=mark.line + 1)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError, AttributeError, IndexError) as exc:
            # a tag's constructor refusing what it is given (a bad date, ``!!seq`` on a scalar)
            what = _shown(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            raise ConfigError(f"not valid YAML: {what} is not a valid {node.tag.rsplit(':', 1)[-1]} ({exc})",
                              source=self.name, line=node.start_mark.line + 1) from None


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _expanded_size(root: yaml.Node, limit: int, source: str) -> int:
    """The number of nodes of ``root`` with every alias expanded; raises once it exceeds ``limit``.

    Each distinct node is counted once and its size memoised, so a billion-laughs document costs as
    much as its text.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: an alias to one of them is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done or not children:
            open_nodes.discard(id(node))
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > limit:
                raise ConfigError(f"expands to more than the limit {variable('yaml_nodes')}={limit} values "
                                  "(aliases repeated inside aliases)", source=source, line=node.start_mark.line + 1)
            sizes[id(node)] = size
            continue
        if id(node) in open_nodes:
            raise ConfigError("an alias refers to a value that contains it", source=source,
                              line=node.start_mark.line + 1)
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key_node, yaml.ScalarNode) or isinstance(key, (list, dict, set)):
            raise ConfigError("a mapping key must be a plain value, not a list or mapping",
                              source=loader.name, line=key_node.start_mark.line + 1)
        if key in result:
            raise ConfigError(
                f"duplicate key {key!r} (first on line {result.lines[key]})",
                source=loader.name,
                line=key_node.start_mark.line + 1,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """Read one YAML document with line information.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or has a duplicate key.
    """
    return loads_yaml(read_text(path), source=str(path))


def read_text(path: str | os.PathLike[str]) -> str:
    """A config file's text, decoded as UTF-8.

    Raises:
        ConfigError: the file is missing or unreadable, or has bytes that are not UTF-8 (with their line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror or exc})", source=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded", source=str(path),
                          line=data.count(b"\n", 0, exc.start) + 1) from None


def loads_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse YAML text (see :func:`load_yaml`)."""
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses a NUL here already
        loader.name = source
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, current_limits().yaml_nodes, source)
        return loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        raise ConfigError(f"not valid YAML: character U+{code:04X} is not allowed", source=source,
                          line=line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"not valid YAML: {exc.problem or exc}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    except RecursionError:  # a chain of merge keys (<<) longer than Python's stack
        raise ConfigError("not valid YAML: nested too deeply", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def line_of(document: Any, path: tuple[str | int, ...]) -> int | None:
    """The line of the deepest element of ``path`` that the document located, if any."""
    line = getattr(document, "line", None)
    node = document
    for part in path:
        if isinstance(node, LocatedDict) and part in node:
            line = node.lines.get(part, line)
            node = node[part]
        elif isinstance(node, LocatedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lines[part]
            node = node[part]
        else:
            break
    return line


def plain(value: Any) -> Any:
    """``value`` as plain data for a dumper: every mapping a ``dict``, every list or tuple a ``list``, recursively.

    Located containers, mapping proxies and tuples from frozen dataclasses all dump as plain YAML/JSON.
    """
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _is_leaf(items: Iterable[Any]) -> bool:
    return all(not isinstance(item, (dict, list)) for item in items)


def _is_short(items: Iterable[Any]) -> bool:
    return all(isinstance(item, (int, float, bool, type(None))) or (isinstance(item, str) and len(item) <= 40)
               for item in items)


def _dumper(one_line: Callable[[Iterable[Any]], bool]) -> type[yaml.SafeDumper]:
    """A safe dumper in block style, but for the mappings and lists ``one_line`` accepts (flow style)."""

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", data, flow_style=one_line(data)))
    Dumper.add_representer(dict, lambda dumper, data: dumper.represent_mapping(
        "tag:yaml.org,2002:map", data.items(), flow_style=one_line(data.values())))
    return Dumper


@dataclass(frozen=True)
class YamlStyle:
    """How :func:`dump_yaml` lays a document out.

    Attributes:
        width: the line width PyYAML wraps at.
        one_line: whether a mapping's values or a list's items go on one line (flow style).
        allow_unicode: write non-ASCII characters as they are rather than escaped.
    """

    width: int
    one_line: Callable[[Iterable[Any]], bool]
    allow_unicode: bool = False
    dumper: type[yaml.SafeDumper] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dumper", _dumper(self.one_line))


CONFIG_STYLE = YamlStyle(width=100, one_line=_is_leaf)
"""Arch files, run files, the local target: collections of scalars on one line, anything nested in block style."""

TABLE_STYLE = YamlStyle(width=118, one_line=_is_short, allow_unicode=True)
"""The packaged target files that ``nas.latency.calibration.fit`` rewrites: also a short mapping or list of
numbers and short words on one line, so that calibration tables and validation figures stay a line per row."""


def dump_yaml(data: Any, *, style: YamlStyle = CONFIG_STYLE) -> str:
    """YAML text for plain data (see :func:`plain`), keys in the given order."""
    return yaml.dump(plain(data), Dumper=style.dumper, sort_keys=False, default_flow_style=False, width=style.width,
                     allow_unicode=style.allow_unicode)


def dump_json(data: Any) -> str:
    """Indented JSON text for plain data."""
    return json.dumps(plain(data), indent=2) + "\n"
