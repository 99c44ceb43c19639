"""Published latency measurements per hardware target, and the traced cost of the model behind each.

``predictors/calibration/<target>.csv`` holds the rows of the published tables
(``../shared/calibration``) that the predictors are fitted and validated on,
one measured model and setting per row. Each row keeps the published columns
(renamed ``published_<name>`` where a name clashes with a column below) and
adds the normalised columns the predictors read:

=====================  =====================================================================
column                 meaning
=====================  =====================================================================
model                  the model as the table names it
family                 architecture family, the unit of leave-one-family-out validation
reference              what is traced: a zoo name (``nas.zoo``) or a
                       :data:`~nas.latency.calibration.models.REFERENCE_MODELS` name
resolution             input height = width, pixels
batch_size             images per forward pass
precision              ``fp32``, ``fp16``, ``amp`` (mixed fp16/fp32) or ``int8``
runtime                short runtime token, e.g. ``paddle-tensorrt`` (see predictors/calibration/README.md)
device                 the measured device, e.g. ``V100``, ``Xeon Gold 6148``
threads                CPU threads or cores per inference stream; empty for accelerators
latency_ms             one forward pass of ``batch_size`` images, milliseconds
latency_derivation     empty if the table gives latency; else how it was derived from throughput
source                 repository, path, commit and table of the published figure
=====================  =====================================================================

The files are written by ``python -m nas.latency.calibration.select`` (the
selection rules are there, and in predictors/calibration/README.md).

Example:
    >>> from nas.latency.calibration.measurements import load_measurements, trace
    >>> rows = load_measurements("iphone12")
    >>> report = trace(rows[0])
    >>> report.params > 0
    True
"""

from __future__ import annotations

import csv
import difflib
import math
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nas import zoo
from nas.cost import CostReport, profile, profile_module
from nas.errors import NasError, UnknownKindError, closest_first
from nas.latency.calibration.models import REFERENCE_MODELS

__all__ = [
    "CalibrationError",
    "Measurement",
    "PRECISIONS",
    "REQUIRED_COLUMNS",
    "calibration_dir",
    "calibration_path",
    "clear_trace_cache",
    "list_targets",
    "load_measurements",
    "resolve_reference",
    "trace",
    "trace_reference",
]

PRECISIONS = ("fp32", "fp16", "amp", "int8")
"""The precision tokens a calibration row may carry."""

REQUIRED_COLUMNS = ("model", "family", "reference", "resolution", "batch_size", "precision", "runtime", "device",
                    "threads", "latency_ms", "latency_derivation", "source")
"""The normalised columns every calibration file has (the published columns follow them)."""


class CalibrationError(NasError):
    """A calibration file is missing, unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Measurement:
    """One published measurement: a model, the setting it ran in, and its latency.

    Attributes:
        target: the hardware target whose file it comes from, e.g. ``v100``.
        model: the model as the published table names it.
        family: architecture family (leave-one-family-out validation holds out one family at a time).
        reference: the traced model: a zoo name or a ``REFERENCE_MODELS`` name.
        resolution: input height = width, pixels.
        batch: images per forward pass.
        precision: one of :data:`PRECISIONS`.
        runtime: short runtime token, e.g. ``paddle-tensorrt``, ``onnxruntime-qdq``, ``vitis-ai-2.5``.
        device: the measured device, e.g. ``V100``, ``Xeon Platinum 8480+``.
        threads: CPU threads (or cores) per inference stream; ``None`` where not applicable or not given.
        latency_ms: one forward pass of ``batch`` images, milliseconds.
        derivation: empty if the table gives the latency; otherwise the formula used on its throughput.
        source: repository, path, commit and table of the published figure.
        line: the row's line in the calibration file (1-based, the header is line 1).
        published: the published columns of the row, ``(name, value)`` pairs in file order.
    """

    target: str
    model: str
    family: str
    reference: str
    resolution: int
    batch: int
    precision: str
    runtime: str
    device: str
    threads: int | None
    latency_ms: float
    derivation: str
    source: str
    line: int
    published: tuple[tuple[str, str], ...] = field(default=(), repr=False, compare=False)

    @property
    def setting(self) -> tuple[str, str, str, int | None]:
        """``(device, runtime, precision, threads)``: rows with equal settings form one regime."""
        return self.device, self.runtime, self.precision, self.threads

    @property
    def published_columns(self) -> dict[str, str]:
        """The published columns as a dict."""
        return dict(self.published)


# -- files ------------------------------------------------------------------------------


def calibration_dir() -> Path:
    """The folder of the calibration files (inside the installed ``nas.predictors`` package)."""
    return Path(str(resources.files("nas.predictors"))) / "calibration"


def list_targets() -> list[str]:
    """Targets that have a calibration file, sorted."""
    return sorted(path.stem for path in calibration_dir().glob("*.csv"))


def calibration_path(target: str) -> Path:
    """The calibration file of ``target``; an unknown target raises, listing the known ones."""
    path = calibration_dir() / f"{target}.csv"
    if not isinstance(target, str) or not target or "/" in target or not path.is_file():
        known = list_targets()
        close = closest_first(str(target), known)
        raise UnknownKindError(f"unknown calibration target {target!r}; known: {', '.join(close)}")
    return path


def _field(row: dict[str, str], name: str, where: str) -> str:
    value = (row.get(name) or "").strip()
    if not value and name not in ("threads", "latency_derivation"):
        raise CalibrationError(f"{where}: column {name!r} is empty")
    return value


def _positive_int(row: dict[str, str], name: str, where: str) -> int:
    text = _field(row, name, where)
    try:
        value = int(text)
    except ValueError:
        raise CalibrationError(f"{where}: {name} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise CalibrationError(f"{where}: {name} must be a positive integer, got {value}")
    return value


def _parse_row(target: str, row: dict[str, str], line: int, where: str, published: list[str]) -> Measurement:
    latency_text = _field(row, "latency_ms", where)
    try:
        latency = float(latency_text)
    except ValueError:
        raise CalibrationError(f"{where}: latency_ms must be a number, got {latency_text!r}") from None
    if not math.isfinite(latency) or latency <= 0:
        raise CalibrationError(f"{where}: latency_ms must be finite and > 0, got {latency_text!r}")
    precision = _field(row, "precision", where)
    if precision not in PRECISIONS:
        raise CalibrationError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    reference = _field(row, "reference", where)
    try:
        resolve_reference(reference)
    except UnknownKindError as error:
        raise CalibrationError(f"{where}: {error}") from None
    threads = _positive_int(row, "threads", where) if _field(row, "threads", where) else None
    return Measurement(
        target=target,
        model=_field(row, "model", where),
        family=_field(row, "family", where),
        reference=reference,
        resolution=_positive_int(row, "resolution", where),
        batch=_positive_int(row, "batch_size", where),
        precision=precision,
        runtime=_field(row, "runtime", where),
        device=_field(row, "device", where),
        threads=threads,
        latency_ms=latency,
        derivation=_field(row, "latency_derivation", where),
        source=_field(row, "source", where),
        line=line,
        published=tuple((name, row.get(name) or "") for name in published),
    )


def load_measurements(target: str, *, path: str | Path | None = None) -> list[Measurement]:
    """The calibration rows of ``target``, in file order.

    Args:
        target: a target with a calibration file (:func:`list_targets`), e.g. ``v100``.
        path: read this file instead of the packaged one (rows still carry ``target``).

    Raises:
        UnknownKindError: no calibration file for ``target`` (the message lists the known targets).
        CalibrationError: the file is missing, unreadable, lacks a required column, has no rows, or a row
            has an invalid value or a reference that is neither a zoo model nor a reference model.
    """
    file = calibration_path(target) if path is None else Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationError(f"{file}: calibration file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationError(f"{file}: cannot read calibration file ({error})") from None
    if "\x00" in text:
        raise CalibrationError(f"{file}: not a CSV text file (NUL bytes)")
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    try:
        header = reader.fieldnames or []
        missing = [name for name in REQUIRED_COLUMNS if name not in header]
        if missing:
            raise CalibrationError(f"{file}: missing column(s) {', '.join(missing)}; has: {', '.join(header)}")
        published = [name for name in header if name not in REQUIRED_COLUMNS]
        rows = []
        for row in reader:
            line = reader.line_num
            if None in row or any(value is None for value in row.values()):
                raise CalibrationError(f"{file}:{line}: expected {len(header)} fields")
            rows.append(_parse_row(target, row, line, f"{file}:{line}", published))
    except csv.Error as error:
        raise CalibrationError(f"{file}:{reader.line_num}: malformed CSV ({error})") from None
    if not rows:
        raise CalibrationError(f"{file}: no measurement rows")
    return rows


# -- tracing ------------------------------------------------------------------------------


def resolve_reference(reference: str) -> str:
    """``"module"`` for a reference-model name, ``"zoo"`` for a zoo name; anything else raises.

    Raises:
        UnknownKindError: neither; the message lists the known names, closest first.
    """
    if reference in REFERENCE_MODELS:
        return "module"
    if reference in zoo.list_zoo():
        return "zoo"
    known = [*REFERENCE_MODELS.names(), *zoo.list_zoo()]
    close = difflib.get_close_matches(reference, known, n=10, cutoff=0.0)
    raise UnknownKindError(f"unknown reference {reference!r} (neither a zoo model nor a reference model); "
                           f"closest: {', '.join(close)}")


_TRACES: dict[tuple[str, int, int], CostReport] = {}
_TRACES_LOCK = threading.Lock()


def trace_reference(reference: str, resolution: int, batch: int = 1) -> CostReport:
    """The traced cost of ``reference`` at ``resolution`` x ``resolution`` and ``batch``, in float32.

    Zoo models are priced with :func:`nas.profile` (``arch.with_resolution``), reference models with
    :func:`nas.cost.profile_module` on a ``meta`` build. Results are cached in process per
    ``(reference, resolution, batch)``; :func:`clear_trace_cache` empties the cache.

    Raises:
        UnknownKindError: ``reference`` is neither a zoo model nor a reference model.
        NasError: ``resolution`` or ``batch`` is not a positive int, or the model cannot run at that size.
    """
    for name, value in (("resolution", resolution), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise NasError(f"{name} must be an int >= 1, got {value!r}")
    key = (reference, resolution, batch)
    with _TRACES_LOCK:
        report = _TRACES.get(key)
    if report is not None:
        return report
    if resolve_reference(reference) == "zoo":
        report = profile(zoo.get(reference).with_resolution(resolution), batch=batch)
    else:
        module = REFERENCE_MODELS.get(reference).build(device="meta")
        try:
            report = profile_module(module, (3, resolution, resolution), batch=batch)
        except RuntimeError as error:
            raise NasError(f"reference model {reference!r} cannot run at {resolution}x{resolution}: {error}") from None
    with _TRACES_LOCK:
        _TRACES[key] = report
    return report


def trace(measurement: Measurement) -> CostReport:
    """The traced cost of a measurement's model at its resolution and batch size (cached)."""
    return trace_reference(measurement.reference, measurement.resolution, measurement.batch)


def clear_trace_cache() -> None:
    """Forget every cached trace (for cold-start timings)."""
    with _TRACES_LOCK:
        _TRACES.clear()
