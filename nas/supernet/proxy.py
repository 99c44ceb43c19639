"""Proxy scale: the same design at a fraction of the width and a small input resolution.

A supernet is trained, and its subnets are compared with stand-alone training,
at a *proxy scale* that fits a laptop CPU: every width multiplied by ``width``
and the input at ``resolution`` pixels. :func:`proxy` is a plain ``Arch -> Arch``
transform, so the supernet, one-shot evaluation and ``nas train`` all see the
very same proxied architecture and their accuracies are comparable.

What is scaled:

* every stage's ``dim`` (the stem's width follows the first stage's);
* the fields each kind declares as widths (``width_fields`` on its config,
  :mod:`nas.blocks.contract`: ``hidden`` of conv stems and conv heads,
  ``key_dim`` of attention mixers);
* ratios (MLP ratio, expansion) are relative and stay; heads stay.

Widths are rounded to multiples of ``divisor``. A rounded width that breaks a
rule of the Arch (heads must divide it, a bottleneck's expansion must divide
it) is moved to the nearest multiple of ``divisor`` for which the Arch
validates, so heads keep dividing widths without this module knowing which
kinds have heads: validity is the Arch's own.

Fields a mixer declares bounded by the feature map (``resolution_fields``:
Swin's window must divide the map, PVT's reduction must fit it) are lowered,
one step at a time, until the block validates at the proxy resolution: at
32 px Swin's stage-1 map is 8x8, so windows 6 and 7 become 4 (a shifted
window keeps half its window as shift). Without this, a third of the points
with a Swin stage could not be scored at all. Like width rounding, it is part
of the proxy's approximation: two points that differ only there share one
proxy. A point that still does not fit raises :class:`ProxyError` naming the
field. Which field failed is read from the Arch's own validation error, by
the field path it names (``stages[0].blocks[1].mixer.window``): validity stays
the Arch's, not a second copy of its rules here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nas.arch import Arch, Component, Stage
from nas.blocks.contract import FitsMap
from nas.errors import ConfigError, NasError

__all__ = ["ProxyError", "ProxyScale", "proxy"]

_MAX_WIDTH_TRIES = 64
_MAX_FITS = 512


class ProxyError(NasError):
    """A point cannot be brought to the proxy scale (it does not fit the proxy resolution)."""


@dataclass(frozen=True)
class ProxyScale:
    """Settings of the proxy transform.

    Attributes:
        width: multiplier on every width (1.0 keeps the widths).
        resolution: input resolution in pixels; None keeps the arch's.
        divisor: widths are rounded to multiples of this.
        channels: input channels (the dataset's); None keeps the arch's.
        num_classes: classifier outputs (the dataset's); None keeps the arch's.
    """

    width: float = 0.25
    resolution: int | None = 32
    divisor: int = 4
    channels: int | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.width <= 4:
            raise NasError(f"proxy width must be in (0, 4], got {self.width}")
        if self.resolution is not None and self.resolution < 8:
            raise NasError(f"proxy resolution must be >= 8 pixels, got {self.resolution}")
        if self.divisor < 1:
            raise NasError(f"proxy divisor must be >= 1, got {self.divisor}")
        for name in ("channels", "num_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise NasError(f"proxy {name} must be >= 1, got {value}")

    def apply(self, arch: Arch) -> Arch:
        """``arch`` at this scale (see :func:`proxy`)."""
        return proxy(arch, width=self.width, resolution=self.resolution, divisor=self.divisor,
                     channels=self.channels, num_classes=self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _with(component: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` on a component whose fields the type checker cannot see."""
    return dataclasses.replace(component, **changes)


def _round(value: float, divisor: int) -> int:
    return max(divisor, int(value / divisor + 0.5) * divisor)


def _scale_component(component: Component, width: float, divisor: int) -> Component:
    changes: dict[str, Any] = {}
    for name in component.width_fields:
        value = getattr(component, name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            changes[name] = _round(value * width, divisor)
        elif isinstance(value, tuple) and all(isinstance(item, int) for item in value):
            changes[name] = tuple(_round(item * width, divisor) for item in value)
    return _with(component, **changes) if changes else component


def _candidates(target: float, divisor: int) -> list[int]:
    """Multiples of ``divisor`` ordered by distance from ``target`` (ties: the larger first)."""
    first = _round(target, divisor)
    out = [first]
    for step in range(1, _MAX_WIDTH_TRIES):
        for value in (first + step * divisor, first - step * divisor):
            if value >= divisor:
                out.append(value)
    out.sort(key=lambda value: (abs(value - target), -value))
    return out[:_MAX_WIDTH_TRIES]


def _lowered(mixer: Component, name: str) -> Component | None:
    """``mixer`` with the resolution-bound field ``name`` one lower (and the fields that follow it)."""
    value = getattr(mixer, name)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 1:
        return None
    bound: FitsMap = mixer.resolution_fields[name]
    changes: dict[str, Any] = {name: value - 1}
    changes.update({follower: (value - 1) // 2 for follower in bound.halved if getattr(mixer, follower)})
    return _with(mixer, **changes)


def _bounded_fields(stages: list[Stage]) -> dict[str, tuple[int, int, str]]:
    """``(stage, block, field)`` of every resolution-bound mixer field, by the path an Arch error names it with."""
    return {f"stages[{stage_index}].blocks[{block_index}].mixer.{name}": (stage_index, block_index, name)
            for stage_index, stage in enumerate(stages) for block_index, block in enumerate(stage.blocks)
            for name in block.mixer.resolution_fields}


def _fit_resolution(arch: Arch, input_spec: Any, head: Component) -> Arch:
    """``arch`` at the new input, with the mixers' resolution-bound fields lowered until every block fits its map."""
    stages = list(arch.stages)
    bounded = _bounded_fields(stages)
    for _ in range(_MAX_FITS):
        try:
            return Arch(input=input_spec, stem=arch.stem, stages=tuple(stages), head=head, name=arch.name)
        except ConfigError as exc:
            found = bounded.get(exc.path)
            if found is None:
                raise ProxyError(f"{arch.name or arch.id} does not fit the proxy resolution "
                                 f"{input_spec.resolution}: {exc}") from None
            stage_index, block_index, name = found
            blocks = list(stages[stage_index].blocks)
            lowered = _lowered(blocks[block_index].mixer, name)
            if lowered is None:
                raise ProxyError(f"{arch.name or arch.id} does not fit the proxy resolution "
                                 f"{input_spec.resolution}: {exc}") from None
            blocks[block_index] = dataclasses.replace(blocks[block_index], mixer=lowered)
            stages[stage_index] = dataclasses.replace(stages[stage_index], blocks=tuple(blocks))
    raise ProxyError(f"{arch.name or arch.id}: no fit at the proxy resolution {input_spec.resolution} "
                     f"after {_MAX_FITS} adjustments")


def proxy(arch: Arch, *, width: float = 0.25, resolution: int | None = 32, divisor: int = 4,
          channels: int | None = None, num_classes: int | None = None) -> Arch:
    """The same design at ``width`` times the widths and ``resolution`` pixels.

    Args:
        arch: a point at full scale.
        width: multiplier on every width; widths are rounded to multiples of ``divisor`` and moved
            to the nearest such multiple that keeps the Arch valid (heads dividing the width).
        resolution: input resolution; None keeps the arch's.
        divisor: width granularity.
        channels: input channels; None keeps the arch's.
        num_classes: classifier outputs; None keeps the arch's.

    Raises:
        ProxyError: the point does not fit the proxy resolution, or no width near the target is valid.

    Example:
        >>> import nas
        >>> small = proxy(nas.zoo.get("poolformer_s12"), width=0.25, resolution=32, num_classes=10)
        >>> [stage.dim for stage in small.stages], small.input.resolution
        ([16, 32, 80, 128], 32)
    """
    ProxyScale(width=width, resolution=resolution, divisor=divisor, channels=channels, num_classes=num_classes)
    input_spec = dataclasses.replace(
        arch.input,
        resolution=arch.input.resolution if resolution is None else resolution,
        channels=arch.input.channels if channels is None else channels)
    head = arch.head if num_classes is None else _with(arch.head, num_classes=num_classes)
    base = _fit_resolution(arch, input_spec, head)
    if width == 1.0:
        return base
    stem = _scale_component(base.stem, width, divisor)
    follows = arch.stem.dim == arch.stages[0].dim  # type: ignore[attr-defined]
    stages = [Stage(dim=_round(stage.dim * width, divisor),
                    downsample=None if stage.downsample is None else _scale_component(stage.downsample, width, divisor),
                    blocks=tuple(dataclasses.replace(block, mixer=_scale_component(block.mixer, width, divisor),
                                                     ffn=_scale_component(block.ffn, width, divisor))
                                 for block in stage.blocks))
              for stage in base.stages]
    head = _scale_component(base.head, width, divisor)
    if not follows:
        stem = _with(stem, dim=_round(arch.stem.dim * width, divisor))  # type: ignore[attr-defined]

    def make(chosen: list[Stage]) -> Arch:
        stem_now = _with(stem, dim=chosen[0].dim) if follows else stem
        return Arch(input=input_spec, stem=stem_now, stages=tuple(chosen), head=head, name=arch.name)

    error: ConfigError | None = None
    for index, stage in enumerate(base.stages):
        prefix = f"stages[{index}]"
        for candidate in _candidates(stage.dim * width, divisor):
            trial = [*stages[:index], dataclasses.replace(stages[index], dim=candidate), *stages[index + 1:]]
            try:
                make(trial)
            except ConfigError as exc:
                if exc.path == prefix or exc.path.startswith((f"{prefix}.", f"{prefix}[")):
                    error = exc
                    continue
            stages = trial
            break
        else:
            raise ProxyError(f"{arch.name or arch.id}: no width near {stage.dim * width:g} (multiples of {divisor}) "
                             f"keeps stage {index} valid; last error: {error}")
    try:
        return make(stages)
    except ConfigError as exc:
        raise ProxyError(f"{arch.name or arch.id} at width {width}: {exc}") from None
