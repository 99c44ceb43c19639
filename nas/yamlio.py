"""YAML reading that remembers where each value came from; the one YAML and JSON dumper.

PyYAML's ``safe_load`` silently keeps the last of two duplicate keys and forgets
line numbers. Configs are hand-written, so errors must say ``file:line``: the
loader here builds ``dict``/``list`` subclasses that carry the line of every key
and item, and rejects duplicate keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError

__all__ = ["LocatedDict", "LocatedList", "load_yaml", "loads_yaml", "line_of", "dump_yaml", "dump_json"]


class LocatedDict(dict):
    """A mapping that knows the 1-based line of each key (``lines``) and of itself (``line``)."""

    line: int | None = None
    lines: dict[Any, int]


class LocatedList(list):
    """A sequence that knows the 1-based line of each item."""

    line: int | None = None
    lines: list[int]


class _Loader(yaml.SafeLoader):
    """Safe loader producing Located containers and refusing duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
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
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file ({exc})", source=str(path)) from None
    return loads_yaml(text, source=str(path))


def loads_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse YAML text (see :func:`load_yaml`)."""
    loader = _Loader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"not valid YAML: {exc.problem or exc}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    finally:
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


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Block style for nested structure; flow style (one line) for mappings and lists of scalars."""


def _is_leaf(items: Any) -> bool:
    return all(not isinstance(item, (dict, list)) for item in items)


def _represent_list(dumper: _Dumper, data: list) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_is_leaf(data))


def _represent_dict(dumper: _Dumper, data: dict) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=_is_leaf(data.values()))


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def dump_yaml(data: Any) -> str:
    """YAML text for plain data, keys in the given order."""
    return yaml.dump(_plain(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def dump_json(data: Any) -> str:
    """Indented JSON text for plain data."""
    return json.dumps(_plain(data), indent=2) + "\n"
