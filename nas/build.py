"""``Arch -> nn.Module``, through a plan of units that cost tracing reads too.

:func:`plan` lays an Arch out as a flat list of :class:`Unit` (stem, layout
conversions, downsamplers, blocks, head), one per step of the walk through the
Arch (:mod:`nas.walk`), each with the input shape it sees and a signature.
:class:`Model` is built from that plan, and ``nas.cost`` traces the same units
(once per signature), so the cost of an Arch can never drift from what
``build`` makes.

Every model has one protocol: ``forward``, ``forward_features`` (every stage's
feature map, NCHW, for dense tasks), ``forward_head``, ``reset_classifier``,
``num_features``, ``feature_info`` and ``auxiliary_loss`` (what the trainer adds
to the task loss: MoE load balancing). Constructors take ``device``/``dtype``,
so a whole model builds on ``meta`` without allocating memory.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Arch, Block, Site, TokenClustering
from nas.blocks.clustering import ClusteredRun
from nas.blocks.common import Layout, ToNCHW, ToNLC
from nas.blocks.fakequant import apply_precision
from nas.blocks.moe import auxiliary_loss
from nas.blocks.registry import module_class
from nas.blocks.template import BlockContext, create_block
from nas.walk import Step, steps

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
        role: ``stem``, ``convert`` (a layout conversion), ``downsample``, ``block``, ``clustered`` (the
            blocks of a stage from its token clustering's depth on, as one unit: :mod:`nas.blocks.clustering`)
            or ``head``; readers branch on it instead of parsing ``path``.
        index: the block's number within its stage (the first enclosed one for ``clustered``; None for
            other roles).
        component: the config it is built from: the stem, downsample or head component, the
            :class:`~nas.arch.Block`, the :class:`~nas.arch.TokenClustering`, or None for a layout conversion.
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
    """What a stage puts out: its layout, width, feature-map size and the class tokens in front of it."""

    layout: Layout
    channels: int
    size: tuple[int, int]
    prefix_tokens: int = 0


@dataclass(frozen=True)
class Plan:
    """The units of an Arch in execution order, what each stage puts out, and the class tokens the head sees."""

    units: list[Unit]
    stage_outputs: list[StageOutput]
    prefix_tokens: int


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
    """The units of ``arch`` in execution order, one per step of the walk (:func:`nas.walk.steps`).

    Args:
        arch: the architecture.
        drop_path_rate: stochastic depth of the last block; earlier blocks get a linear ramp from 0.

    Raises:
        NasError: the Arch asks for something the builder cannot make (a class token
            through a layer that needs a map).
    """
    units: list[Unit] = []
    outputs: list[StageOutput] = []
    total = max(arch.num_blocks - 1, 1)
    depth = 0
    enclosed: list[Unit] = []  # units of the current stage from its clustering's depth on
    for step in steps(arch, check=False):  # the Arch checked itself on construction
        clustering = arch.stages[step.stage].clustering if 0 <= step.stage < len(arch.stages) else None
        target = enclosed if clustering is not None and (step.index or 0) >= clustering.depth else units
        if step.role == "block":
            target.append(_block_unit(step, drop_path_rate * depth / total))
            depth += 1
            if step.index == len(arch.stages[step.stage].blocks) - 1:
                after = step.after
                outputs.append(StageOutput(after.layout, after.dim, (after.height, after.width), after.prefix_tokens))
                if enclosed:
                    units.append(_clustered_unit(clustering, enclosed, after))  # type: ignore[arg-type]
                    enclosed = []
        else:
            target.append(_UNITS[step.role](step))
    return Plan(units, outputs, outputs[-1].prefix_tokens)


def _clustered_unit(clustering: TokenClustering, enclosed: list[Unit], full: Site) -> Unit:
    """One unit for clustering, the enclosed units on the centres, and reconstruction.

    ``full`` is the site reconstruction hands on: the token map clustering took in (the walk keeps the width
    and the class tokens through the enclosed blocks).
    """
    stage, index = enclosed[0].stage, next(unit.index for unit in enclosed if unit.index is not None)
    size = (full.height, full.width)
    in_shape = (full.prefix_tokens + full.height * full.width, full.dim)

    def make(*, device: Any = None, dtype: Any = None) -> nn.Module:
        blocks = [unit.make(device=device, dtype=dtype) for unit in enclosed]
        return ClusteredRun(clustering, blocks, size=size, prefix_tokens=full.prefix_tokens, device=device)

    key = _signature("clustered", dataclasses.asdict(clustering), size, [unit.key for unit in enclosed])
    return Unit(f"stages[{stage}].blocks[{index}:]", stage, key, in_shape, make, "clustered", index, clustering)


def _in_shape(site: Site) -> tuple[int, ...]:
    if site.layout == "nchw":
        return (site.in_dim, site.height, site.width)
    return (site.prefix_tokens + site.height * site.width, site.in_dim)


def _stem_unit(step: Step) -> Unit:
    site, stem = step.site, step.component
    size = (site.height, site.width)
    return Unit("stem", -1, _signature("stem", stem.to_dict(), site.in_dim, size), _in_shape(site),
                _bind(module_class("stem", stem), stem, in_dim=site.in_dim, size=size), "stem", None, stem)


def _convert_unit(step: Step) -> Unit:
    site, to = step.site, step.after.layout  # the walk refuses a map after a class token
    size = (site.height, site.width)
    make = ToNLC if to == "nlc" else (lambda: ToNCHW(size))
    return Unit(f"{step.path}.to_{to}", step.stage, _signature("convert", to, site.in_dim, size), _in_shape(site),
                _ignore_factory(make), "convert", None, None)


def _downsample_unit(step: Step) -> Unit:
    site, down = step.site, step.component
    size = (site.height, site.width)
    return Unit(step.path, step.stage,
                _signature("downsample", down.to_dict(), site.in_dim, site.dim, size, site.layout), _in_shape(site),
                _bind(module_class("downsample", down), down, in_dim=site.in_dim, dim=site.dim, size=size),
                "downsample", None, down)


def _block_unit(step: Step, drop_path: float) -> Unit:
    site, block = step.site, step.component
    size = (site.height, site.width)
    context = BlockContext(in_dim=site.in_dim, dim=site.dim, size=size, prefix_tokens=site.prefix_tokens,
                           drop_path=drop_path)
    return Unit(step.path, step.stage,
                _signature("block", block.to_dict(), site.in_dim, site.dim, size, site.prefix_tokens),
                _in_shape(site), _block_factory(block, context), "block", step.index, block)


def _head_unit(step: Step) -> Unit:
    site, head = step.site, step.component
    size = (site.height, site.width)
    return Unit("head", step.stage, _signature("head", head.to_dict(), site.in_dim, size, site.layout,
                                               site.prefix_tokens),
                _in_shape(site), _bind(module_class("head", head), head, in_dim=site.in_dim, layout=site.layout,
                                       prefix_tokens=site.prefix_tokens),
                "head", None, head)


_UNITS: dict[str, Callable[[Step], Unit]] = {
    "stem": _stem_unit, "convert": _convert_unit, "downsample": _downsample_unit, "head": _head_unit}


def _bind(cls: type, cfg: Any, **context: Any) -> Callable[..., nn.Module]:
    def make(*, device: Any = None, dtype: Any = None) -> nn.Module:
        return cls(cfg, device=device, dtype=dtype, **context)

    return make


def _block_factory(block: Block, context: BlockContext) -> Callable[..., nn.Module]:
    """Builds the block, then fake-quantises its layers to its precision (nothing for a float32 block)."""

    def make(*, device: Any = None, dtype: Any = None) -> nn.Module:
        return apply_precision(create_block(block, context, device=device, dtype=dtype), block.precision)

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
            nn.Identity() if out.layout == "nchw" else _TokensToMap(out.prefix_tokens, out.size)
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

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The auxiliary losses of the last training forward (MoE load balancing), summed; None if it had none."""
        return auxiliary_loss(self)


def build(arch: Arch, *, drop_path_rate: float = 0.0, device: Any = None, dtype: Any = None) -> Model:
    """Build ``arch`` as a module.

    Example:
        >>> import torch, nas
        >>> model = nas.build(nas.zoo.get("poolformer_s12"))  # doctest: +SKIP
        >>> model(torch.randn(1, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([1, 1000])
    """
    return Model(arch, drop_path_rate=drop_path_rate, device=device, dtype=dtype)
