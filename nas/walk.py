"""One walk through an Arch: a :class:`~nas.component.Site` moved past one component at a time.

A site is what a component sees: the channels coming in, the stage width,
the feature-map size, the tensor layout and the prefix (class) tokens. Each
component is checked against its site, and says what it hands on: a stem
sets the width, size, layout and prefix tokens; a downsampler or a mixer
brings the site to the stage width, its own layout and the size it puts out
(a downsampler may add prefix tokens); an FFN, a norm or a head keeps it. A
mixer keeps the width coming in unless its config declares ``changes_width``,
so a stage of a new width starts with a downsampler or with such a mixer.
Where a component's layout differs from
the site's, a layout conversion comes first.

Arch validation, ``nas.build.plan``, the batch latency walk
(``nas.latency.batch.UnitSignatures``), space validity (``nas.space.validity``)
and through it the vector scorer all move sites with these functions, so a
new kind of component (or of rule) is taught to the walk once. The hot paths
call the step functions only on a cache miss and keep their own caches (by
component object, by interned site).

Errors are :class:`~nas.errors.ConfigError` with the field path relative to
what was stepped past (``heads`` for a mixer, ``mixer.heads`` for a block);
:func:`steps` places them in the Arch (``stages[2].blocks[0].mixer.heads``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from nas.component import Component, Layout, Site
from nas.errors import ConfigError
from nas.limits import Limits
from nas.limits import current as current_limits

if TYPE_CHECKING:
    from nas.arch import Arch, Block, InputSpec, Precision, TokenClustering

__all__ = ["Step", "image_site", "enter_stage", "past", "moved", "past_block", "check_block_settings", "check_numbers",
           "number_problem", "clustered", "reconstructed", "steps"]


class Step(NamedTuple):
    """One component of an Arch with the site it takes in and the site it hands on.

    Attributes:
        role: ``stem``, ``convert`` (a layout conversion), ``downsample``, ``block`` or ``head``.
        stage: index of its stage; -1 for the stem, ``len(stages)`` for the head.
        index: the block's number within its stage (None for other roles).
        path: where it is in the Arch (``stages[1].blocks[0]``); a conversion has the path of the component
            it comes before.
        component: the stem, downsample or head config, the :class:`~nas.arch.Block`, or None for a conversion.
        site: what it takes in (in the component's own layout: a conversion, if any, came before it).
        after: what it hands on.
    """

    role: str
    stage: int
    index: int | None
    path: str
    component: Any
    site: Site
    after: Site


def image_site(spec: InputSpec, stem: Component) -> Site:
    """The site the stem sees: the input image (paths in errors are the Arch's: ``input.resolution``)."""
    if spec.resolution < 1:
        raise ConfigError(f"must be >= 1, got {spec.resolution}", path="input.resolution")
    if spec.channels < 1:
        raise ConfigError(f"must be >= 1, got {spec.channels}", path="input.channels")
    limits = current_limits()
    limits.check("resolution", spec.resolution, "input.resolution")
    limits.check("width", spec.channels, "input.channels")
    return Site(spec.channels, stem.dim, spec.resolution, spec.resolution)  # type: ignore[attr-defined]


def enter_stage(site: Site, dim: int) -> Site:
    """The site at the start of a stage of width ``dim`` (before its downsampler)."""
    if dim < 1:
        raise ConfigError(f"must be >= 1, got {dim}", path="dim")
    current_limits().check("width", dim, "dim")
    return Site(site.in_dim, dim, site.height, site.width, None, site.prefix_tokens, site.layout)


def check_numbers(component: Component) -> None:
    """Every number a component holds within the size limits (:mod:`nas.limits`), before its own check.

    A head's ``num_classes`` is bounded by the class limit; every other number (a width, a kernel, heads,
    a ratio) by the width limit, so no field can make a module too large to build even on ``meta``.
    """
    limits = current_limits()
    for item in dataclasses.fields(component):
        value = getattr(component, item.name)
        for index, number in enumerate(value if isinstance(value, tuple) else (value,)):
            problem = number_problem(limits, item.name, number)
            if problem:
                raise ConfigError(problem, path=f"{item.name}[{index}]" if isinstance(value, tuple) else item.name)


def number_problem(limits: Limits, field: str, value: Any) -> str | None:
    """Why a component's ``field`` cannot hold ``value`` under ``limits`` (:func:`check_numbers`), or None.

    Space files check each option with it as they are read.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return limits.exceeded("classes" if field == "num_classes" else "width", value)


def past(component: Component, site: Site) -> Site:
    """The site after ``component`` at ``site``: its numbers and its check, then what it hands on.

    Raises:
        ConfigError: the component does not fit its site (path relative to the component).
    """
    check_numbers(component)
    component.check_options()
    component.check(site)
    return _MOVES.get(component.role, _keeps)(component, site)


def moved(component: Component, site: Site) -> Site:
    """What ``component`` hands on at ``site``, without its check (for an Arch that checked itself)."""
    return _MOVES.get(component.role, _keeps)(component, site)


def check_block_settings(layer_scale: float | None, precision: Precision) -> None:
    """A block's own fields beside its components: layer scale and precision (paths relative to the block)."""
    if layer_scale is not None and layer_scale <= 0:
        raise ConfigError(f"must be > 0 or null, got {layer_scale}", path="layer_scale")
    precision.check("precision")


def past_block(block: Block, site: Site) -> Site:
    """The site after ``block``: its mixer, FFN and norm checked at ``site`` (with the block, for mixers that
    read it), its settings, then what its mixer hands on.

    Raises:
        ConfigError: the block does not fit its site (path relative to the block: ``mixer.heads``).
    """
    at = Site(site.in_dim, site.dim, site.height, site.width, block, site.prefix_tokens, site.layout)
    for role, component in (("mixer", block.mixer), ("ffn", block.ffn), ("norm", block.norm)):
        try:
            check_numbers(component)
            component.check_options()
            component.check(at)
        except ConfigError as exc:
            raise exc.located(prefix=role) from None
    check_block_settings(block.layer_scale, block.precision)
    return _moved_block(block, site)


def steps(arch: Arch, *, check: bool = True) -> Iterator[Step]:
    """The components of ``arch`` in execution order, each with its sites; raises where one does not fit.

    Args:
        arch: the architecture.
        check: False skips the components' checks, for an Arch that was checked on construction (the sites
            are the same).

    Raises:
        ConfigError: the Arch is invalid (the path is the Arch's, ``stages[2].blocks[0].mixer.heads``).
    """
    component_step, block_step = (past, past_block) if check else (moved, _moved_block)
    site = image_site(arch.input, arch.stem)
    if not arch.stages:
        raise ConfigError("an arch needs at least one stage", path="stages")
    after = _located(component_step, arch.stem, site, "stem")
    yield Step("stem", -1, None, "stem", arch.stem, site, after)
    site = after
    for index, stage in enumerate(arch.stages):
        path = f"stages[{index}]"
        site = _located(enter_stage, site, stage.dim, path)
        if not stage.blocks:
            raise ConfigError("a stage needs at least one block", path=f"{path}.blocks")
        if stage.downsample is not None:
            down_path = f"{path}.downsample"
            after = _located(component_step, stage.downsample, site, down_path)
            convert = _conversion(site, stage.downsample.layout, index, None, down_path)
            if convert is not None:
                yield convert
                site = convert.after
            yield Step("downsample", index, None, down_path, stage.downsample, site, after)
            site = after
        clustering, full = stage.clustering, site
        if clustering is not None:
            _located(_check_depth, clustering, len(stage.blocks), f"{path}.clustering")
        for number, block in enumerate(stage.blocks):
            block_path = f"{path}.blocks[{number}]"
            if clustering is not None and number == clustering.depth:
                full, site = site, _located(clustered, clustering, site, f"{path}.clustering")
            try:
                after = block_step(block, site)
            except ConfigError as exc:
                raise exc.located(prefix=block_path) from None
            if clustering is not None and number == len(stage.blocks) - 1:
                after = _located(reconstructed, clustering, (full, after), f"{path}.clustering")
            convert = _conversion(site, block.mixer.layout, index, number, block_path)
            if convert is not None:
                yield convert
                site = convert.after
            yield Step("block", index, number, block_path, block, site, after)
            site = after
    after = _located(component_step, arch.head, site, "head")
    yield Step("head", len(arch.stages), None, "head", arch.head, site, after)


# ---------------------------------------------------------------------------
# token clustering (arXiv:2210.01035): the blocks from its depth on see the map of cluster centres


def _check_depth(clustering: TokenClustering, blocks: int) -> None:
    if not 0 <= clustering.depth < blocks:
        raise ConfigError(f"must be in [0, {blocks}) (the stage has {blocks} blocks), got {clustering.depth}",
                          path="depth")


def clustered(clustering: TokenClustering, site: Site) -> Site:
    """The site of the cluster centres: a ``grid x grid`` map of tokens, the class tokens kept.

    Raises:
        ConfigError: a setting out of range, or the tokens coming in are not a token map (path relative to
            the clustering).
    """
    rules = (("grid", 1, min(site.height, site.width)), ("iterations", 0, None), ("window", 1, None),
             ("neighbours", 1, clustering.grid ** 2))
    for name, low, high in rules:
        value = getattr(clustering, name)
        if value < low or (high is not None and value > high):
            bound = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"must be {bound}, got {value}", path=name)
    if clustering.temperature <= 0:
        raise ConfigError(f"must be > 0, got {clustering.temperature}", path="temperature")
    if site.layout != "nlc":
        raise ConfigError("clusters tokens, but the blocks before it put out a feature map (nchw); "
                          "cluster where the stage holds tokens", path="depth")
    if site.in_dim != site.dim:
        raise ConfigError(f"clusters {site.in_dim} channels in a stage of width {site.dim}; cluster where the "
                          "stage has reached its width (after its downsampler or first block)", path="depth")
    return Site(site.in_dim, site.dim, clustering.grid, clustering.grid, None, site.prefix_tokens, "nlc")


def reconstructed(clustering: TokenClustering, sites: tuple[Site, Site]) -> Site:
    """The site after reconstruction: the stage's last block's, at the map size clustering took in.

    ``sites`` is ``(the site clustering took in, the site after the stage's last block)``.
    """
    full, after = sites
    if after.layout != "nlc" or (after.height, after.width) != (clustering.grid, clustering.grid):
        raise ConfigError("the blocks after clustering must keep tokens (nlc) at the centres' map size",
                          path="depth")
    return Site(after.in_dim, after.dim, full.height, full.width, None, after.prefix_tokens, "nlc")


# ---------------------------------------------------------------------------
# what each role hands on


def _keeps(component: Component, site: Site) -> Site:
    """FFNs, norms and heads keep the site."""
    return site


def _resized(component: Component, site: Site) -> tuple[int, int]:
    height, width = component.output_size(site.height, site.width)
    if height < 1 or width < 1:
        raise ConfigError(f"reduces the feature map to {height}x{width}; the input resolution is too small")
    return height, width


def _to_stage(component: Component, site: Site) -> Site:
    """Downsamplers and mixers put out the stage width, in their layout, at the size they make, with the
    prefix tokens they add (a downsampler may start a stage with a class token, as CvT's last stage does).

    One that works on a feature map cannot follow a class token: folding tokens into a map has no place
    for it.
    """
    layout = component.layout
    if site.prefix_tokens and layout == "nchw":
        raise ConfigError("needs a feature map, but the stem adds a class token; "
                          "class-token models must keep tokens (nlc) throughout")
    height, width = _resized(component, site)
    prefix_tokens = site.prefix_tokens + component.prefix_tokens
    if (site.in_dim == site.dim and (height, width) == (site.height, site.width) and layout == site.layout
            and prefix_tokens == site.prefix_tokens):
        return site if site.block is None else site._replace(block=None)
    return Site(site.dim, site.dim, height, width, None, prefix_tokens, layout)


def _from_mixer(component: Component, site: Site) -> Site:
    """A mixer puts out the stage width; only one that declares ``changes_width`` may get another width."""
    if site.in_dim != site.dim and not component.changes_width:
        raise ConfigError(f"the {component.kind} mixer keeps its width, but it gets {site.in_dim} channels and the "
                          f"stage width is {site.dim}; put a downsample before the block or make the widths equal",
                          path="kind")
    return _to_stage(component, site)


def _from_stem(component: Component, site: Site) -> Site:
    """A stem puts out its own width, layout and prefix tokens."""
    dim = component.dim  # type: ignore[attr-defined]
    if dim < 1:
        raise ConfigError(f"must be >= 1, got {dim}", path="dim")
    height, width = _resized(component, site)
    return Site(dim, dim, height, width, None, component.prefix_tokens, component.layout)


_MOVES = {"stem": _from_stem, "downsample": _to_stage, "mixer": _from_mixer}


def _moved_block(block: Block, site: Site) -> Site:
    """A block hands on what its mixer does."""
    try:
        return _from_mixer(block.mixer, site)
    except ConfigError as exc:
        raise exc.located(prefix="mixer") from None


def _located(step: Any, component: Any, site: Any, path: str) -> Site:
    try:
        return step(component, site)  # type: ignore[no-any-return]
    except ConfigError as exc:
        raise exc.located(prefix=path) from None


def _conversion(site: Site, layout: Layout, stage: int, index: int | None, path: str) -> Step | None:
    """The layout conversion before a component of ``layout`` at ``site``, if the layouts differ."""
    if layout == site.layout:
        return None
    return Step("convert", stage, index, path, None, site, site._replace(layout=layout))
