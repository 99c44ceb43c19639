"""Leave-one-family-out validation of a setting's predictor, its figures, and writing them to the YAML.

For each architecture family of a setting's calibration rows, the coefficients
are fitted on the other families' rows and the held-out family is predicted;
the figures are computed over all held-out predictions together:

* Spearman's rank correlation (does the predictor order models correctly),
* MAPE, the mean absolute percentage error,
* the share of predictions within +-10% and +-20% of the measurement.

They are reported overall, per batch size, per held-out family, and over the CNN
and the transformer families apart (:mod:`nas.latency.calibration.architectures`),
next to the in-sample figures of the fit on all rows. A setting with a single family
cannot be validated this way; its report says so and carries in-sample figures
only. The per-row held-out predictions are stored in the YAML too, so a test can
recompute the stored figures without refitting.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.atomic import write_atomic
from nas.latency.calibration.architectures import ARCHITECTURES, family_architectures
from nas.latency.calibration.solver import fit, predict_rows
from nas.latency.coefficients import Coefficients
from nas.latency.targets import Setting, get_target
from nas.yamlio import TABLE_STYLE, dump_yaml, load_yaml, plain

if TYPE_CHECKING:
    from nas.latency.calibration.dataset import Dataset

__all__ = ["Figures", "ValidationReport", "figures", "validate", "summary_line", "write_fit", "figures_from_stored"]

METHOD = "leave-one-family-out: each family's rows predicted by a fit on the other families' rows"


@dataclass(frozen=True)
class Figures:
    """Agreement of predictions with measurements over ``rows`` rows (percentages in 0..100)."""

    rows: int
    spearman_rho: float | None
    mape_pct: float
    within_10_pct: float
    within_20_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows,
                "spearman_rho": None if self.spearman_rho is None else round(self.spearman_rho, 4),
                "mape_pct": round(self.mape_pct, 2), "within_10_pct": round(self.within_10_pct, 2),
                "within_20_pct": round(self.within_20_pct, 2)}


def figures(measured: Sequence[float] | np.ndarray, predicted: Sequence[float] | np.ndarray) -> Figures:
    """Spearman rho (``scipy.stats.spearmanr``: ties share their mean rank), MAPE and the shares within 10% / 20%
    of ``predicted`` against ``measured``."""
    from scipy.stats import spearmanr  # scipy.stats takes a while to import; only validation needs it

    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    error = np.abs(predicted / measured - 1.0)
    rho = None
    if len(measured) >= 3 and np.ptp(measured) > 0 and np.ptp(predicted) > 0:
        rho = float(spearmanr(measured, predicted).statistic)
    return Figures(len(measured), rho, float(100 * error.mean()), float(100 * np.mean(error <= 0.10 + 1e-12)),
                   float(100 * np.mean(error <= 0.20 + 1e-12)))


@dataclass(frozen=True)
class ValidationReport:
    """The validation of one setting.

    Attributes:
        setting: ``target/setting``.
        families: rows per family.
        fitted_families: the families the coefficients were fitted on (all, unless stored coefficients were kept
            while rows of new families arrived).
        lofo: figures over all held-out predictions (``None`` with fewer than two families).
        lofo_by_batch: the same per batch size.
        lofo_by_family: per held-out family, its figures.
        architectures: family -> ``cnn`` or ``transformer``.
        lofo_by_architecture: figures over the held-out rows of the CNN families and of the transformer
            families apart (a class without rows is left out).
        in_sample: figures of the coefficients on the rows of the fitted families.
        predictions: per row ``(line in the calibration file, measured ms, held-out prediction ms)``.
    """

    setting: str
    families: dict[str, int]
    fitted_families: tuple[str, ...]
    lofo: Figures | None
    lofo_by_batch: dict[int, Figures]
    lofo_by_family: dict[str, Figures]
    architectures: dict[str, str]
    lofo_by_architecture: dict[str, Figures]
    in_sample: Figures
    predictions: tuple[tuple[int, float, float], ...]


def lofo_predictions(dataset: Dataset, fitted: frozenset[str] | None = None,
                     coefficients: Coefficients | None = None) -> np.ndarray:
    """Held-out prediction (ms) per row: each family predicted by a fit on the others.

    With ``fitted`` (the families ``coefficients`` were fitted on), only those families are refitted without
    themselves; the rows of every other family, which the coefficients never saw, are predicted by
    ``coefficients`` as they stand.
    """
    families = np.array(dataset.families)
    pool = np.isin(families, sorted(fitted)) if fitted is not None else np.ones(len(families), dtype=bool)
    out = np.empty(len(families))
    for family in dict.fromkeys(dataset.families):
        held = families == family
        if fitted is not None and family not in fitted:
            assert coefficients is not None, "kept coefficients are needed for the families they never saw"
            out[held] = predict_rows(dataset.subset(held), coefficients)
        else:
            out[held] = predict_rows(dataset.subset(held), fit(dataset.subset(pool & ~held)))
    return out


def validate(dataset: Dataset, coefficients: Coefficients | None = None,
             fitted: frozenset[str] | None = None) -> ValidationReport:
    """Leave-one-family-out figures of ``dataset.setting``.

    Args:
        dataset: the setting's rows.
        coefficients: the all-rows fit (refitted if None), or the stored coefficients when they are kept.
        fitted: the families ``coefficients`` were fitted on, when that is not every family of ``dataset``
            (kept coefficients, new rows): the others are predicted by ``coefficients`` as never-fitted
            families, and the in-sample figures cover the fitted families only.
    """
    measured = dataset.measured_s * 1e3
    full = coefficients if coefficients is not None else fit(dataset)
    families = np.array(dataset.families)
    pool = frozenset(dataset.families) if fitted is None else fitted
    in_pool = np.isin(families, sorted(pool))
    in_sample = figures(measured[in_pool], predict_rows(dataset.subset(in_pool), full))
    counts = dict(Counter(dataset.families))
    architectures = family_architectures(dataset.rows)
    if len(pool & set(counts)) < 2:
        return ValidationReport(dataset.setting.label, counts, tuple(sorted(pool)), None, {}, {}, architectures, {},
                                in_sample, ())
    held_out = lofo_predictions(dataset, fitted, full)
    batches = np.array([row.batch for row in dataset.rows])
    by_batch = {int(b): figures(measured[batches == b], held_out[batches == b]) for b in sorted(set(batches))}
    by_family = {family: figures(measured[families == family], held_out[families == family]) for family in counts}
    row_architectures = np.array([architectures[family] for family in dataset.families])
    by_architecture = {name: figures(measured[row_architectures == name], held_out[row_architectures == name])
                       for name in ARCHITECTURES if np.any(row_architectures == name)}
    predictions = tuple((row.line, float(m), float(p))
                        for row, m, p in zip(dataset.rows, measured, held_out, strict=True))
    return ValidationReport(dataset.setting.label, counts, tuple(sorted(pool)), figures(measured, held_out), by_batch,
                            by_family, architectures, by_architecture, in_sample, predictions)


def summary_line(setting: Setting, report: ValidationReport) -> str:
    """One line: setting, rows, families, LOFO rho / MAPE / within 10% / 20%, in-sample MAPE."""
    head = f"{setting.label:<34} rows {sum(report.families.values()):>4}  families {len(report.families):>3}"
    if report.lofo is None:
        return f"{head}  LOFO n/a (one family)  in-sample MAPE {report.in_sample.mape_pct:5.1f}%"
    lofo = report.lofo
    rho = "n/a" if lofo.spearman_rho is None else f"{lofo.spearman_rho:.3f}"
    return (f"{head}  LOFO rho {rho}  MAPE {lofo.mape_pct:5.1f}%  within10 {lofo.within_10_pct:5.1f}%  "
            f"within20 {lofo.within_20_pct:5.1f}%  (in-sample MAPE {report.in_sample.mape_pct:5.1f}%)")


def _validation_block(report: ValidationReport, *, command: str, date: str) -> dict[str, Any]:
    block: dict[str, Any] = {
        "method": _method(report),
        "date": date,
        "command": command,
        "rows": sum(report.families.values()),
        "families": dict(sorted(report.families.items())),
        "fitted_families": list(report.fitted_families),
        "lofo": None if report.lofo is None else report.lofo.to_dict(),
        "lofo_by_batch": {batch: fig.to_dict() for batch, fig in report.lofo_by_batch.items()},
        "lofo_mape_pct_by_family": {family: round(fig.mape_pct, 1)
                                    for family, fig in sorted(report.lofo_by_family.items())},
        "architectures": report.architectures,
        "lofo_by_architecture": {name: fig.to_dict() for name, fig in report.lofo_by_architecture.items()},
        "in_sample": report.in_sample.to_dict(),
        "predictions_columns": ["line", "measured_ms", "lofo_ms"],
        "predictions": [[line, float(f"{m:.6g}"), float(f"{p:.6g}")] for line, m, p in report.predictions],
    }
    return block


def _method(report: ValidationReport) -> str:
    if report.lofo is None:
        return "in-sample only: a single family cannot be held out"
    if set(report.fitted_families) >= set(report.families):
        return METHOD
    return (f"{METHOD}, among the families the coefficients were fitted on ({', '.join(report.fitted_families)}); "
            "the other families, never fitted, predicted by the stored coefficients")


def figures_from_stored(validation: Mapping[str, Any]) -> Figures | None:
    """The LOFO figures recomputed from a stored ``validation`` block's per-row predictions."""
    rows = validation.get("predictions") or []
    if not rows:
        return None
    return figures([row[1] for row in rows], [row[2] for row in rows])


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def write_fit(setting: Setting, coefficients: Coefficients, report: ValidationReport, *, command: str,
              date: str) -> None:
    """Write the setting's fitted coefficients and validation block into its target's YAML, atomically."""
    path = get_target(setting.target).path
    document = plain(load_yaml(path))
    entry = document["settings"][setting.name]
    entry["coefficients"] = coefficients.to_dict()
    entry["validation"] = _validation_block(report, command=command, date=date)
    write_atomic(path, _header(path) + dump_yaml(document, style=TABLE_STYLE))


def is_close(a: float | None, b: float | None, *, tolerance: float) -> bool:
    """Both None, or both numbers within ``tolerance`` (absolute)."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, abs_tol=tolerance)
