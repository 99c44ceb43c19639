"""The one contract: ``Arch``, a frozen, fully specified architecture config.

Everything in ``nas`` meets here. A search space samples Archs, ``build`` turns
one into a module, ``cost`` and the latency predictors price it, and
``nas export`` writes it as YAML/JSON for other teams.

Layout of the tree (see DESIGN.md)::

    Arch
      input:  resolution, channels
      stem:   a component (kind + typed params), with the output width ``dim``
      stages: [Stage(dim, downsample component or None, blocks)]
        Block(mixer, ffn, norm, layer_scale, precision)
      head:   a component with ``num_classes``

A *component* is a small frozen dataclass registered under a role (stem,
downsample, mixer, ffn, norm, head) and a kind. The classes live next to their
modules in ``nas.blocks`` and register themselves here, so this module knows the
schema of every kind without importing any module code.

Validation happens on construction and reports the field path
(``stages[2].blocks[0].mixer.heads: 5 does not divide dim 320``); files add
``file:line`` in front.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from nas.errors import ConfigError, UnknownKindError, closest_first
from nas.yamlio import dump_json, dump_yaml, line_of, load_yaml, loads_yaml

__all__ = [
    "SCHEMA_VERSION",
    "ROLES",
    "Component",
    "Site",
    "Precision",
    "Block",
    "Stage",
    "InputSpec",
    "Published",
    "Arch",
    "register_config",
    "config_type",
    "list_kinds",
    "parse_component",
    "coerce_field",
]

SCHEMA_VERSION = 1
ROLES = ("stem", "downsample", "mixer", "ffn", "norm", "head")
_ID_LENGTH = 12


@dataclass(frozen=True)
class Site:
    """Where a component sits: what it may check itself against.

    Attributes:
        in_dim: channels coming in.
        dim: channels of the stage (what a block must put out).
        height: feature-map height coming in.
        width: feature-map width coming in.
        block: the block the component belongs to, for mixers that own the whole block.
        prefix_tokens: extra tokens (a class token) travelling with the feature map.
    """

    in_dim: int
    dim: int
    height: int
    width: int
    block: Block | None = None
    prefix_tokens: int = 0


@dataclass(frozen=True)
class Component:
    """Base of every typed ``kind + params`` config.

    Subclasses are frozen dataclasses registered with :func:`register_config`;
    they override :meth:`check` for rules that involve the site (``heads``
    divides ``dim``) and :meth:`output_size` when they change the spatial size.
    A config whose ``check`` reads ``site.block`` (a mixer that owns its block
    and checks the block's norm or FFN) sets ``reads_block = True``: a search
    space then judges it per whole block rather than per component.
    """

    role: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    reads_block: ClassVar[bool] = False
    # What the proxy scale, the supernet and the cost model need to know, as data (nas.blocks.contract).
    width_fields: ClassVar[tuple[str, ...]] = ()
    resolution_fields: ClassVar[dict[str, Any]] = {}
    sharing: ClassVar[dict[str, Any]] = {}
    key_fields: ClassVar[tuple[str, ...]] = ()
    ops: ClassVar[dict[str, str]] = {}

    def check(self, site: Site) -> None:
        """Raise ``ConfigError(path=<field>)`` if the component cannot sit at ``site``."""

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size after this component (most keep it)."""
        return height, width

    def to_dict(self) -> dict[str, Any]:
        """``{'kind': ..., field: value, ...}`` with tuples as lists."""
        out: dict[str, Any] = {"kind": self.kind}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            out[item.name] = list(value) if isinstance(value, tuple) else value
        return out


_CONFIGS: dict[str, dict[str, type[Component]]] = {role: {} for role in ROLES}


def register_config(role: str, kind: str, config: type[Component]) -> None:
    """Make ``kind`` known under ``role`` with its config dataclass.

    Raises:
        ValueError: the role is unknown, the kind is taken, or the config is not a frozen dataclass.
    """
    if role not in _CONFIGS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if kind in _CONFIGS[role]:
        raise ValueError(f"{role} kind {kind!r} is already registered to {_CONFIGS[role][kind].__name__}")
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise ValueError(f"{config.__name__} must be a frozen dataclass")
    names = {item.name for item in dataclasses.fields(config)}
    required = {"stem": "dim", "head": "num_classes"}.get(role)
    if required and required not in names:
        raise ValueError(f"a {role} config must have a {required!r} field; {config.__name__} has none")
    config.role = role
    config.kind = kind
    _CONFIGS[role][kind] = config


def list_kinds(role: str) -> list[str]:
    """The registered kinds of ``role``, sorted."""
    return sorted(_CONFIGS[role])


def config_type(role: str, kind: str, *, path: str = "") -> type[Component]:
    """The config class of ``kind``; an unknown kind lists the known ones, closest first."""
    known = _CONFIGS[role]
    if kind in known:
        return known[kind]
    close = closest_first(kind, known)
    raise UnknownKindError(f"unknown {role} kind {kind!r}; known: {', '.join(close)}", path=path)


# ---------------------------------------------------------------------------
# parsing helpers: plain data -> typed values, with field paths in errors


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def coerce_field(value: Any, annotation: Any, path: str) -> Any:
    """Check ``value`` against a field annotation; convert lists to tuples and ints to floats.

    The one coercion of config values, shared by Arch files and space files.

    Raises:
        ConfigError: the value does not fit the annotation (the message names the rule, ``path`` the field).
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(" or ".join(errors), path=path)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {value!r}", path=path)
        return value
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list, got {value!r}", path=path)
        return tuple(_coerce(item, item_type, _join(path, index)) for index, item in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {value!r}", path=path)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {value!r}", path=path)
        return value
    if annotation is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-5 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {value!r}", path=path)
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {value!r}", path=path)
        return value
    raise TypeError(f"unsupported field annotation {annotation!r} at {path}")


_coerce = coerce_field


def _mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, got {value!r}", path=path)
    return value


def _fill_dataclass(cls: type, data: dict[str, Any], path: str, *, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys and missing fields are errors."""
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    for key in data:
        if key not in fields and key not in skip:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r}{hint}; allowed: {', '.join(fields)}", path=_join(path, str(key)))
    values = {}
    for name, item in fields.items():
        if name in data:
            values[name] = _coerce(data[name], hints[name], _join(path, name))
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {name!r}", path=path)
    return cls(**values)


def parse_component(role: str, data: Any, path: str) -> Component:
    """A component from ``{'kind': ..., params}`` or a bare kind string."""
    if isinstance(data, str):
        data = {"kind": data}
    data = _mapping(data, path, role)
    if "kind" not in data:
        raise ConfigError(f"missing required key 'kind' (one of: {', '.join(list_kinds(role))})", path=path)
    kind = data["kind"]
    if not isinstance(kind, str):
        raise ConfigError(f"must be a string, got {kind!r}", path=_join(path, "kind"))
    cls = config_type(role, kind, path=_join(path, "kind"))
    return _fill_dataclass(cls, data, path, skip=("kind",))


# ---------------------------------------------------------------------------
# the tree


@dataclass(frozen=True)
class Precision:
    """Numeric format of a block's weights and activations (fake-quantised when not float32)."""

    weights: int = 32
    activations: int = 32
    format: Literal["float", "int"] = "float"

    def check(self, path: str) -> None:
        allowed = {"float": (16, 32), "int": (2, 3, 4, 5, 6, 7, 8)}[self.format]
        for name in ("weights", "activations"):
            bits = getattr(self, name)
            if bits not in allowed:
                raise ConfigError(
                    f"{bits} bits is not a {self.format} format; allowed: {', '.join(map(str, allowed))}",
                    path=_join(path, name),
                )

    @property
    def is_default(self) -> bool:
        return self == Precision()


@dataclass(frozen=True)
class Block:
    """One residual block: a token mixer, an FFN, their norm, layer scale and precision.

    Most mixers follow the MetaFormer template ``x + ls(mixer(norm(x)))`` then
    ``x + ls(ffn(norm(x)))``; mixers that own their block (ResNet bottleneck,
    MBConv, ConvNeXt, EfficientViT's sandwich) read ``norm``, ``ffn`` and
    ``layer_scale`` themselves.
    """

    mixer: Component
    ffn: Component
    norm: Component
    layer_scale: float | None = None
    precision: Precision = field(default_factory=Precision)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mixer": self.mixer.to_dict(),
            "ffn": self.ffn.to_dict(),
            "norm": _compact(self.norm),
            "layer_scale": self.layer_scale,
        }
        if not self.precision.is_default:
            out["precision"] = dataclasses.asdict(self.precision)
        return out


def _compact(component: Component) -> Any:
    """A component without parameters is written as its bare kind."""
    return component.kind if not dataclasses.fields(component) else component.to_dict()


@dataclass(frozen=True)
class Stage:
    """A run of blocks at one width; ``downsample`` (or the stem) brings the input to ``dim``."""

    dim: int
    downsample: Component | None
    blocks: tuple[Block, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "downsample": None if self.downsample is None else self.downsample.to_dict(),
            "blocks": _compress_blocks([block.to_dict() for block in self.blocks]),
        }


def _compress_blocks(blocks: list[dict[str, Any]]) -> Any:
    """Shortest of ``{repeat, block}``, ``{repeat, pattern}`` or a run-length list."""
    count = len(blocks)
    for period in range(1, count // 2 + 1):
        if count % period == 0 and blocks == blocks[:period] * (count // period):
            if period == 1:
                return {"repeat": count, "block": blocks[0]}
            return {"repeat": count // period, "pattern": blocks[:period]}
    runs: list[Any] = []
    for block in blocks:
        if runs and isinstance(runs[-1], dict) and runs[-1].get("block") == block:
            runs[-1]["repeat"] += 1
        else:
            runs.append({"repeat": 1, "block": block})
    return [run["block"] if run["repeat"] == 1 else run for run in runs]


@dataclass(frozen=True)
class InputSpec:
    """The input image: square ``resolution`` and ``channels``."""

    resolution: int
    channels: int = 3


@dataclass(frozen=True)
class Published:
    """A paper's own figures for this point, with where they were read."""

    params_m: float
    gmacs: float
    source: str
    resolution: int | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Arch:
    """A fully specified architecture; validates itself on construction.

    Example:
        >>> import nas
        >>> arch = nas.Arch.load("spaces/zoo/poolformer.yaml#poolformer_s12")  # doctest: +SKIP
        >>> arch.id  # doctest: +SKIP
        '3f0c9a1b2d4e'
    """

    input: InputSpec
    stem: Component
    stages: tuple[Stage, ...]
    head: Component
    name: str | None = None
    published: Published | None = None

    def __post_init__(self) -> None:
        if self.stem.dim is None and self.stages:  # type: ignore[attr-defined]
            object.__setattr__(self, "stem", dataclasses.replace(self.stem, dim=self.stages[0].dim))
        self._validate()

    # -- validation -----------------------------------------------------------

    def _validate(self) -> None:
        if self.input.resolution < 1:
            raise ConfigError(f"must be >= 1, got {self.input.resolution}", path="input.resolution")
        if self.input.channels < 1:
            raise ConfigError(f"must be >= 1, got {self.input.channels}", path="input.channels")
        if not self.stages:
            raise ConfigError("an arch needs at least one stage", path="stages")
        height = width = self.input.resolution
        self.stem.check(Site(self.input.channels, self.stem.dim, height, width))  # type: ignore[attr-defined]
        height, width = self._size_after(self.stem, height, width, "stem")
        in_dim = self.stem.dim  # type: ignore[attr-defined]
        prefix = getattr(self.stem, "prefix_tokens", 0)
        for index, stage in enumerate(self.stages):
            path = f"stages[{index}]"
            if stage.dim < 1:
                raise ConfigError(f"must be >= 1, got {stage.dim}", path=f"{path}.dim")
            if not stage.blocks:
                raise ConfigError("a stage needs at least one block", path=f"{path}.blocks")
            if stage.downsample is not None:
                _checked(stage.downsample, Site(in_dim, stage.dim, height, width, prefix_tokens=prefix),
                         f"{path}.downsample")
                height, width = self._size_after(stage.downsample, height, width, f"{path}.downsample")
                in_dim = stage.dim
            for number, block in enumerate(stage.blocks):
                block_path = f"{path}.blocks[{number}]"
                site = Site(in_dim, stage.dim, height, width, block, prefix)
                for role in ("mixer", "ffn", "norm"):
                    _checked(getattr(block, role), site, f"{block_path}.{role}")
                if block.layer_scale is not None and block.layer_scale <= 0:
                    raise ConfigError(f"must be > 0 or null, got {block.layer_scale}", path=f"{block_path}.layer_scale")
                block.precision.check(f"{block_path}.precision")
                height, width = self._size_after(block.mixer, height, width, f"{block_path}.mixer")
                in_dim = stage.dim
        _checked(self.head, Site(in_dim, in_dim, height, width, prefix_tokens=prefix), "head")

    @staticmethod
    def _size_after(component: Component, height: int, width: int, path: str) -> tuple[int, int]:
        height, width = component.output_size(height, width)
        if height < 1 or width < 1:
            raise ConfigError(f"reduces the feature map to {height}x{width}; the input resolution is too small",
                              path=path)
        return height, width

    # -- identity and (de)serialisation ----------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file format (``schema: 1`` first)."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION}
        if self.name is not None:
            out["name"] = self.name
        out["input"] = dataclasses.asdict(self.input)
        out["stem"] = self.stem.to_dict()
        out["stages"] = [stage.to_dict() for stage in self.stages]
        out["head"] = self.head.to_dict()
        if self.published is not None:
            out["published"] = {k: v for k, v in dataclasses.asdict(self.published).items() if v is not None}
        return out

    @cached_property
    def id(self) -> str:
        """Short hash of the canonical JSON of the architecture (name and published figures excluded)."""
        data = self.to_dict()
        data.pop("name", None)
        data.pop("published", None)
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:_ID_LENGTH]

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def to_json(self) -> str:
        return dump_json(self.to_dict())

    def save(self, path: str | Path) -> None:
        """Write YAML (or JSON for a ``.json`` path) atomically."""
        from nas.atomic import write_atomic

        path = Path(path)
        write_atomic(path, self.to_json() if path.suffix == ".json" else self.to_yaml())

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> Arch:
        """Parse plain data; errors carry the field path and, for located data, the line."""
        try:
            return _parse_arch(data)
        except ConfigError as exc:
            line = line_of(data, _document_path(data, _path_parts(exc.path)))
            raise exc.located(source=source, line=line) from None

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> Arch:
        return cls.from_dict(loads_yaml(text, source=source), source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        """Read an Arch from a YAML or JSON file."""
        path = Path(path)
        if path.suffix == ".json":
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read file ({exc.strerror})", source=str(path)) from None
            return cls.from_json(text, source=str(path))
        return cls.from_dict(load_yaml(path), source=str(path))

    def replace(self, **changes: Any) -> Arch:
        """A validated copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)

    def with_resolution(self, resolution: int) -> Arch:
        """The same design at another input resolution (validated again)."""
        return self.replace(input=dataclasses.replace(self.input, resolution=resolution))

    @property
    def num_blocks(self) -> int:
        return sum(len(stage.blocks) for stage in self.stages)


def _checked(component: Component, site: Site, path: str) -> None:
    try:
        component.check(site)
    except ConfigError as exc:
        raise exc.located(prefix=path) from None


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _path_parts(path: str) -> tuple[str | int, ...]:
    return tuple(name if name else int(index) for name, index in _PATH_TOKEN.findall(path))


def _document_path(document: Any, parts: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Translate an expanded path (``blocks[5]``) into the document's (``blocks.pattern[1]``)."""
    out: list[str | int] = []
    node = document
    index = 0
    while index < len(parts):
        part = parts[index]
        if part == "blocks" and index + 1 < len(parts) and isinstance(parts[index + 1], int) and isinstance(node, dict):
            inner = _block_in_document(node.get("blocks"), parts[index + 1])  # type: ignore[arg-type]
            out.append("blocks")
            out.extend(inner)
            node = node.get("blocks")
            for step in inner:
                node = node[step] if isinstance(node, (dict, list)) else None
            index += 2
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
        index += 1
    return tuple(out)


def _expanded_length(item: Any) -> int:
    if isinstance(item, list):
        return sum(_expanded_length(child) for child in item)
    if isinstance(item, dict) and isinstance(item.get("repeat"), int):
        unit = item.get("pattern")
        return item["repeat"] * (len(unit) if isinstance(unit, list) else 1)
    return 1


def _block_in_document(blocks: Any, number: int) -> list[str | int]:
    """Document steps from a ``blocks`` value to the block that expands to position ``number``."""
    if isinstance(blocks, list):
        for position, item in enumerate(blocks):
            length = _expanded_length(item)
            if number < length:
                return [position, *_block_in_document(item, number)]
            number -= length
        return []
    if isinstance(blocks, dict) and "repeat" in blocks:
        pattern = blocks.get("pattern")
        if isinstance(pattern, list) and pattern:
            return ["pattern", number % len(pattern)]
        return ["block"]
    return []


def _parse_arch(data: Any) -> Arch:
    data = _mapping(data, "", "an arch")
    allowed = {"schema", "name", "input", "stem", "stages", "head", "published"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r}; allowed: {', '.join(sorted(allowed))}", path=str(key))
    schema = data.get("schema")
    if schema != SCHEMA_VERSION:
        raise ConfigError(f"must be {SCHEMA_VERSION} (this version of nas reads schema {SCHEMA_VERSION}), "
                          f"got {schema!r}", path="schema")
    for key in ("input", "stem", "stages", "head"):
        if key not in data:
            raise ConfigError(f"missing required key {key!r}", path="")
    name = None if data.get("name") is None else _coerce(data["name"], str, "name")
    stages_data = data["stages"]
    if not isinstance(stages_data, list):
        raise ConfigError(f"must be a list of stages, got {stages_data!r}", path="stages")
    published = None
    if data.get("published") is not None:
        published = _fill_dataclass(Published, _mapping(data["published"], "published", "published"), "published")
    return Arch(
        input=_fill_dataclass(InputSpec, _mapping(data["input"], "input", "input"), "input"),
        stem=parse_component("stem", data["stem"], "stem"),
        stages=tuple(_parse_stage(stage, f"stages[{index}]") for index, stage in enumerate(stages_data)),
        head=parse_component("head", data["head"], "head"),
        name=name,
        published=published,
    )


def _parse_stage(data: Any, path: str) -> Stage:
    data = _mapping(data, path, "a stage")
    for key in data:
        if key not in ("dim", "downsample", "blocks"):
            raise ConfigError(f"unknown key {key!r}; allowed: dim, downsample, blocks", path=_join(path, key))
    for key in ("dim", "blocks"):
        if key not in data:
            raise ConfigError(f"missing required key {key!r}", path=path)
    downsample = data.get("downsample")
    return Stage(
        dim=_coerce(data["dim"], int, _join(path, "dim")),
        downsample=None if downsample is None else parse_component("downsample", downsample, _join(path, "downsample")),
        blocks=tuple(_expand_blocks(data["blocks"], _join(path, "blocks"))),
    )


def _expand_blocks(data: Any, path: str) -> list[Block]:
    """Blocks as written: a block, ``{repeat, block}``, ``{repeat, pattern}``, or a list of these."""
    if isinstance(data, list):
        blocks: list[Block] = []
        for index, item in enumerate(data):
            blocks.extend(_expand_blocks(item, _join(path, index)))
        return blocks
    data = _mapping(data, path, "blocks")
    if "repeat" not in data:
        return [_parse_block(data, path)]
    repeat = _coerce(data["repeat"], int, _join(path, "repeat"))
    if repeat < 1:
        raise ConfigError(f"must be >= 1, got {repeat}", path=_join(path, "repeat"))
    keys = set(data) - {"repeat"}
    if keys == {"block"}:
        unit = [_parse_block(data["block"], _join(path, "block"))]
    elif keys == {"pattern"}:
        pattern = data["pattern"]
        if not isinstance(pattern, list) or not pattern:
            raise ConfigError("must be a non-empty list of blocks", path=_join(path, "pattern"))
        unit = [_parse_block(item, _join(_join(path, "pattern"), index)) for index, item in enumerate(pattern)]
    else:
        raise ConfigError("a repeat needs exactly one of 'block' or 'pattern' beside it", path=path)
    return unit * repeat


def _parse_block(data: Any, path: str) -> Block:
    data = _mapping(data, path, "a block")
    allowed = ("mixer", "ffn", "norm", "layer_scale", "precision")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r}; allowed: {', '.join(allowed)}", path=_join(path, key))
    if "mixer" not in data:
        raise ConfigError("missing required key 'mixer'", path=path)
    layer_scale = data.get("layer_scale")
    precision = data.get("precision")
    return Block(
        mixer=parse_component("mixer", data["mixer"], _join(path, "mixer")),
        ffn=parse_component("ffn", data.get("ffn", "none"), _join(path, "ffn")),
        norm=parse_component("norm", data.get("norm", "none"), _join(path, "norm")),
        layer_scale=None if layer_scale is None else _coerce(layer_scale, float, _join(path, "layer_scale")),
        precision=Precision() if precision is None else _fill_dataclass(
            Precision, _mapping(precision, _join(path, "precision"), "precision"), _join(path, "precision")),
    )
