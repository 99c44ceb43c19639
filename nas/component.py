"""Components and what they are checked against: the typed ``kind + params`` configs, their registry, the coercer.

A *component* is a small frozen dataclass registered under a role (stem,
downsample, mixer, ffn, norm, head) and a kind. The classes live next to their
modules in ``nas.blocks`` and register themselves here, so ``nas.arch`` knows
the schema of every kind without importing any module code. A component also
declares what the walk through an Arch (:mod:`nas.walk`) needs from it: its
checks against a :class:`Site`, the feature-map size it puts out, its tensor
layout and the prefix tokens it adds.

:func:`coerce_field` is the one conversion of plain config values (YAML/JSON)
into typed fields, with the field path in every error; Arch files, space files
and the other settings files share it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from nas.errors import ConfigError
from nas.registry import Registry

if TYPE_CHECKING:
    from nas.arch import Block

__all__ = [
    "ROLES",
    "Layout",
    "Site",
    "Component",
    "option_field",
    "register_config",
    "config_type",
    "list_kinds",
    "parse_component",
    "coerce_field",
]

ROLES = ("stem", "downsample", "mixer", "ffn", "norm", "head")

Layout = Literal["nchw", "nlc"]  # (batch, channels, height, width) or (batch, prefix + height * width, channels)


class Site(NamedTuple):
    """Where a component sits: what it may check itself against, and what the walk carries past it.

    A named tuple rather than a frozen dataclass: the hot paths (batch pricing, space validity) create and
    intern sites on every cache miss, and tuples are built and hashed in C.

    Attributes:
        in_dim: channels coming in.
        dim: channels of the stage (what a block must put out).
        height: feature-map height coming in.
        width: feature-map width coming in.
        block: the block the component belongs to, for mixers that own the whole block.
        prefix_tokens: extra tokens (a class token) travelling with the feature map.
        layout: the tensor layout coming in (a component of another layout gets a conversion first).
    """

    in_dim: int
    dim: int
    height: int
    width: int
    block: Block | None = None
    prefix_tokens: int = 0
    layout: Layout = "nchw"


@dataclass(frozen=True)
class Component:
    """Base of every typed ``kind + params`` config.

    Subclasses are frozen dataclasses registered with :func:`register_config`;
    they override :meth:`check` for rules that involve the site (``heads``
    divides ``dim``) and :meth:`output_size` when they change the spatial size.
    A config whose ``check`` reads ``site.block`` (a mixer that owns its block
    and checks the block's norm or FFN) sets ``reads_block = True``: a search
    space then judges it per whole block rather than per component. A mixer
    whose module takes ``in_dim != dim`` channels (a projected shortcut) sets
    ``changes_width = True``; the walk refuses any other mixer where the width
    coming in differs from its stage's. A stem that hands the image on unchanged, for a body that embeds the
    image itself, sets ``keeps_channels = True``: its ``dim`` is the input's channels, and the proxy scale
    keeps it so rather than scaling it like a width. A mixer whose module computes with other ops at some
    precisions (QKR's merged query-key product under integer weights, :mod:`nas.blocks.qkr`) makes
    ``ops_follow_precision`` true (a property where a field decides): the cost model then traces its block at
    the block's precision instead of as the float module.

    Attributes:
        layout: the tensor layout the component works in (a mixer, a downsampler) or puts out (a stem); a
            config whose layout depends on its fields makes it a property. Modules read it from here.
        prefix_tokens: tokens the component puts in front of the feature map (a stem's class token, or a
            downsampler's that starts a stage with one).
    """

    role: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    reads_block: ClassVar[bool] = False
    changes_width: ClassVar[bool] = False
    keeps_channels: ClassVar[bool] = False
    ops_follow_precision: ClassVar[bool] = False
    layout: ClassVar[Layout] = "nchw"
    prefix_tokens: ClassVar[int] = 0
    # What the proxy scale, the supernet and the cost model need to know, as data (nas.blocks.contract).
    width_fields: ClassVar[tuple[str, ...]] = ()
    resolution_fields: ClassVar[dict[str, Any]] = {}
    sharing: ClassVar[dict[str, Any]] = {}
    key_fields: ClassVar[tuple[str, ...]] = ()
    ffns_by_path: ClassVar[bool] = False
    holds_layers: ClassVar[bool] = False
    ops: ClassVar[dict[str, str]] = {}

    def check(self, site: Site) -> None:
        """Raise ``ConfigError(path=<field>)`` if the component cannot sit at ``site``.

        A check never reads ``site.layout``: a component gets its input in its own layout (the builder
        converts), so the layout coming in cannot decide whether it fits; space validity relies on this.
        """

    def check_options(self) -> None:
        """Raise ``ConfigError(path=<field>)`` if a field added by an option mixin is out of range.

        The walk calls it before :meth:`check`, so a kind that takes a mixin's fields (the attention
        options of :mod:`nas.blocks.quantizable`) has them checked without calling anything in its own check.
        """

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Spatial size after this component (most keep it)."""
        return height, width

    def to_dict(self) -> dict[str, Any]:
        """``{'kind': ..., field: value, ...}`` with tuples as lists; an :func:`option_field` only when set."""
        out: dict[str, Any] = {"kind": self.kind}
        fields = dataclasses.fields(self)
        options = [item for item in fields if item.metadata.get(_OPTION)]
        for item in [item for item in fields if not item.metadata.get(_OPTION)] + options:  # the kind's own first
            value = getattr(self, item.name)
            if item in options and value == item.default:
                continue
            out[item.name] = list(value) if isinstance(value, tuple) else value
        return out


_OPTION = "nas.option"


def option_field(default: Any) -> Any:
    """A keyword-only config field that is written (and enters the Arch id) only when it differs from ``default``.

    For options added to kinds that already have files and ids: every existing Arch keeps its YAML and its
    id, and a file may still spell the default out.
    """
    return dataclasses.field(default=default, kw_only=True, metadata={_OPTION: True})


_CONFIGS: dict[str, Registry[type[Component]]] = {role: Registry(f"{role} kind") for role in ROLES}
_REQUIRED_FIELD = {"stem": "dim", "head": "num_classes"}


def register_config(role: str, kind: str, config: type[Component]) -> None:
    """Make ``kind`` known under ``role`` with its config dataclass.

    Raises:
        ValueError: the role is unknown, the kind is taken, or the config is not a frozen dataclass.
    """
    if role not in _CONFIGS:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise ValueError(f"{config.__name__} must be a frozen dataclass")
    names = {item.name for item in dataclasses.fields(config)}
    required = _REQUIRED_FIELD.get(role)
    if required and required not in names:
        raise ValueError(f"a {role} config must have a {required!r} field; {config.__name__} has none")
    _CONFIGS[role].add(kind, config)
    config.role = role
    config.kind = kind


def list_kinds(role: str) -> list[str]:
    """The registered kinds of ``role``, sorted."""
    return _CONFIGS[role].names()


def config_type(role: str, kind: str, *, path: str = "") -> type[Component]:
    """The config class of ``kind``; an unknown kind lists the known ones, closest first."""
    return _CONFIGS[role].get(kind, path=path)


# ---------------------------------------------------------------------------
# parsing helpers: plain data -> typed values, with field paths in errors


def join_path(path: str, key: str | int) -> str:
    """``path`` extended by a field name (``a.b``) or a list index (``a[0]``)."""
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
                return coerce_field(value, option, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(" or ".join(errors), path=path)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(map(repr, allowed))}, got {_shown(value)}", path=path)
        return value
    if origin is tuple:
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"must be a list, got {_shown(value)}", path=path)
        return tuple(coerce_field(item, item_type, join_path(path, index)) for index, item in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, got {_shown(value)}", path=path)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, got {_shown(value)}", path=path)
        return value
    if annotation is float:
        if isinstance(value, str):
            try:  # YAML 1.1 reads 1e-5 (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number, got {_shown(value)}", path=path)
        try:
            number = float(value)
        except OverflowError:  # an int beyond float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"must be a finite number, got {_shown(value)}", path=path)
        return number
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, got {_shown(value)}", path=path)
        return value
    raise TypeError(f"unsupported field annotation {annotation!r} at {path}")


_SHOWN_CHARS = 120


def _shown(value: Any) -> str:
    """``repr(value)`` cut to one readable line: a wrong value may be a huge list (expanded aliases)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


def mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    """``value`` if it is a mapping, else the error saying that ``what`` must be one."""
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, got {_shown(value)}", path=path)
    return value


def fill_dataclass(cls: type, data: dict[str, Any], path: str, *, skip: tuple[str, ...] = ()) -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys and missing fields are errors."""
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    for key in data:
        if key not in fields and key not in skip:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {key!r}{hint}; allowed: {', '.join(fields)}",
                              path=join_path(path, str(key)))
    values = {}
    for name, item in fields.items():
        if name in data:
            values[name] = coerce_field(data[name], hints[name], join_path(path, name))
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {name!r}", path=path)
    return cls(**values)


def parse_component(role: str, data: Any, path: str) -> Component:
    """A component from ``{'kind': ..., params}`` or a bare kind string."""
    if isinstance(data, str):
        data = {"kind": data}
    data = mapping(data, path, role)
    if "kind" not in data:
        raise ConfigError(f"missing required key 'kind' (one of: {', '.join(list_kinds(role))})", path=path)
    kind = data["kind"]
    if not isinstance(kind, str):
        raise ConfigError(f"must be a string, got {kind!r}", path=join_path(path, "kind"))
    cls = config_type(role, kind, path=join_path(path, "kind"))
    return fill_dataclass(cls, data, path, skip=("kind",))  # type: ignore[no-any-return]
