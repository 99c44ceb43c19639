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
downsample, mixer, ffn, norm, head) and a kind (:mod:`nas.component`, whose
names this module re-exports). The classes live next to their modules in
``nas.blocks`` and register themselves there, so this module knows the schema
of every kind without importing any module code.

Validation happens on construction, by the one walk through an Arch
(:mod:`nas.walk`), and reports the field path
(``stages[2].blocks[0].mixer.heads: 5 does not divide dim 320``); files add
``file:line`` in front.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from nas.component import (
    ROLES,
    Component,
    Layout,
    Site,
    coerce_field,
    config_type,
    fill_dataclass,
    join_path,
    list_kinds,
    mapping,
    option_field,
    parse_component,
    register_config,
)
from nas.errors import ConfigError
from nas.limits import current as current_limits
from nas.precision import NUMBER_FORMATS, NumberFormat, Precision
from nas.walk import steps
from nas.yamlio import dump_json, dump_yaml, line_of, load_yaml, loads_yaml, read_text

__all__ = [
    "SCHEMA_VERSION",
    "ROLES",
    "Component",
    "option_field",
    "Layout",
    "Site",
    "NUMBER_FORMATS",
    "NumberFormat",
    "Precision",
    "Block",
    "TokenClustering",
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
_ID_LENGTH = 12


# ---------------------------------------------------------------------------
# the tree


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
            out["precision"] = self.precision.to_dict()
        return out


def _compact(component: Component) -> Any:
    """A component without parameters is written as its bare kind."""
    return component.kind if not dataclasses.fields(component) else component.to_dict()


@dataclass(frozen=True)
class TokenClustering:
    """Token clustering and reconstruction around the blocks of a token stage from ``depth`` on (arXiv:2210.01035).

    After ``depth`` blocks the map's tokens are clustered into a ``grid x grid`` map of cluster centres,
    the remaining blocks run on the centres, and the stage's end reconstructs every original token
    from the centres it is nearest to (:mod:`nas.blocks.clustering`). Class tokens pass through.

    Attributes:
        depth: blocks run at full resolution before clustering (0 clusters at the stage's start).
        grid: side of the map of cluster centres (``grid**2`` clusters), at most the map's side.
        iterations: soft k-means updates of the centres (the paper's kappa).
        temperature: of the softmax over (normalised) squared distances, token to centre.
        window: each token is assigned among the ``window x window`` centres around its own (lambda).
        neighbours: centres each token is reconstructed from (the nearest ones, k).
    """

    depth: int
    grid: int
    iterations: int = 5
    temperature: float = 0.01
    window: int = 5
    neighbours: int = 16


@dataclass(frozen=True)
class Stage:
    """A run of blocks at one width; ``downsample`` (or the stem) brings the input to ``dim``.

    ``clustering`` (token stages only) runs the blocks from its ``depth`` on at a reduced token count.
    """

    dim: int
    downsample: Component | None
    blocks: tuple[Block, ...]
    clustering: TokenClustering | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "dim": self.dim,
            "downsample": None if self.downsample is None else self.downsample.to_dict(),
            "blocks": _compress_blocks([block.to_dict() for block in self.blocks]),
        }
        if self.clustering is not None:  # written only when set: every other Arch keeps its id
            out["clustering"] = dataclasses.asdict(self.clustering)
        return out


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
    """A paper's own figures for this point, with where they were read.

    ``gmacs: null`` says the source gives no MACs (the notes say so); ``attention_products: false`` says
    the published MACs leave out the activation x activation products of attention (``aten.bmm``), as
    layer-hook counters (thop) do; the zoo test then compares without them.
    """

    params_m: float
    gmacs: float | None
    source: str
    resolution: int | None = None
    notes: str | None = None
    attention_products: bool = True


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
        """Walk the Arch (:func:`nas.walk.steps`): every component is checked at its site on the way."""
        for _ in steps(self):
            pass

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
            out["published"] = {k: v for k, v in dataclasses.asdict(self.published).items()
                                if (v is not None or k == "gmacs") and not (k == "attention_products" and v)}
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
        return _arch_from(data, source, lambda: data)

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<string>") -> Arch:
        return cls.from_dict(loads_yaml(text, source=source), source=source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<string>") -> Arch:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc.msg}", source=source, line=exc.lineno) from None
        except RecursionError:
            raise ConfigError("not valid JSON: nested too deeply", source=source) from None
        return _arch_from(data, source, lambda: _located_json(text))

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        """Read an Arch from a YAML or JSON file."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_json(read_text(path), source=str(path))
        return cls.from_dict(load_yaml(path), source=str(path))

    def replace(self, **changes: Any) -> Arch:
        """A validated copy with top-level fields changed."""
        return dataclasses.replace(self, **changes)

    def with_resolution(self, resolution: int) -> Arch:
        """The same design at another input resolution (validated again)."""
        return self.replace(input=dataclasses.replace(self.input, resolution=resolution))

    def with_precision(self, precision: Precision) -> Arch:
        """The same design with every block at ``precision`` (``nas train --precision``, ``nas quantize``)."""
        stages = tuple(dataclasses.replace(stage, blocks=tuple(dataclasses.replace(block, precision=precision)
                                                                for block in stage.blocks))
                       for stage in self.stages)
        return self.replace(stages=stages)

    @property
    def num_blocks(self) -> int:
        return sum(len(stage.blocks) for stage in self.stages)


def _arch_from(data: Any, source: str | None, document: Callable[[], Any]) -> Arch:
    """An Arch from plain data; an error gets ``source`` and the line of its field in ``document()``.

    Errors from reading the data carry the document's own path (``blocks[1].repeat``: the second run as
    written); errors from validating the Arch carry the expanded path (``blocks[5].mixer``: the sixth block),
    which :func:`_document_path` translates back.
    """
    try:
        fields = _parse_arch(data)
    except ConfigError as exc:
        raise exc.located(source=source, line=line_of(document(), _path_parts(exc.path))) from None
    try:
        return Arch(**fields)
    except ConfigError as exc:
        located = document()
        line = line_of(located, _document_path(located, _path_parts(exc.path)))
        raise exc.located(source=source, line=line) from None


def _located_json(text: str) -> Any:
    """JSON text read again as YAML, which locates values: for an error's line only."""
    try:
        return loads_yaml(text)
    except ConfigError:
        return None


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


def _parse_arch(data: Any) -> dict[str, Any]:
    """The fields of an Arch from plain data (checked by type and key; the Arch checks the rest)."""
    data = mapping(data, "", "an arch")
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
    name = None if data.get("name") is None else coerce_field(data["name"], str, "name")
    stages_data = data["stages"]
    if not isinstance(stages_data, list):
        raise ConfigError(f"must be a list of stages, got {stages_data!r}", path="stages")
    published = None
    if data.get("published") is not None:
        published = fill_dataclass(Published, mapping(data["published"], "published", "published"), "published")
    return {
        "input": fill_dataclass(InputSpec, mapping(data["input"], "input", "input"), "input"),
        "stem": parse_component("stem", data["stem"], "stem"),
        "stages": tuple(_parse_stage(stage, f"stages[{index}]") for index, stage in enumerate(stages_data)),
        "head": parse_component("head", data["head"], "head"),
        "name": name,
        "published": published,
    }


def _parse_stage(data: Any, path: str) -> Stage:
    data = mapping(data, path, "a stage")
    for key in data:
        if key not in ("dim", "downsample", "blocks", "clustering"):
            raise ConfigError(f"unknown key {key!r}; allowed: dim, downsample, blocks, clustering",
                              path=join_path(path, key))
    for key in ("dim", "blocks"):
        if key not in data:
            raise ConfigError(f"missing required key {key!r}", path=path)
    downsample = data.get("downsample")
    down_path = join_path(path, "downsample")
    clustering = data.get("clustering")
    cluster_path = join_path(path, "clustering")
    return Stage(
        dim=coerce_field(data["dim"], int, join_path(path, "dim")),
        downsample=None if downsample is None else parse_component("downsample", downsample, down_path),
        blocks=tuple(_expand_blocks(data["blocks"], join_path(path, "blocks"))),
        clustering=None if clustering is None else fill_dataclass(
            TokenClustering, mapping(clustering, cluster_path, "clustering"), cluster_path),
    )


def _expand_blocks(data: Any, path: str) -> list[Block]:
    """Blocks as written: a block, ``{repeat, block}``, ``{repeat, pattern}``, or a list of these."""
    limits = current_limits()
    if isinstance(data, list):
        blocks: list[Block] = []
        for index, item in enumerate(data):
            blocks.extend(_expand_blocks(item, join_path(path, index)))
            limits.check("blocks", len(blocks), join_path(path, index))
        return blocks
    data = mapping(data, path, "blocks")
    if "repeat" not in data:
        return [_parse_block(data, path)]
    repeat = coerce_field(data["repeat"], int, join_path(path, "repeat"))
    if repeat < 1:
        raise ConfigError(f"must be >= 1, got {repeat}", path=join_path(path, "repeat"))
    limits.check("blocks", repeat, join_path(path, "repeat"))
    keys = set(data) - {"repeat"}
    if keys == {"block"}:
        unit = [_parse_block(data["block"], join_path(path, "block"))]
    elif keys == {"pattern"}:
        pattern = data["pattern"]
        if not isinstance(pattern, list) or not pattern:
            raise ConfigError("must be a non-empty list of blocks", path=join_path(path, "pattern"))
        unit = [_parse_block(item, join_path(join_path(path, "pattern"), index)) for index, item in enumerate(pattern)]
    else:
        raise ConfigError("a repeat needs exactly one of 'block' or 'pattern' beside it", path=path)
    limits.check("blocks", repeat * len(unit), join_path(path, "repeat"))
    return unit * repeat


def _parse_block(data: Any, path: str) -> Block:
    data = mapping(data, path, "a block")
    allowed = ("mixer", "ffn", "norm", "layer_scale", "precision")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r}; allowed: {', '.join(allowed)}", path=join_path(path, key))
    if "mixer" not in data:
        raise ConfigError("missing required key 'mixer'", path=path)
    layer_scale = data.get("layer_scale")
    precision = data.get("precision")
    return Block(
        mixer=parse_component("mixer", data["mixer"], join_path(path, "mixer")),
        ffn=parse_component("ffn", data.get("ffn", "none"), join_path(path, "ffn")),
        norm=parse_component("norm", data.get("norm", "none"), join_path(path, "norm")),
        layer_scale=None if layer_scale is None else coerce_field(layer_scale, float, join_path(path, "layer_scale")),
        precision=Precision() if precision is None else fill_dataclass(
            Precision, mapping(precision, join_path(path, "precision"), "precision"), join_path(path, "precision")),
    )
