"""Batch validity of point vectors: Arch's own rules, evaluated with numpy over tables filled on first use.

A point is valid when its Arch constructs. Arch validation walks the stem,
every stage (its width and downsample, then each block's mixer, FFN, norm,
layer scale and precision) and the head, carrying a *site*: the incoming width,
the stage width, the feature-map size, the layout and the prefix tokens
(:mod:`nas.walk`). A component's verdict depends only on its own configuration
and its site, so the check

* interns sites as small integers;
* numbers each part's configurations (:class:`~nas.space.tables.Code`), so a
  batch gets one code per row with a gather and a sum;
* keeps per part a table from ``(code, site)`` to the site after the part
  (a mixer may shrink the map; other parts keep it), or -1 where Arch rejects
  it (:class:`~nas.space.tables.Verdicts`). A cell is computed the first time a
  row of a batch needs it, by the walk's own steps (:func:`nas.walk.past` and
  its siblings), and a component's verdict at a site is computed once for the
  whole space: no rule is restated here.

A batch flows through plans compiled from the space's tree: a choice splits
the rows by option, a run repeats its unit while the site changes (a unit that
maps a site to itself does so on every further repeat), and a block is three
lookups: its mixer (which gives the next site), its FFN, and its norm with the
layer scale and precision. A component whose ``check`` reads ``site.block``
declares ``reads_block`` (:class:`nas.arch.Component`); its part is the whole
block. ``tests/test_space.py`` checks the verdicts against Arch construction on
raw draws of every shipped space and of spaces written to reach every plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from nas.arch import Block, Component, Site
from nas.errors import ConfigError
from nas.space.compiler import CompiledSpace
from nas.space.tables import DIRECT, Code, Codebook, Verdicts, signature
from nas.space.tree import Const, Node, Pick, Record, Run, Same, Single, component_types, resolve
from nas.walk import check_block_settings, enter_stage, image_site, past

__all__ = ["Validity"]

_MEMORY_LIMIT = 1 << 22  # table cells, codebook entries, sites and verdicts in all, before everything is cleared

Result = tuple[np.ndarray, np.ndarray]  # positions of the rows that survive a plan, and their new sites


class Validity:
    """Fail codes of batches of canonical point vectors (see the module docstring).

    Not thread-safe: the tables grow as points are seen (bounded, then cleared).

    Args:
        compiled: the space's tree.
        card: options per slot.
    """

    def __init__(self, compiled: CompiledSpace, card: np.ndarray):
        self.card = card
        self.vectors = np.zeros((0, len(card)), dtype=np.int16)  # the batch being checked
        self.sites: dict[Site, int] = {}  # sites without a block, interned
        self.site_list: list[Site] = []
        self.verdicts: dict[tuple[Component, Block | None, int], int] = {}  # a component at a site
        self._shared: dict[Hashable, tuple[Codebook, Verdicts]] = {}
        self._codes: list[Code] = []
        self._tables: list[Codebook | Verdicts | _Interned] | None = None
        self._input, self._stem, self._head = compiled.input, compiled.stem, compiled.head
        self._first_stage = compiled.stages[0]
        self._stem_code, (self._stem_part,) = self.parts(
            [("stem", [compiled.input, compiled.stem, _width_of(compiled.stages[0])])])
        self._stages = [_plan_stage(self, node) for node in compiled.stages]
        self._head_code, (self._head_part,) = self.parts([("head", [compiled.head])])

    def site(self, site: Site) -> int:
        """The id of a site, interned without its layout: no check reads it (:meth:`nas.arch.Component.check`),
        and sites that differ only by layout would multiply the tables."""
        if site.layout != "nchw":
            site = site._replace(layout="nchw")
        found = self.sites.get(site)
        if found is None:
            found = self.sites[site] = len(self.site_list)
            self.site_list.append(site)
        return found

    def parts(self, parts: Sequence[tuple[str, Sequence[Node]]]) -> tuple[Code, list[_Part]]:
        """The code of some parts (``(tag, nodes)`` each) of one place, and each part's tables: parts of equal
        tag and structure share them."""
        code = Code([nodes for _, nodes in parts], self.card)
        self._codes.append(code)
        interned = {index: table for index, _, table in code.interned}
        out = []
        for index, ((tag, nodes), size) in enumerate(zip(parts, code.sizes, strict=True)):
            key = (tag, tuple(signature(node) for node in nodes)) if size is not None else (tag, id(code), index)
            if key not in self._shared:
                self._shared[key] = (Codebook(), Verdicts())
            out.append(_Part(size, *self._shared[key], interned.get(index)))
        return code, out

    def placed(self, component: Component, block: Block | None, site: int) -> int:
        """The site after ``component`` at ``site`` (a mixer may shrink the map; others keep it), or -1 where it
        does not fit. ``block`` is the component's block where its part's configs read it, else None."""
        key = (component, block, site)
        found = self.verdicts.get(key)
        if found is None:
            at = self.site_list[site]
            if block is not None:
                at = at._replace(block=block)
            try:
                after = past(component, at)
            except ConfigError:
                found = -1
            else:
                found = site if after is at else self.site(after)
            self.verdicts[key] = found
        return found

    def fail_codes(self, vectors: np.ndarray) -> np.ndarray:
        """Per row of canonical ``vectors``: -1 if valid, else the part Arch rejects first.

        The part is 0 for the input and stem, ``k + 1`` for stage ``k``, ``len(stages) + 1`` for the head.
        """
        self._bound_memory()
        self.vectors = vectors = np.ascontiguousarray(vectors)
        fail = np.full(len(vectors), -1, dtype=np.int64)
        rows = np.arange(len(vectors))
        codes = self._stem_code.codes(vectors, rows)[:, 0]
        sites = self._stem_part.lookup(self, codes, None, lambda i: self._stem_site(int(rows[i])))
        alive = sites >= 0
        fail[rows[~alive]] = 0
        rows, sites = rows[alive], sites[alive]
        for index, plan in enumerate(self._stages):
            keep, sites = plan.run(self, rows, sites)
            dead = np.ones(len(rows), dtype=bool)
            dead[keep] = False
            fail[rows[dead]] = index + 1
            rows = rows[keep]
        codes = self._head_code.codes(vectors, rows)[:, 0]
        fits = self._head_part.lookup(self, codes, sites, lambda i: self._head_fits(int(rows[i]), int(sites[i])))
        fail[rows[fits < 0]] = len(self._stages) + 1
        return fail

    def _bound_memory(self) -> None:
        if self._tables is None:  # every part exists once the plans are compiled
            self._tables = [table for pair in self._shared.values() for table in pair]
            self._tables += [_Interned(codes) for code in self._codes for _, _, codes in code.interned]
        used = sum([table.size for table in self._tables])
        if used + len(self.site_list) + len(self.verdicts) > _MEMORY_LIMIT:
            for table in self._tables:
                table.clear()
            self.sites.clear()
            self.site_list.clear()
            self.verdicts.clear()

    # -- table cells: the walk's steps, on one representative row -----------------------------

    def _stem_site(self, row: int) -> int:
        v = self.vectors[row]
        stem = self._stem.value(v)
        if stem.dim is None:  # as Arch.__post_init__: an unset stem width is the first stage's
            width = resolve(self._first_stage, v).fields["dim"].value(v)  # type: ignore[attr-defined]
            stem = dataclasses.replace(stem, dim=width)
        try:
            return self.site(past(stem, image_site(self._input.value(v), stem)))
        except ConfigError:
            return -1

    def _head_fits(self, row: int, site: int) -> int:
        try:
            past(self._head.value(self.vectors[row]), self.site_list[site])
        except ConfigError:
            return -1
        return site


class _Interned:
    """The codes a part interned by raw slot values, seen as a table (for the memory bound)."""

    def __init__(self, codes: dict[bytes, int]):
        self.codes = codes

    @property
    def size(self) -> int:
        return len(self.codes)

    def clear(self) -> None:
        self.codes.clear()


def _width_of(node: Node) -> Node:
    """The node of the first stage's width (a choice of whole stages gives a choice of their widths; the first
    stage cannot be a tie, nothing before it being a stage)."""
    if isinstance(node, Pick):
        return Pick(node.slot, [_width_of(option) for option in node.options], node.where)
    return node.fields["dim"]  # type: ignore[attr-defined,no-any-return]


def _reads_block(node: Node) -> bool:
    return any(config.reads_block for config in component_types(node))


class _Part:
    """A part's tables as the check reads them: ids from codes (direct, by codebook, or interned), verdicts."""

    def __init__(self, size: int | None, codebook: Codebook, table: Verdicts, interned: dict[bytes, int] | None):
        self.size, self.codebook, self.table, self.interned = size, codebook, table, interned
        self.direct = size is not None and size <= DIRECT

    def lookup(self, ev: Validity, codes: np.ndarray, sites: np.ndarray | None,
               fill: Callable[[int], int]) -> np.ndarray:
        """The cells of the rows with ``codes`` at ``sites`` (None: a part judged without a site)."""
        if self.direct:
            ids, count = codes, self.size
        elif self.size is not None:
            ids = self.codebook.get(codes)
            count = len(self.codebook)
        else:
            ids, count = codes, len(self.interned)  # type: ignore[arg-type]
        if sites is None:
            return self.table.get(ids, np.zeros(len(ids), dtype=np.int64), (count, 1), fill)  # type: ignore[arg-type]
        return self.table.get(ids, sites, (count, len(ev.site_list)), fill)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# plans: each runs a batch of rows at their sites and returns (positions of the survivors, their new sites)


class _Plan:
    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        raise NotImplementedError


class _Choice(_Plan):
    """A decision among whole stages, block structures or blocks: each option runs on the rows that take it."""

    def __init__(self, slot: int, options: list[_Plan]):
        self.slot = slot
        self.options = options

    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        choice = ev.vectors[rows, self.slot]
        order = np.argsort(choice, kind="stable")
        bounds = np.searchsorted(choice[order], np.arange(len(self.options) + 1))
        keeps, outs = [], []
        for index, plan in enumerate(self.options):
            taken = order[bounds[index]:bounds[index + 1]]
            if len(taken):
                keep, out = plan.run(ev, rows[taken], sites[taken])
                keeps.append(taken[keep])
                outs.append(out)
        if len(keeps) == 1:
            return keeps[0], outs[0]
        if not keeps:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(keeps), np.concatenate(outs)


class _Sequence(_Plan):
    """Plans one after the other (the blocks of a pattern, the runs of a list)."""

    def __init__(self, parts: list[_Plan]):
        self.parts = parts

    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        keep, sites = self.parts[0].run(ev, rows, sites)
        for part in self.parts[1:]:
            inner, sites = part.run(ev, rows[keep], sites)
            keep = keep[inner]
        return keep, sites


class _Values:
    """An integer per row: the value of a node (a repeat count), or ``measure`` of it (a number of blocks)."""

    def __init__(self, ev: Validity, node: Node, measure: Callable[[Any], int] = int):
        self.node, self.measure = node, measure
        self.constant = node.constant if isinstance(node, Const) and measure is int else None
        leaf = isinstance(node, Pick) and node.leaf and measure is int
        self.slot = node.slot if leaf else -1  # type: ignore[attr-defined]
        self.options = np.array([o.constant for o in node.options], dtype=np.int64) if leaf else None  # type: ignore
        if self.constant is None and self.options is None:
            self.code, (self.part,) = ev.parts([(f"value {measure.__name__}", [node])])

    def get(self, ev: Validity, rows: np.ndarray) -> np.ndarray:
        if self.constant is not None:
            return np.full(len(rows), self.constant, dtype=np.int64)
        if self.options is not None:
            return self.options[ev.vectors[rows, self.slot]]  # type: ignore[no-any-return]
        codes = self.code.codes(ev.vectors, rows)[:, 0]
        return self.part.lookup(ev, codes, None, lambda i: self.measure(self.node.value(ev.vectors[rows[i]])))


class _Stage(_Plan):
    """A stage: its width and downsample (one lookup), the empty-stage rule where it can apply, then its blocks."""

    def __init__(self, ev: Validity, node: Record):
        self.dim, self.downsample = node.fields["dim"], node.fields["downsample"]
        self.code, (self.entry,) = ev.parts([("stage", [self.dim, self.downsample])])
        blocks = node.fields["blocks"]
        self.lengths = _Values(ev, blocks, len) if 0 in blocks.lengths() else None  # type: ignore[attr-defined]
        self.blocks = _plan_blocks(ev, blocks)

    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        codes = self.code.codes(ev.vectors, rows)[:, 0]
        sites = self.entry.lookup(ev, codes, sites, lambda i: self._enter(ev, int(rows[i]), int(sites[i])))
        alive = sites >= 0
        if self.lengths is not None:
            alive &= self.lengths.get(ev, rows) > 0
        keep = np.flatnonzero(alive)
        inner, sites = self.blocks.run(ev, rows[keep], sites[keep])
        return keep[inner], sites

    def _enter(self, ev: Validity, row: int, site: int) -> int:
        v = ev.vectors[row]
        downsample = self.downsample.value(v)
        try:
            at = enter_stage(ev.site_list[site], self.dim.value(v))
            return ev.site(at if downsample is None else past(downsample, at))
        except ConfigError:
            return -1


class _Run(_Plan):
    """``repeat`` times a unit: shared decisions repeat while the site changes; independent copies run in turn."""

    def __init__(self, ev: Validity, node: Run):
        self.counts = _Values(ev, node.repeat)
        self.independent = node.independent
        self.units = [_plan_unit(ev, unit) for unit in node.units]

    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        counts = self.counts.get(ev, rows)
        position = np.arange(len(rows))
        done_positions, done_sites = [], []
        repeat = 0
        while len(position):
            repeat += 1
            more = counts[position] >= repeat
            if not more.all():
                done_positions.append(position[~more])
                done_sites.append(sites[~more])
                position, sites = position[more], sites[more]
                if not len(position):
                    break
            unit = self.units[repeat - 1 if self.independent else 0]
            keep, after = unit.run(ev, rows[position], sites)
            position, before, sites = position[keep], sites[keep], after
            if not self.independent:  # a unit that maps a site to itself does so on every further repeat
                settled = after == before
                if settled.all():
                    break
                if settled.any():
                    done_positions.append(position[settled])
                    done_sites.append(sites[settled])
                    position, sites = position[~settled], sites[~settled]
        if not done_positions:
            return position, sites
        return np.concatenate([*done_positions, position]), np.concatenate([*done_sites, sites])


class _Block(_Plan):
    """One block, as three lookups at its site: the mixer (which gives the next site), the FFN, and the norm
    with the layer scale and precision."""

    def __init__(self, ev: Validity, node: Record):
        self.node = node
        fields = node.fields
        self.mixer, self.ffn, self.norm = fields["mixer"], fields["ffn"], fields["norm"]
        self.layer_scale, self.precision = fields["layer_scale"], fields["precision"]
        reads = {role: _reads_block(fields[role]) for role in ("mixer", "ffn", "norm")}
        self.reads_block = any(reads.values())
        parts = {"mixer": [self.mixer], "ffn": [self.ffn], "norm": [self.norm, self.layer_scale, self.precision]}
        self.code, self.parts = ev.parts([(role, [node] if reads[role] else nodes) for role, nodes in parts.items()])
        self.fills = [self._mixer_site, self._ffn_site, self._norm_site]

    def run(self, ev: Validity, rows: np.ndarray, sites: np.ndarray) -> Result:
        codes = self.code.codes(ev.vectors, rows)
        after = self._lookup(ev, 0, codes, rows, sites)
        fits = (after >= 0) & (self._lookup(ev, 1, codes, rows, sites) >= 0)
        fits &= self._lookup(ev, 2, codes, rows, sites) >= 0
        if fits.all():
            return np.arange(len(rows)), after
        keep = np.flatnonzero(fits)
        return keep, after[keep]

    def _lookup(self, ev: Validity, part: int, codes: np.ndarray, rows: np.ndarray, sites: np.ndarray) -> np.ndarray:
        fill = self.fills[part]
        return self.parts[part].lookup(ev, codes[:, part], sites,
                                       lambda i: fill(ev, ev.vectors[rows[i]], int(sites[i])))

    def _block(self, v: np.ndarray) -> Block | None:
        return self.node.value(v) if self.reads_block else None  # type: ignore[no-any-return]

    def _mixer_site(self, ev: Validity, v: np.ndarray, site: int) -> int:
        return ev.placed(self.mixer.value(v), self._block(v), site)

    def _ffn_site(self, ev: Validity, v: np.ndarray, site: int) -> int:
        return ev.placed(self.ffn.value(v), self._block(v), site)

    def _norm_site(self, ev: Validity, v: np.ndarray, site: int) -> int:
        try:
            check_block_settings(self.layer_scale.value(v), self.precision.value(v))
        except ConfigError:
            return -1
        return ev.placed(self.norm.value(v), self._block(v), site)


# ---------------------------------------------------------------------------
# compiling plans from the tree


def _plan_stage(ev: Validity, node: Node) -> _Plan:
    if isinstance(node, Pick):
        return _Choice(node.slot, [_plan_stage(ev, option) for option in node.options])
    if isinstance(node, Same):
        return _plan_stage(ev, node.target)
    return _Stage(ev, node)  # type: ignore[arg-type]


def _plan_blocks(ev: Validity, node: Node) -> _Plan:
    if isinstance(node, Pick):
        return _Choice(node.slot, [_plan_blocks(ev, option) for option in node.options])
    if isinstance(node, Same):
        return _plan_blocks(ev, node.target)
    if isinstance(node, Single):
        return _plan_block(ev, node.block)
    if isinstance(node, Run):
        return _Run(ev, node)
    return _Sequence([_plan_blocks(ev, part) for part in node.parts])  # type: ignore[attr-defined]


def _plan_unit(ev: Validity, unit: list[Node]) -> _Plan:
    return _plan_block(ev, unit[0]) if len(unit) == 1 else _Sequence([_plan_block(ev, block) for block in unit])


def _plan_block(ev: Validity, node: Node) -> _Plan:
    if isinstance(node, Pick):
        return _Choice(node.slot, [_plan_block(ev, option) for option in node.options])
    if isinstance(node, Same):
        return _plan_block(ev, node.target)
    return _Block(ev, node)  # type: ignore[arg-type]
