"""Proxy scale: the same design at a fraction of the width and a small input resolution.

A supernet is trained, and its subnets are compared with stand-alone training,
at a *proxy scale* that fits a laptop CPU: every width multiplied by ``width``
and the input at ``resolution`` pixels. :func:`proxy` is a plain ``Arch -> Arch``
transform, so the supernet, one-shot evaluation and ``nas train`` all see the
very same proxied architecture and their accuracies are comparable.

What is scaled:

* every stage's ``dim`` (the stem's width follows the first stage's, or the input's channels for a stem
  that hands the image on: ``keeps_channels``);
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
field. Both steps follow the one walk (:mod:`nas.walk`): each mixer is checked
at the site the walk gives it, a declared field its check names is lowered,
and a width is judged by how far the walk gets, so validity stays the
components' own and no error path is parsed here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

from nas.arch import Arch, Block, Component, InputSpec, Stage
from nas.blocks.contract import FitsMap
from nas.errors import ConfigError, NasError
from nas.walk import Site, Step, steps

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


class _Draft(NamedTuple):
    """The parts of an Arch that :func:`nas.walk.steps` reads, for a point not yet known to be valid."""

    input: InputSpec
    stem: Component
    stages: tuple[Stage, ...]
    head: Component


def _fit_mixer(block: Block, site: Site, budget: list[int]) -> Block:
    """``block`` with its mixer's resolution-bound fields lowered until the mixer's check passes at ``site``.

    Stops where the check fails on a field the mixer does not declare, or on one that cannot go lower: the
    Arch's own validation then reports it. ``budget`` counts the adjustments left to the whole point.
    """
    mixer = block.mixer
    while budget[0] > 0:
        try:
            mixer.check(site._replace(block=dataclasses.replace(block, mixer=mixer)))
            break
        except ConfigError as exc:
            lowered = _lowered(mixer, exc.path) if exc.path in mixer.resolution_fields else None
            if lowered is None:
                break
            budget[0] -= 1
            mixer = lowered
    return block if mixer is block.mixer else dataclasses.replace(block, mixer=mixer)


def _fit_resolution(arch: Arch, input_spec: Any, stem: Component, head: Component) -> Arch:
    """``arch`` at the new input, with the mixers' resolution-bound fields lowered until every block fits its map.

    Lowering a field keeps the map's size, so the sites of the walk do not depend on it. Where the walk
    cannot go on (the map vanished), the Arch's validation names the first component that does not fit.
    """
    stages = [list(stage.blocks) for stage in arch.stages]
    budget = [_MAX_FITS]
    try:
        for step in steps(_Draft(input_spec, stem, arch.stages, head), check=False):  # type: ignore[arg-type]
            if step.role == "block":
                stages[step.stage][step.index] = _fit_mixer(step.component, step.site, budget)
    except ConfigError:
        pass
    try:
        return Arch(input=input_spec, stem=stem, name=arch.name, head=head,
                    stages=tuple(dataclasses.replace(stage, blocks=tuple(blocks))
                                 for stage, blocks in zip(arch.stages, stages, strict=True)))
    except ConfigError as exc:
        if budget[0] <= 0:
            raise ProxyError(f"{arch.name or arch.id}: no fit at the proxy resolution {input_spec.resolution} "
                             f"after {_MAX_FITS} adjustments") from None
        raise ProxyError(f"{arch.name or arch.id} does not fit the proxy resolution "
                         f"{input_spec.resolution}: {exc}") from None


def _next_stage(draft: _Draft, last: Step | None) -> int:
    """The stage of the component after ``last`` (the last step the walk got past); -1 for the stem."""
    if last is None:
        return -1
    if last.role == "stem" or (last.role == "block" and last.index == len(draft.stages[last.stage].blocks) - 1):
        return last.stage + 1
    return last.stage


def _stage_error(draft: _Draft, index: int) -> ConfigError | None:
    """The error that stops the walk inside stage ``index`` of ``draft``, if it stops there."""
    last = None
    try:
        for step in steps(draft):  # type: ignore[arg-type]
            if step.stage > index:
                return None
            last = step
    except ConfigError as exc:
        return exc if _next_stage(draft, last) == index else None
    return None


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
    keeps_channels = arch.stem.keeps_channels  # a stem that hands the image on is as wide as the input
    stem = _with(arch.stem, dim=input_spec.channels) if keeps_channels else arch.stem
    base = _fit_resolution(arch, input_spec, stem, head)
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
    if not follows and not keeps_channels:
        stem = _with(stem, dim=_round(arch.stem.dim * width, divisor))  # type: ignore[attr-defined]

    def draft(chosen: list[Stage]) -> _Draft:
        return _Draft(input_spec, _with(stem, dim=chosen[0].dim) if follows else stem, tuple(chosen), head)

    error: ConfigError | None = None
    for index, stage in enumerate(base.stages):
        for candidate in _candidates(stage.dim * width, divisor):
            trial = [*stages[:index], dataclasses.replace(stages[index], dim=candidate), *stages[index + 1:]]
            found = _stage_error(draft(trial), index)
            if found is not None:
                error = found
                continue
            stages = trial
            break
        else:
            raise ProxyError(f"{arch.name or arch.id}: no width near {stage.dim * width:g} (multiples of {divisor}) "
                             f"keeps stage {index} valid; last error: {error}")
    chosen = draft(stages)
    try:
        return Arch(input=input_spec, stem=chosen.stem, stages=chosen.stages, head=head, name=arch.name)
    except ConfigError as exc:
        raise ProxyError(f"{arch.name or arch.id} at width {width}: {exc}") from None
