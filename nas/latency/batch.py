"""Batch prediction over many Archs, cached per unit: repeated blocks cost a dictionary lookup.

A model's latency under the op model is additive over the units of
:func:`nas.build.plan` (stem, downsamplers, blocks, head, with the layout
conversions before them): each unit contributes an execution time, an issue
time and a switching time, and the model combines the sums (see
:mod:`nas.latency.opmodel`). :class:`BatchPredictor` keeps those three numbers
per unit *signature*, so an Arch whose units have all been seen is priced by
summing cached numbers, exactly as :func:`nas.latency.predict` would price it
(same ops, same fusion segments, same coefficients).

Signatures are cheap on purpose. ``plan()`` builds JSON signatures and
closures for every unit, which would cap throughput far below what a search
needs; instead :class:`UnitSignatures` walks the Arch with the same steps as
``plan`` (:mod:`nas.walk`), each step computed once per component object and
site and then looked up, and keys a unit by ``(component token, site)``. The token is a small int assigned once per
distinct component *value*; it is looked up by the component object's ``id``
first (sampled Archs share block objects), hashing the frozen dataclass only
for objects not seen before. On a miss the Arch is planned and only its
missing units are priced, one per signature, from their own ops
(:func:`nas.cost.unit_ops`, traced once per unit); a unit's numbers do not
depend on its neighbours, since fusion never crosses units. Parameters and
MACs are additive over the same units, so :class:`CostTable` keeps them per
signature too (one walker serves both).
``bench/predictors.py`` measures the throughput; ``tests/test_latency.py`` and
``tests/test_search_scoring.py`` check that the batch and single predictions
agree, and that they do not depend on the order Archs are priced in (a unit's
numbers come from its own ops only).

The cache is per ``(setting, batch)`` and lives as long as the process (or
the :class:`BatchPredictor`); it is keyed by component values, so it never
goes stale for an Arch, and it is rebuilt when the target file changes.
Behind it sits a persistent table per ``(setting, batch)``, and one for
parameters and MACs, shared by processes (:mod:`nas.latency.unit_store`,
keyed by :meth:`UnitSignatures.stable`): a unit an earlier run priced is read,
not traced. ``bench/pricing.py`` measures both, cold and warm, in fresh
processes; ``tests/test_unit_store.py`` checks that numbers read from a table
equal traced ones on every target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from nas.arch import Arch, Site
from nas.build import Unit
from nas.cost import float_units, unit_counts, unit_ops
from nas.errors import NasError
from nas.latency.opmodel import combine, features, params_of, row_parts, transfer_seconds
from nas.latency.optable import build_table
from nas.latency.targets import Setting
from nas.latency.unit_store import UnitStore, open_store
from nas.walk import clustered, enter_stage, image_site, past, past_block, reconstructed

__all__ = ["BatchPredictor", "CostTable", "UnitSignatures", "batch_predictor", "cost_table"]

_ITEM = re.compile(r"^(stem|head|stages\[\d+\]\.(?:downsample|blocks\[\d+:?\]))")
_MAX_OBJECTS = 200_000
_RECENT = 4096  # Archs whose signatures are remembered (one batch of every objective)


class UnitSignatures:
    """Cheap unit signatures of Archs, shared by every cache keyed by unit (see the module docstring).

    A signature is ``(role, token, site)``: the token is a small int per distinct component value, the site a
    small int per distinct :class:`~nas.arch.Site` (channels in, stage width, feature size, layout, class
    tokens) the unit takes in. Two units with equal signatures build equal modules for equal inputs, so
    anything traced from one holds for the other. Sites are moved by the walk's own steps (:mod:`nas.walk`),
    each computed once per component object and site, then looked up.

    Thread safety: tokens and sites are assigned under a lock; the other tables are only ever extended (or
    cleared whole), and an entry computed twice by two threads is equal.
    """

    def __init__(self) -> None:
        self._tokens: dict[Any, int] = {}
        self._components: list[Any] = []  # by token
        self._texts: dict[tuple[int, int], str] = {}  # (kind of entry, token or site) -> its JSON, for stable()
        self._site_ids: dict[Site, int] = {}
        self._sites: list[Site] = []
        self._images: dict[tuple[int, int, int], int] = {}  # (channels, resolution, stem width) -> site
        self._stages: dict[tuple[int, int], int] = {}  # (site, stage width) -> site at the stage's start
        self._by_id: dict[int, tuple[Any, int, dict[int, int], Callable[[Any, Site], Site]]] = {}
        self._recent: dict[int, tuple[Arch, list[tuple[Any, ...]]]] = {}
        self._lock = threading.Lock()

    def _token(self, component: Any) -> int:
        token = self._tokens.get(component)
        if token is None:
            with self._lock:
                token = self._tokens.get(component)
                if token is None:
                    token = self._tokens[component] = len(self._components)
                    self._components.append(component)
        return token

    def _site(self, site: Site) -> int:
        found = self._site_ids.get(site)
        if found is None:
            with self._lock:
                found = self._site_ids.get(site)
                if found is None:
                    found = self._site_ids[site] = len(self._sites)
                    self._sites.append(site)
        return found

    def site(self, site: int) -> Site:
        """The site a signature's last entry (or a stage end of :meth:`walk`) stands for."""
        return self._sites[site]

    def stable(self, key: tuple[Any, ...]) -> str:
        """A digest of what signature ``key`` stands for (role, component value, site), equal in every process:
        the key of the persistent tables (:mod:`nas.latency.unit_store`). Tokens and site numbers are
        per process; this is computed on a cache miss only."""
        role, token, site = key
        texts = self._texts
        component = texts.get((0, token))
        if component is None:
            component = texts[(0, token)] = _json(self._components[token].to_dict())
        place = texts.get((1, site))
        if place is None:
            fields = self._sites[site]._asdict()
            if fields["block"] is not None:
                fields["block"] = fields["block"].to_dict()
            place = texts[(1, site)] = _json(fields)
        return hashlib.blake2b(f"{role}|{component}|{place}".encode(), digest_size=16).hexdigest()

    def _static(self, component: Any, step: Callable[[Any, Site], Site]) -> tuple[Any, int, dict[int, int],
                                                                                   Callable[[Any, Site], Site]]:
        """``(component, token, sites after it by site, step)`` of a stem, downsampler or block, by object id."""
        entry = self._by_id.get(id(component))
        if entry is not None and entry[0] is component:
            return entry
        entry = (component, self._token(component), {}, step)
        if len(self._by_id) > _MAX_OBJECTS:
            self._by_id.clear()
        self._by_id[id(component)] = entry
        return entry

    def _after(self, entry: tuple[Any, int, dict[int, int], Callable[[Any, Site], Site]], site: int) -> int:
        """The site after ``entry``'s component at ``site`` (a cache miss of :meth:`walk`)."""
        after = entry[2][site] = self._site(entry[3](entry[0], self._sites[site]))
        return after

    def keys(self, arch: Arch) -> list[tuple[Any, ...]]:
        """The unit signatures of ``arch`` in execution order: stem, per stage downsampler and blocks, head.

        The last few Archs' signatures are remembered by object, so the objectives of one batch (latency,
        params, MACs) walk each Arch once.
        """
        found = self._recent.get(id(arch))
        if found is not None and found[0] is arch:
            return found[1]
        keys = self.walk(arch)
        if len(self._recent) >= _RECENT:
            self._recent.clear()
        self._recent[id(arch)] = (arch, keys)
        return keys

    def walk(self, arch: Arch, ends: list[tuple[int, int]] | None = None) -> list[tuple[Any, ...]]:
        """The signatures (as :meth:`keys`); with ``ends``, also appends per stage ``(number of signatures so
        far, site after the stage)``, the site being what the next stage's signatures start from.

        Follows :func:`nas.walk.steps` (a layout conversion belongs to the unit it precedes: its site is the one
        before the conversion).
        """
        spec = arch.input
        image = (spec.channels, spec.resolution, arch.stem.dim)  # type: ignore[attr-defined]
        site = self._images.get(image)
        if site is None:
            site = self._images[image] = self._site(image_site(spec, arch.stem))
        stem = self._static(arch.stem, past)
        keys: list[tuple[Any, ...]] = [(0, stem[1], site)]
        moved = stem[2].get(site)
        site = self._after(stem, site) if moved is None else moved
        static, after, stages = self._static, self._after, self._stages
        for stage in arch.stages:
            entered = stages.get((site, stage.dim))
            if entered is None:
                entered = stages[(site, stage.dim)] = self._site(enter_stage(self._sites[site], stage.dim))
            site = entered
            if stage.downsample is not None:
                down = static(stage.downsample, past)
                keys.append((1, down[1], site))
                moved = down[2].get(site)
                site = after(down, site) if moved is None else moved
            previous = None
            entry: Any = None
            clustering = stage.clustering
            for number, block in enumerate(stage.blocks):
                if clustering is not None and number == clustering.depth:
                    keys.append(self._clustered_key(stage, site))
                    site = self._site(self._after_clustered(stage, self._sites[site]))
                    break
                if block is not previous:
                    entry = static(block, past_block)
                    previous = block
                keys.append((2, entry[1], site))
                moved = entry[2].get(site)
                site = after(entry, site) if moved is None else moved
            if ends is not None:
                ends.append((len(keys), site))
        keys.append((3, self._token(arch.head), site))
        return keys

    def _clustered_key(self, stage: Any, site: int) -> tuple[Any, ...]:
        """The signature of a stage's clustered run (:func:`nas.build.plan`'s ``clustered`` unit): its
        clustering and enclosed blocks, as a stage holding just those, and the site it takes in."""
        run = dataclasses.replace(stage, downsample=None, blocks=stage.blocks[stage.clustering.depth:])
        return (4, self._token(run), site)

    @staticmethod
    def _after_clustered(stage: Any, site: Site) -> Site:
        """The site after a stage's clustered run (walked without caching: clustering is rare)."""
        clustering = stage.clustering
        inner = clustered(clustering, site)
        for block in stage.blocks[clustering.depth:]:
            inner = past_block(block, inner)
        return reconstructed(clustering, (site, inner))


class _UnitTable:
    """Numbers per unit signature, summed over an Arch's units; subclasses say how a new Arch is priced.

    Args:
        signatures: the signature walker (default: the process-wide one).
        persistent: back the table with the persistent one of :mod:`nas.latency.unit_store`, shared by
            processes (a unit priced by an earlier run is read, not traced).
    """

    width: ClassVar[int] = 0  # numbers per unit

    def __init__(self, signatures: UnitSignatures | None = None, *, persistent: bool = True):
        self.signatures = signatures or _SIGNATURES
        self.persistent = persistent
        self._units: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._store: UnitStore | None = None
        self._store_opened = False

    def _price(self, units: Sequence[Unit], arch: Arch) -> Iterable[tuple[str, Sequence[Any]]]:
        """``(unit path or op-table segment name, numbers)`` for every priced piece of ``units`` (some units of
        ``arch``'s plan, in order)."""
        raise NotImplementedError

    def _open_store(self) -> UnitStore | None:
        """This table's persistent store (:func:`nas.latency.unit_store.open_store`)."""
        raise NotImplementedError

    @property
    def store(self) -> UnitStore | None:
        """The persistent table behind this one, opened on the first miss (``$NAS_HOME`` is read then); None
        when ``persistent`` is False or the tables are turned off."""
        if not self._store_opened:
            self._store = self._open_store() if self.persistent else None
            self._store_opened = True
        return self._store

    def _recall(self, keys: list[tuple[Any, ...]]) -> None:
        """Take the missing units of ``keys`` that the persistent store holds."""
        store = self.store
        if store is None:
            return
        units, stable = self._units, self.signatures.stable
        for key in keys:
            if key not in units:
                numbers = store.get(stable(key))
                if numbers is not None:
                    units[key] = numbers

    def _fill(self, arch: Arch, keys: list[tuple[Any, ...]]) -> None:
        """Price the units of ``arch`` whose signature is missing (one planned unit per signature) and store
        their numbers, in memory and in the persistent store.

        A unit's numbers come from its own ops only (fusion never crosses units), so pricing the missing
        units alone gives the numbers pricing the whole Arch would.
        """
        paths = _item_paths(arch)
        if len(paths) != len(keys):
            raise NasError(f"internal: {len(keys)} unit signatures for {len(paths)} units of {arch.name or arch.id}")
        missing: dict[tuple[Any, ...], str] = {}
        for path, key in zip(paths, keys, strict=True):
            if key not in self._units:
                missing.setdefault(key, path)
        totals: dict[str, list[Any]] = {path: [0] * self.width for path in missing.values()}
        units = [unit for unit in _planned(arch) if _item_path(unit.path, arch) in totals]
        for name, numbers in self._price(units, arch):
            total = totals[_item_of(name, arch, totals)]
            for index, number in enumerate(numbers):
                total[index] += number
        priced = {key: tuple(totals[path]) for key, path in missing.items()}
        self._units.update(priced)
        store = self.store
        if store is not None:
            stable = self.signatures.stable
            store.put({stable(key): numbers for key, numbers in priced.items()})

    def unit_values(self, arch: Arch, keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The numbers per signature of ``arch`` (``keys``, from :meth:`UnitSignatures.keys`): from memory, else
        from the persistent store, else priced (traced) and stored in both."""
        units = self._units
        try:
            return [units[key] for key in keys]
        except KeyError:
            self._recall(keys)
            if not all(key in units for key in keys):
                self._fill(arch, keys)
            return [units[key] for key in keys]

    def cache_size(self) -> int:
        """Unit signatures priced so far."""
        return len(self._units)


class CostTable(_UnitTable):
    """Parameters and MACs per unit signature (one image, float32), for Archs priced in bulk.

    Both are additive over the units of :func:`nas.build.plan`, like latency, so an Arch whose units were
    seen costs a signature walk and lookups; a new unit is traced once (:func:`nas.cost.unit_counts`, the
    numbers :func:`nas.profile` adds up). ``tests/test_search_scoring.py`` checks the sums against
    :func:`nas.profile`.

    Args:
        signatures: the signature walker (default: the process-wide one).
        persistent: read and write the persistent table (see :class:`_UnitTable`).
    """

    width = 2  # parameters, MACs

    def _price(self, units: Sequence[Unit], arch: Arch) -> Iterable[tuple[str, Sequence[int]]]:
        return [(path, (params, macs)) for path, params, macs in unit_counts(units)]

    def _open_store(self) -> UnitStore | None:
        return open_store("counts", width=self.width)

    def __call__(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """Parameters and MACs of each Arch (two int64 arrays), equal to :func:`nas.profile`'s."""
        params = np.empty(len(archs), dtype=np.int64)
        macs = np.empty(len(archs), dtype=np.int64)
        for index, arch in enumerate(archs):
            values = self.unit_values(arch, self.signatures.keys(arch))
            params[index] = sum(value[0] for value in values)
            macs[index] = sum(value[1] for value in values)
        return params, macs


class BatchPredictor(_UnitTable):
    """Predicts Arch latencies for one setting and batch size, caching each unit's contribution.

    Args:
        setting: the target setting (its fitted coefficients are used).
        batch: inputs per forward pass.
        signatures: the signature walker (default: the process-wide one).
        persistent: read and write the persistent table of this setting and batch (see :class:`_UnitTable`).

    Thread safety: calls may come from several threads; the caches are only ever extended, and a unit
    priced twice by two threads gets the same numbers.
    """

    width = 3  # execution, issue and switching seconds

    def __init__(self, setting: Setting, batch: int, signatures: UnitSignatures | None = None, *,
                 persistent: bool = True):
        super().__init__(signatures, persistent=persistent)
        self.setting = setting
        self.batch = batch
        self.params = params_of(setting.fitted)

    def _open_store(self) -> UnitStore | None:
        setting = self.setting
        return open_store(f"latency-{setting.target}-{setting.name}-b{self.batch}", repr(setting), str(self.batch),
                          width=self.width)

    def keys(self, arch: Arch) -> list[tuple[Any, ...]]:
        """The unit signatures of ``arch`` (:meth:`UnitSignatures.keys`)."""
        return self.signatures.keys(arch)

    # -- pricing ------------------------------------------------------------------------------

    def _price(self, units: Sequence[Unit], arch: Arch) -> Iterable[tuple[str, Sequence[float]]]:
        """Execution, issue and switching seconds per op-table segment of ``units`` (traced once each), each op
        at the format ``arch``'s precisions give it."""
        table = build_table(unit_ops(units, batch=self.batch, arch=arch), self.setting, by_unit=True)
        feats = features(table, self.setting, per_segment=True)
        execute, issue = row_parts(feats, self.params)
        transfer = transfer_seconds(feats, self.params)
        return [(name, (execute[index], issue[index], transfer[index]))
                for index, name in enumerate(table.segment_names)]

    def finish(self, execute: Any, issue: Any, transfer: Any, input_elements: Any) -> Any:
        """Latency (ms) of models from their units' summed seconds and their input's element count (floats,
        or arrays of one value per model)."""
        params = self.params
        input_bytes = 4.0 * self.batch * input_elements
        return (combine(execute, issue, self.setting.overlap) + transfer + params.fixed_s
                + input_bytes * params.input_s_per_byte) * 1e3

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each Arch."""
        units = self._units
        out = np.empty(len(archs))
        for index, arch in enumerate(archs):
            keys = self.keys(arch)
            execute = issue = transfer = 0.0
            try:
                for key in keys:
                    value = units[key]
                    execute += value[0]
                    issue += value[1]
                    transfer += value[2]
            except KeyError:
                execute = issue = transfer = 0.0
                for value in self.unit_values(arch, keys):
                    execute += value[0]
                    issue += value[1]
                    transfer += value[2]
            spec = arch.input
            out[index] = self.finish(execute, issue, transfer, spec.channels * spec.resolution * spec.resolution)
        return out


def _item_path(name: str, arch: Arch) -> str:
    """The unit path (``stages[1].blocks[0]``) an op-table segment or plan unit path (``...blocks[0].to_nlc``)
    belongs to: a layout conversion belongs to the unit it precedes."""
    match = _ITEM.match(name)
    if match is None:
        raise NasError(f"internal: unit {name!r} of {arch.name or arch.id} belongs to no planned unit")
    return match.group(1)


def _item_of(name: str, arch: Arch, planned: dict[str, Any]) -> str:
    """:func:`_item_path`, which must be a key of ``planned``."""
    path = _item_path(name, arch)
    if path not in planned:
        raise NasError(f"internal: unit {name!r} of {arch.name or arch.id} belongs to no planned unit")
    return path


_PLANS: dict[int, tuple[Arch, list[Unit]]] = {}
_RECENT_PLANS = 64  # Archs whose plan is kept: the latency and the params/MACs tables miss on the same Arch


def _planned(arch: Arch) -> list[Unit]:
    """``arch``'s units as :func:`nas.cost.profile` traces them (:func:`nas.cost.float_units`), planned once for
    both tables when an Arch misses in each."""
    found = _PLANS.get(id(arch))
    if found is not None and found[0] is arch:
        return found[1]
    units = float_units(arch)
    if len(_PLANS) >= _RECENT_PLANS:
        _PLANS.clear()
    _PLANS[id(arch)] = (arch, units)
    return units


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _item_paths(arch: Arch) -> list[str]:
    paths = ["stem"]
    for index, stage in enumerate(arch.stages):
        if stage.downsample is not None:
            paths.append(f"stages[{index}].downsample")
        clustered_from = len(stage.blocks) if stage.clustering is None else stage.clustering.depth
        paths.extend(f"stages[{index}].blocks[{number}]" for number in range(clustered_from))
        if stage.clustering is not None:
            paths.append(f"stages[{index}].blocks[{clustered_from}:]")
    paths.append("head")
    return paths


_SIGNATURES = UnitSignatures()
_COSTS = CostTable()


def cost_table() -> CostTable:
    """The process-wide :class:`CostTable` (params and MACs per unit)."""
    return _COSTS


_PREDICTORS: dict[tuple[str, str, int, int], BatchPredictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def batch_predictor(setting: Setting, batch: int) -> BatchPredictor:
    """The process-wide :class:`BatchPredictor` of ``(setting, batch)`` (a new one if the target file changed)."""
    key = (setting.target, setting.name, batch, id(setting))
    with _PREDICTORS_LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            stale = [old for old in _PREDICTORS if old[:3] == key[:3]]
            for old in stale:
                del _PREDICTORS[old]
            predictor = _PREDICTORS[key] = BatchPredictor(setting, batch)
    return predictor
