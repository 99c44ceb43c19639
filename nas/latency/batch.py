"""Batch prediction over many Archs, cached per unit: repeated blocks cost a dictionary lookup.

A model's latency under the op model is additive over the units of
:func:`nas.build.plan` (stem, downsamplers, blocks, head, with the layout
conversions before them): each unit contributes an execution time, an issue
time and a switching time, and the model combines the sums (see
:mod:`nas.latency.opmodel`). :class:`BatchPredictor` keeps those three numbers
per unit *signature*, so an Arch whose units have all been seen is priced by
summing cached numbers, exactly as :func:`nas.latency.predict` would price it
(same ops, same fusion segments, same coefficients).

Signatures are cheap on purpose. ``plan()`` costs about 40 us per unit (it
builds JSON signatures and closures), which would cap throughput near 1k
Archs/s; instead a light walk mirrors ``plan``'s bookkeeping (channels, feature
size, layout, class tokens) and keys a unit by ``(component token, context)``.
The token is a small int assigned once per distinct component *value*; it is
looked up by the component object's ``id`` first (sampled Archs share block
objects), hashing the frozen dataclass only for objects not seen before. On a
miss the Arch is planned and traced once (:func:`nas.profile`, itself cached
per unit), and every unit's numbers are stored. ``bench/predictors.py``
measures the throughput; ``tests/test_latency.py`` checks that the batch and
single predictions agree.

The cache is per ``(setting, batch)`` and lives as long as the process (or
the :class:`BatchPredictor`); it is keyed by component values, so it never
goes stale for an Arch, and it is rebuilt when the target file changes.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.blocks.registry import module_class
from nas.blocks.template import block_layout
from nas.cost import profile
from nas.errors import NasError
from nas.latency.opmodel import combine, features, params_of, row_parts, transfer_seconds
from nas.latency.optable import build_table
from nas.latency.targets import Setting

__all__ = ["BatchPredictor", "batch_predictor"]

_ITEM = re.compile(r"^(stem|head|stages\[\d+\]\.(?:downsample|blocks\[\d+\]))")
_MAX_OBJECTS = 200_000


class BatchPredictor:
    """Predicts Arch latencies for one setting and batch size, caching each unit's contribution.

    Args:
        setting: the target setting (its fitted coefficients are used).
        batch: inputs per forward pass.

    Thread safety: calls may come from several threads; the caches are only ever extended, and a unit
    priced twice by two threads gets the same numbers.
    """

    def __init__(self, setting: Setting, batch: int):
        self.setting = setting
        self.batch = batch
        self.params = params_of(setting.fitted)
        self._units: dict[tuple[Any, ...], tuple[float, float, float]] = {}
        self._tokens: dict[Any, int] = {}
        self._by_id: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    # -- signatures ---------------------------------------------------------------------------

    def _token(self, component: Any) -> int:
        token = self._tokens.get(component)
        if token is None:
            with self._lock:
                token = self._tokens.setdefault(component, len(self._tokens))
        return token

    def _static(self, component: Any, role: str) -> list[Any]:
        """``[component, token, layout, output_size, sizes seen]`` of a stem, downsampler or block, by object id."""
        entry = self._by_id.get(id(component))
        if entry is not None and entry[0] is component:
            return entry
        if role == "block":
            layout = block_layout(component)
            output_size = component.mixer.output_size
        else:
            layout = module_class(role, component).layout_of(component)
            output_size = component.output_size
        entry = [component, self._token(component), layout, output_size, {}]
        if len(self._by_id) > _MAX_OBJECTS:
            self._by_id.clear()
        self._by_id[id(component)] = entry
        return entry

    @staticmethod
    def _size_after(entry: list[Any], size: tuple[int, int]) -> tuple[int, int]:
        sizes = entry[4]
        out = sizes.get(size)
        if out is None:
            out = sizes[size] = entry[3](*size)
        return out

    def keys(self, arch: Arch) -> list[tuple[Any, ...]]:
        """The unit signatures of ``arch`` in execution order: stem, per stage downsampler and blocks, head.

        Mirrors :func:`nas.build.plan` (a layout conversion belongs to the unit it precedes).
        """
        channels = arch.input.channels
        size = (arch.input.resolution, arch.input.resolution)
        stem = self._static(arch.stem, "stem")
        keys: list[tuple[Any, ...]] = [(0, stem[1], channels, size)]
        layout = stem[2]
        prefix = getattr(arch.stem, "prefix_tokens", 0)
        size = self._size_after(stem, size)
        channels = arch.stem.dim  # type: ignore[attr-defined]
        static = self._static
        size_after = self._size_after
        for stage in arch.stages:
            dim = stage.dim
            if stage.downsample is not None:
                down = static(stage.downsample, "downsample")
                keys.append((1, down[1], channels, dim, size, layout, prefix))
                layout = down[2]
                size = size_after(down, size)
                channels = dim
            previous = None
            entry: list[Any] = []
            for block in stage.blocks:
                if block is not previous:
                    entry = static(block, "block")
                    previous = block
                keys.append((2, entry[1], channels, dim, size, prefix, layout))
                layout = entry[2]
                size = size_after(entry, size)
                channels = dim
        keys.append((3, self._token(arch.head), channels, layout, prefix))
        return keys

    # -- pricing ------------------------------------------------------------------------------

    def _fill(self, arch: Arch, keys: list[tuple[Any, ...]]) -> None:
        """Trace ``arch`` once and store every unit's execution, issue and switching seconds."""
        report = profile(arch, batch=self.batch)
        table = build_table(report.ops, self.setting, by_unit=True)
        feats = features(table, self.setting, per_segment=True)
        execute, issue = row_parts(feats, self.params)
        transfer = transfer_seconds(feats, self.params)
        paths = _item_paths(arch)
        if len(paths) != len(keys):
            raise NasError(f"internal: {len(keys)} unit signatures for {len(paths)} units of {arch.name or arch.id}")
        totals = {path: [0.0, 0.0, 0.0] for path in paths}
        for index, name in enumerate(table.segment_names):
            match = _ITEM.match(name)
            if match is None or match.group(1) not in totals:
                raise NasError(f"internal: unit {name!r} of {arch.name or arch.id} belongs to no planned unit")
            total = totals[match.group(1)]
            total[0] += execute[index]
            total[1] += issue[index]
            total[2] += transfer[index]
        for path, key in zip(paths, keys, strict=True):
            self._units[key] = tuple(totals[path])  # type: ignore[assignment]

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """Latency (ms) of each Arch."""
        params = self.params
        overlap = self.setting.overlap
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
                self._fill(arch, keys)
                execute = sum(units[key][0] for key in keys)
                issue = sum(units[key][1] for key in keys)
                transfer = sum(units[key][2] for key in keys)
            spec = arch.input
            input_bytes = 4.0 * self.batch * spec.channels * spec.resolution * spec.resolution
            out[index] = (combine(execute, issue, overlap) + transfer + params.fixed_s
                          + input_bytes * params.input_s_per_byte) * 1e3
        return out

    def cache_size(self) -> int:
        """Unit signatures priced so far."""
        return len(self._units)


def _item_paths(arch: Arch) -> list[str]:
    paths = ["stem"]
    for index, stage in enumerate(arch.stages):
        if stage.downsample is not None:
            paths.append(f"stages[{index}].downsample")
        paths.extend(f"stages[{index}].blocks[{number}]" for number in range(len(stage.blocks)))
    paths.append("head")
    return paths


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
