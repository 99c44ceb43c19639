"""Fit a setting's coefficients to measured rows: the calibration rows, or those ``nas profile`` measures.

The fit minimises the relative error: residual ``log(predicted) - log(measured)``
per row, each row weighted by ``1 / sqrt(rows of its family)`` so a family
published at three batch sizes and twenty widths does not outvote one published
once. Parameters live in log space (all are positive), start at the setting's
priors, and are pulled back to them by ``prior_weight * (log value - log prior)``
residuals, which keeps coefficients the data cannot see (a fallback processor no
calibration model uses, an op group few rows exercise) at their physical
values instead of drifting. A soft-L1 loss (``f_scale`` 0.15, i.e. about 15%)
keeps a few inconsistent published rows from dominating (iteratively
re-weighted Levenberg-Marquardt steps, started from the plain least-squares
fit so that a systematic misfit of every row is not mistaken for outliers). Only the coefficients
named in the setting's ``fit.free`` move. Bounds: compute efficiencies at most
2.5 (above 1 only through fast algorithms such as Winograd convolution, which
multiply less than the traced FLOPs), memory efficiencies at most 10
(cache-resident tensors beat DRAM bandwidth). The Jacobian is analytic, so a fit over a few hundred
rows is quick; the result is deterministic. The command line that refits and
writes the packaged targets is :mod:`nas.latency.calibration.fit`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nas.latency.coefficients import Coefficients
from nas.latency.kinds import COMPUTE_GROUPS, LAUNCH_GROUPS
from nas.latency.opmodel import NC, NL, TRANSFER_INDEX, Features, Params, evaluate, params_of
from nas.latency.targets import Setting

if TYPE_CHECKING:
    from nas.latency.calibration.dataset import Dataset

__all__ = ["fit", "fit_features", "predict_rows"]

SOFT_L1_SCALE = 0.15
_BOUNDS = {"eff": (1e-5, 2.5), "meff": (1e-3, 10.0), "launch": (1e-9, 1e-2), "kernel": (1e-9, 1e-3),
           "sat": (1.0, 1e8), "fixed": (1e-7, 1.0), "input": (1e-13, 1e-6), "switch": (1e-7, 1e-1)}
# Params units -> YAML units per slot kind (launch_us, kernel_us, fixed_ms, input_ms_per_mb, switch_us).
_TO_YAML = {"eff": 1.0, "meff": 1.0, "launch": 1e6, "kernel": 1e6, "sat": 1.0, "fixed": 1e3, "input": 1e9,
            "switch": 1e6}
_ARRAYS = {"eff": "compute_efficiency", "meff": "memory_efficiency", "launch": "launch_s", "kernel": "kernel_s",
           "sat": "saturation"}


@dataclass(frozen=True)
class _Slot:
    name: str
    array: str
    index: int


def _slot(name: str) -> _Slot:
    host = name.startswith("host.")
    rest = name[5:] if host else name
    scalar = {"fixed_ms": "fixed", "switch_us": "switch", "input_ms_per_mb": "input"}.get(rest)
    if scalar is not None:
        return _Slot(name, scalar, 0)
    head, _, group = rest.partition(".")
    if head == "compute_efficiency":
        return _Slot(name, "eff", COMPUTE_GROUPS.index(group) + host * NC)
    if head == "memory_efficiency":
        return _Slot(name, "meff", COMPUTE_GROUPS.index(group) + host * NC)
    if head == "launch_us":
        return _Slot(name, "launch", LAUNCH_GROUPS.index(group) + host * NL)
    return _Slot(name, {"kernel_us": "kernel", "saturation_parallelism": "sat"}[head], int(host))


class _Problem:
    """Residuals and Jacobian of the fit over one dataset."""

    def __init__(self, feats: Features, measured_s: np.ndarray, weights: np.ndarray, start: Params,
                 slots: list[_Slot], prior: np.ndarray, prior_weight: float):
        self.feats = feats
        self.log_measured = np.log(measured_s)
        self.weights = weights
        self.start = start
        self.slots = slots
        self.prior = prior
        self.prior_scale = np.sqrt(prior_weight)

    def params(self, theta: np.ndarray) -> Params:
        arrays = {key: getattr(self.start, field).copy() for key, field in _ARRAYS.items()}
        scalars = {"fixed": self.start.fixed_s, "input": self.start.input_s_per_byte, "switch": self.start.switch_s}
        for slot, value in zip(self.slots, np.exp(theta), strict=True):
            if slot.array in scalars:
                scalars[slot.array] = value
            else:
                arrays[slot.array][slot.index] = value
        return Params(arrays["eff"], arrays["meff"], arrays["launch"], arrays["kernel"], arrays["sat"],
                      scalars["fixed"], scalars["input"], scalars["switch"])

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        row_s = evaluate(self.feats, self.params(theta))
        fit = self.weights * (np.log(row_s) - self.log_measured)
        return np.concatenate([fit, self.prior_scale * (theta - self.prior)])

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        """d residual / d log parameter, rows x free parameters (prior rows appended)."""
        params = self.params(theta)
        feats = self.feats
        count = feats.count
        ratio = params.saturation[feats.unit] / feats.parallelism
        compute = feats.compute_s / params.compute_efficiency[feats.compute_index] * (1.0 + ratio)
        memory = feats.memory_s / params.memory_efficiency[feats.compute_index]
        bound = compute >= memory
        kernel = feats.launch * params.kernel_s[feats.unit]
        issue = feats.launch * params.launch_s[feats.launch_index]
        execute_rows = np.bincount(feats.row, weights=(np.maximum(compute, memory) + kernel) * count,
                                   minlength=feats.rows)
        issue_rows = np.bincount(feats.row, weights=issue * count, minlength=feats.rows)
        # Which of execution / issue a row's time follows (both, without overlap).
        if feats.overlap:
            execute_on = (execute_rows >= issue_rows).astype(np.float64)
            issue_on = 1.0 - execute_on
        else:
            execute_on = issue_on = np.ones(feats.rows)
        row_s = evaluate(feats, params)

        def summed(per_op: np.ndarray) -> np.ndarray:
            return np.bincount(feats.row, weights=per_op * count, minlength=feats.rows)

        columns = []
        for slot in self.slots:
            if slot.array == "eff":
                column = execute_on * summed(np.where(bound & (feats.compute_index == slot.index), -compute, 0.0))
            elif slot.array == "meff":
                column = execute_on * summed(np.where(~bound & (feats.compute_index == slot.index), -memory, 0.0))
                if slot.index == TRANSFER_INDEX:
                    column = column - feats.transfer_s / params.memory_efficiency[TRANSFER_INDEX]
            elif slot.array == "sat":
                share = np.where(bound & (feats.unit == slot.index), compute * ratio / (1.0 + ratio), 0.0)
                column = execute_on * summed(share)
            elif slot.array == "kernel":
                column = execute_on * summed(np.where(feats.unit == slot.index, kernel, 0.0))
            elif slot.array == "launch":
                column = issue_on * summed(np.where(feats.launch_index == slot.index, issue, 0.0))
            elif slot.array == "fixed":
                column = np.full(feats.rows, params.fixed_s)
            elif slot.array == "input":
                column = feats.input_bytes * params.input_s_per_byte
            else:
                column = feats.switches * params.switch_s
            columns.append(self.weights * column / row_s)
        fit = np.stack(columns, axis=1) if columns else np.zeros((feats.rows, 0))
        return np.vstack([fit, self.prior_scale * np.eye(len(self.slots))])


def _robust(residuals: np.ndarray, data_rows: int, scale: float | None) -> tuple[float, np.ndarray]:
    """Cost and IRLS weight per residual: soft-L1 on the data residuals (squares if ``scale`` is None), plus
    the squared prior residuals."""
    weights = np.ones_like(residuals)
    if scale is None:
        return float(np.sum(residuals ** 2)), weights
    z = (residuals[:data_rows] / scale) ** 2
    cost = float(np.sum(2.0 * scale ** 2 * (np.sqrt(1.0 + z) - 1.0)) + np.sum(residuals[data_rows:] ** 2))
    weights[:data_rows] = (1.0 + z) ** -0.25
    return cost, weights


def _levenberg_marquardt(problem: _Problem, theta: np.ndarray, lower: np.ndarray, upper: np.ndarray, *,
                         data_rows: int, scale: float | None, iterations: int = 200) -> np.ndarray:
    """Minimise the robust cost by damped Gauss-Newton steps on re-weighted residuals, clipped to the bounds.

    NOTE: scipy's least_squares (trf) gives the same optimum but spends most of its time in a multi-threaded SVD
    of the whole rows x coefficients Jacobian; the normal equations here are only coefficients x coefficients.
    """
    residuals = problem.residuals(theta)
    cost, weights = _robust(residuals, data_rows, scale)
    damping = 1e-3
    for _ in range(iterations):
        jacobian = problem.jacobian(theta) * weights[:, None]
        weighted = residuals * weights
        gradient = jacobian.T @ weighted
        hessian = jacobian.T @ jacobian
        improved = False
        while damping < 1e10:
            step = np.linalg.solve(hessian + damping * (np.diag(np.diag(hessian)) + 1e-9 * np.eye(len(theta))),
                                   -gradient)
            candidate = np.clip(theta + step, lower, upper)
            candidate_residuals = problem.residuals(candidate)
            candidate_cost, candidate_weights = _robust(candidate_residuals, data_rows, scale)
            if candidate_cost < cost:
                improved = True
                converged = cost - candidate_cost < 1e-10 * max(cost, 1e-12)
                theta, residuals, cost, weights = candidate, candidate_residuals, candidate_cost, candidate_weights
                damping = max(damping / 3.0, 1e-9)
                break
            damping *= 4.0
        if not improved or converged:
            break
    return theta


def _family_weights(families: Sequence[str]) -> np.ndarray:
    counts = Counter(families)
    weights = np.array([1.0 / np.sqrt(counts[family]) for family in families])
    return weights / weights.mean()


def _slot_value(params: Params, slot: _Slot) -> float:
    if slot.array in _ARRAYS:
        return float(getattr(params, _ARRAYS[slot.array])[slot.index])
    return float({"fixed": params.fixed_s, "input": params.input_s_per_byte, "switch": params.switch_s}[slot.array])


def fit(dataset: Dataset) -> Coefficients:
    """Fit the free coefficients of ``dataset.setting`` to its rows (deterministic).

    Returns:
        The setting's priors with the free coefficients replaced by their fitted values.
    """
    return fit_features(dataset.setting, dataset.features, dataset.measured_s, dataset.families)


def fit_features(setting: Setting, feats: Features, measured_s: np.ndarray, families: Sequence[str]) -> Coefficients:
    """Fit the free coefficients of ``setting`` to rows given as features and measured seconds (deterministic).

    The rows need not be calibration rows: ``nas profile`` fits models it measured on this machine.
    """
    priors = setting.priors
    start = params_of(priors)
    slots = [_slot(name) for name in setting.free]
    if not slots:
        return priors
    prior = np.log([_slot_value(start, slot) for slot in slots])
    lower = np.log([_BOUNDS[slot.array][0] for slot in slots])
    upper = np.log([_BOUNDS[slot.array][1] for slot in slots])
    problem = _Problem(feats, np.asarray(measured_s, dtype=np.float64), _family_weights(families), start, slots,
                       prior, setting.prior_weight)
    # Least squares first (a systematic misfit of every row is not an outlier), then soft-L1 from there.
    theta = _levenberg_marquardt(problem, np.clip(prior, lower, upper), lower, upper, data_rows=feats.rows,
                                 scale=None)
    theta = _levenberg_marquardt(problem, theta, lower, upper, data_rows=feats.rows, scale=SOFT_L1_SCALE)
    fitted = problem.params(theta)
    values = {slot.name: _slot_value(fitted, slot) * _TO_YAML[slot.array] for slot in slots}
    return priors.replace_values(values)


def predict_rows(dataset: Dataset, coefficients: Coefficients) -> np.ndarray:
    """Predicted latency per row of ``dataset``, milliseconds."""
    return evaluate(dataset.features, params_of(coefficients)) * 1e3

