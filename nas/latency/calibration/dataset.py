"""The calibration rows of one setting, and their features, ready for fitting and validation.

A setting selects its rows from ``predictors/calibration/<target>.csv`` by the
fields in its ``calibration`` block (device, runtime, precision and, where
given, threads; a list allows several values; ``published`` maps a published
column to text it must contain, case ignored since "XCode 14" and "Xcode 14.0"
name one tool, for regimes the normalised columns do not tell apart), so rows
measured in another regime never enter its fit. Each row's model is traced once
(:func:`nas.latency.calibration.measurements.trace`, cached in process), priced
into an op table under the setting's rules, and turned into coefficient-free
features (:func:`nas.latency.opmodel.features`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nas.errors import NasError
from nas.latency.calibration.measurements import Measurement, load_measurements, resolve_reference, trace
from nas.latency.opmodel import Features, compress, concat, features
from nas.latency.optable import build_table
from nas.latency.targets import Setting

__all__ = ["Dataset", "rows_for", "dataset_for", "row_features"]

_CACHE: dict[tuple[str, str, int, int], Features] = {}
_LOCK = threading.Lock()


def _matches(row: Measurement, setting: Setting) -> bool:
    wanted = setting.calibration
    for name in ("device", "runtime", "precision", "threads"):
        if name not in wanted:
            continue
        allowed = wanted[name] if isinstance(wanted[name], list) else [wanted[name]]
        if getattr(row, name) not in allowed:
            return False
    published = row.published_columns
    for column, texts in wanted.get("published", {}).items():
        alternatives = texts if isinstance(texts, list) else [texts]
        value = published.get(column, "").casefold()
        if not any(text.casefold() in value for text in alternatives):
            return False
    return True


def rows_for(setting: Setting, rows: Sequence[Measurement] | None = None) -> list[Measurement]:
    """The calibration rows of ``setting`` (from ``rows``, or the target's calibration file)."""
    source = load_measurements(setting.target) if rows is None else rows
    return [row for row in source if _matches(row, setting)]


def row_features(setting: Setting, row: Measurement) -> Features:
    """The features of one calibration row's model under ``setting`` (cached per setting and model)."""
    key = (setting.label, row.reference, row.resolution, row.batch)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        report = trace(row)
        by_unit = resolve_reference(row.reference) == "zoo"
        input_bytes = 4.0 * row.batch * 3 * row.resolution * row.resolution
        cached = compress(features(build_table(report.ops, setting, by_unit=by_unit), setting,
                                   input_bytes=input_bytes))
        with _LOCK:
            _CACHE[key] = cached
    return cached


@dataclass(frozen=True)
class Dataset:
    """The rows of a setting with their stacked features.

    Attributes:
        setting: the setting.
        rows: the calibration rows, in file order.
        features: one feature row per calibration row.
        measured_s: measured latency per row, seconds.
        families: family per row.
    """

    setting: Setting
    rows: tuple[Measurement, ...]
    features: Features
    measured_s: np.ndarray
    families: tuple[str, ...]

    def subset(self, mask: np.ndarray) -> Dataset:
        """The rows where ``mask`` is true."""
        keep = np.flatnonzero(mask)
        rows = tuple(self.rows[i] for i in keep)
        return Dataset(self.setting, rows, concat([row_features(self.setting, row) for row in rows]),
                       self.measured_s[keep], tuple(self.families[i] for i in keep))


def dataset_for(setting: Setting, rows: Sequence[Measurement] | None = None) -> Dataset:
    """The dataset of ``setting``: its rows (see :func:`rows_for`) and their features.

    Raises:
        NasError: the setting has no calibration rows, or a row's model cannot be traced.
    """
    selected = rows_for(setting, rows)
    if not selected:
        raise NasError(f"{setting.label}: no calibration rows match {setting.calibration}")
    parts = [row_features(setting, row) for row in selected]
    return Dataset(setting, tuple(selected), concat(parts), np.array([row.latency_ms * 1e-3 for row in selected]),
                   tuple(row.family for row in selected))
