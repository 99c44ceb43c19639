"""``Arch -> nn.Module``, through a plan of units that cost tracing reads too.

:func:`plan` lays an Arch out as a flat list of :class:`Unit` (stem, layout
conversions, downsamplers, blocks, head), each with the input shape it sees
and a signature. :class:`Model` is built from that plan, and ``nas.cost``
traces the same units (once per signature), so the cost of an Arch can never
drift from what ``build`` makes.

Every model has one protocol: ``forward``, ``forward_features`` (every stage's
feature map, NCHW, for dense tasks), ``forward_head``, ``reset_classifier``,
``num_features`` and ``feature_info``. Constructors take ``device``/``dtype``,
so a whole model builds on ``meta`` without allocating memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Arch
from nas.blocks.common import Layout, ToNCHW, ToNLC
from nas.blocks.registry import module_class
from nas.blocks.template import BlockContext, block_layout, create_block
from nas.errors import NasError

__all__ = ["Unit", "StageOutput", "Plan", "plan", "Model", "build"]


@dataclass(frozen=True)
class Unit:
    """One module of a built model, with what it takes in.

    Attributes:
        path: where it comes from in the Arch (``stages[1].blocks[0]``), for messages.
        stage: index of its stage; -1 for the stem, ``len(stages)`` for the head.
        key: signature; two units with the same key build identical modules for identical inputs.
        in_shape: input shape without the batch dimension.
        make: builds the module, ``make(device=..., dtype=...)``.
        role: ``stem``, ``convert`` (a layout conversion), ``downsample``, ``block`` or ``head``; readers
            branch on it instead of parsing ``path``.
        index: the block's number within its stage (None for other roles).
        component: the config it is built from: the stem, downsample or head component, the
            :class:`~nas.arch.Block`, or None for a layout conversion.
    """

    path: str
    stage: int
    key: str
    in_shape: tuple[int, ...]
    make: Callable[..., nn.Module]
    role: str
    index: int | None
    component: Any


@dataclass(frozen=True)
class StageOutput:
    """What a stage puts out: its layout, width and feature-map size."""

    layout: Layout
    channels: int
    size: tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """The units of an Arch in execution order, and what each stage puts out."""

    units: list[Unit]
    stage_outputs: list[StageOutput]
    prefix_tokens: int


def _shape(layout: Layout, channels: int, size: tuple[int, int], prefix: int) -> tuple[int, ...]:
    if layout == "nchw":
        return (channels, *size)
    return (prefix + size[0] * size[1], channels)


def _signature(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


class _TokensToMap(nn.Module):
    """Drop class tokens and fold tokens back into an NCHW map."""

    def __init__(self, prefix_tokens: int, size: tuple[int, int]):
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.fold = ToNCHW(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fold(x[:, self.prefix_tokens:])


def plan(arch: Arch, *, drop_path_rate: float = 0.0) -> Plan:
    """The units of ``arch`` in execution order.

    Args:
        arch: the architecture.
        drop_path_rate: stochastic depth of the last block; earlier blocks get a linear ramp from 0.

    Raises:
        NasError: the Arch asks for something the builder cannot make (a class token
            through a layer that needs a map, a precision not supported yet).
    """
    units: list[Unit] = []
    outputs: list[StageOutput] = []
    size = (arch.input.resolution, arch.input.resolution)
    channels = arch.input.channels
    stem_cls = module_class("stem", arch.stem)
    units.append(Unit("stem", -1, _signature("stem", arch.stem.to_dict(), channels, size),
                      (channels, *size), _bind(stem_cls, arch.stem, in_dim=channels, size=size),
                      "stem", None, arch.stem))
    layout: Layout = stem_cls.layout_of(arch.stem)
    prefix = getattr(arch.stem, "prefix_tokens", 0)
    size = arch.stem.output_size(*size)
    channels = arch.stem.dim  # type: ignore[attr-defined]
    total = max(arch.num_blocks - 1, 1)
    depth = 0

    def convert(to: Layout, path: str, stage: int) -> None:
        nonlocal layout
        if to == layout:
            return
        if prefix and to == "nchw":
            raise NasError(f"{path}: needs a feature map, but the stem adds a class token; "
                           "class-token models must keep tokens (nlc) throughout")
        make = ToNLC if to == "nlc" else (lambda sz=size: ToNCHW(sz))
        units.append(Unit(f"{path}.to_{to}", stage, _signature("convert", to, channels, size),
                          _shape(layout, channels, size, prefix), _ignore_factory(make), "convert", None, None))
        layout = to

    for index, stage in enumerate(arch.stages):
        path = f"stages[{index}]"
        if stage.downsample is not None:
            down_cls = module_class("downsample", stage.downsample)
            convert(down_cls.layout_of(stage.downsample), f"{path}.downsample", index)
            units.append(Unit(f"{path}.downsample", index,
                              _signature("downsample", stage.downsample.to_dict(), channels, stage.dim, size, layout),
                              _shape(layout, channels, size, prefix),
                              _bind(down_cls, stage.downsample, in_dim=channels, dim=stage.dim, size=size),
                              "downsample", None, stage.downsample))
            size = stage.downsample.output_size(*size)
            channels = stage.dim
        for number, block in enumerate(stage.blocks):
            block_path = f"{path}.blocks[{number}]"
            if not block.precision.is_default:
                raise NasError(f"{block_path}.precision: {block.precision.format}{block.precision.weights} "
                               "is not supported by build yet; only float32 blocks can be built")
            convert(block_layout(block), block_path, index)
            context = BlockContext(in_dim=channels, dim=stage.dim, size=size, prefix_tokens=prefix,
                                   drop_path=drop_path_rate * depth / total)
            units.append(Unit(block_path, index,
                              _signature("block", block.to_dict(), channels, stage.dim, size, prefix),
                              _shape(layout, channels, size, prefix), _block_factory(block, context),
                              "block", number, block))
            size = block.mixer.output_size(*size)
            channels = stage.dim
            depth += 1
        outputs.append(StageOutput(layout, channels, size))
    head_cls = module_class("head", arch.head)
    units.append(Unit("head", len(arch.stages), _signature("head", arch.head.to_dict(), channels, size, layout, prefix),
                      _shape(layout, channels, size, prefix),
                      _bind(head_cls, arch.head, in_dim=channels, layout=layout, prefix_tokens=prefix),
                      "head", None, arch.head))
    return Plan(units, outputs, prefix)


def _bind(cls: type, cfg: Any, **context: Any) -> Callable[..., nn.Module]:
    def make(*, device: Any = None, dtype: Any = None) -> nn.Module:
        return cls(cfg, device=device, dtype=dtype, **context)

    return make


def _block_factory(block: Any, context: BlockContext) -> Callable[..., nn.Module]:
    def make(*, device: Any = None, dtype: Any = None) -> nn.Module:
        return create_block(block, context, device=device, dtype=dtype)

    return make


def _ignore_factory(make: Callable[[], nn.Module]) -> Callable[..., nn.Module]:
    def build_converter(*, device: Any = None, dtype: Any = None) -> nn.Module:
        return make()

    return build_converter


class Model(nn.Module):
    """A built Arch: stem, stages, head, with the common model protocol.

    Attributes:
        arch: the Arch it was built from.
        num_features: width of the vector the classifier sees.
        feature_info: per stage, ``{'stage', 'num_chs', 'reduction', 'module'}``.
    """

    def __init__(self, arch: Arch, *, drop_path_rate: float = 0.0, device: Any = None, dtype: Any = None):
        super().__init__()
        self.arch = arch
        layout = plan(arch, drop_path_rate=drop_path_rate)
        groups: list[list[nn.Module]] = [[] for _ in range(len(arch.stages) + 2)]
        for unit in layout.units:
            groups[unit.stage + 1].append(unit.make(device=device, dtype=dtype))
        self.stem = nn.Sequential(*groups[0])
        self.stages = nn.ModuleList(nn.Sequential(*modules) for modules in groups[1:-1])
        (self.head,) = groups[-1]
        self.num_features: int = self.head.num_features
        self.to_maps = nn.ModuleList(
            nn.Identity() if out.layout == "nchw" else _TokensToMap(layout.prefix_tokens, out.size)
            for out in layout.stage_outputs)
        self.feature_info = [
            {"stage": index, "num_chs": out.channels, "reduction": arch.input.resolution // out.size[0],
             "module": f"stages.{index}"}
            for index, out in enumerate(layout.stage_outputs)]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output as an NCHW map (class tokens dropped)."""
        x = self.stem(x)
        maps = []
        for stage, to_map in zip(self.stages, self.to_maps, strict=True):
            x = stage(x)
            maps.append(to_map(x))
        return maps

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last stage's output as the stages leave it (a map, or tokens)."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier for ``num_classes`` (0 removes it)."""
        self.head.reset_classifier(num_classes)


def build(arch: Arch, *, drop_path_rate: float = 0.0, device: Any = None, dtype: Any = None) -> Model:
    """Build ``arch`` as a module.

    Example:
        >>> import torch, nas
        >>> model = nas.build(nas.zoo.get("poolformer_s12"))  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1000])
    """
    return Model(arch, drop_path_rate=drop_path_rate, device=device, dtype=dtype)
