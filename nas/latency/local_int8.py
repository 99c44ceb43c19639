"""Int8 on the local onnxruntime setting: mixed-precision models timed by the profile, and the int8 rates fitted.

``nas profile --target local --runtime onnxruntime`` also times random
*mixed-precision* models: metaformer points whose blocks are each int8 or
fp32 (:func:`mixed_archs`). onnxruntime runs them as their QDQ models
(:func:`nas.qdq.export_qdq`): an int8 block's layers run int8 kernels
(``QLinearConv``, ``MatMulIntegerToFloat``), its other ops (norms,
activations, residual adds) run in float between quantise/dequantise nodes.

The per-op model (:mod:`nas.latency.opmodel`) prices an op at int8 with the
device's int8 rates, ``peak_tops.int8`` for the MAC ops and ``vector_tops.int8``
for the rest, and the same per-group efficiencies as fp32. Those two rates are
the local setting's int8 coefficients: :func:`fit_int8_rates` fits them to the
mixed-precision fit models with the fp32 coefficients fixed (already fitted to
the float models), so the float predictions do not change. They are effective
rates, not a data sheet's: the quantise/dequantise work around the int8
kernels and the float element-wise ops inside int8 blocks are in them.
The held-out mixed-precision models, never fitted, validate the result
(acceptance: 90% of them within +-15%).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nas.arch import Arch, Precision
from nas.cost import profile
from nas.latency.coefficients import Coefficients
from nas.latency.opmodel import Params, compress, concat, evaluate, features, params_of
from nas.latency.optable import OpTable, build_table
from nas.latency.targets import Setting

__all__ = ["MIXED_PRECISION", "INT8_BLOCK_SHARE", "ACCEPTANCE_BAND", "mixed_archs", "fit_int8_rates",
           "with_int8_rates", "predict_ms", "within_pct"]

MIXED_PRECISION = Precision("int8:channel", "int8")
"""An int8 block of a mixed-precision profile model: weights per output channel, activations per tensor (the
scheme onnxruntime's CPU int8 kernels take; a per-channel activation scale would run dequantised)."""

INT8_BLOCK_SHARE = 0.5
"""The chance that a block of a mixed-precision profile model is int8."""

ACCEPTANCE_BAND = 0.15
"""The held-out mixed-precision models' acceptance band: within +-15% of the measurement."""

_RATE_BOUNDS_TOPS = (1e-5, 1e2)


def mixed_archs(archs: Sequence[Arch], seed: int) -> list[Arch]:
    """Each Arch with every block int8 (:data:`MIXED_PRECISION`) with probability :data:`INT8_BLOCK_SHARE`, else
    fp32; at least one block int8 and, where there are two blocks or more, at least one fp32."""
    rng = np.random.default_rng([seed, 8])
    out = []
    for arch in archs:
        blocks = [(s, b) for s, stage in enumerate(arch.stages) for b in range(len(stage.blocks))]
        chosen = rng.random(len(blocks)) < INT8_BLOCK_SHARE
        if not chosen.any():
            chosen[rng.integers(len(blocks))] = True
        if chosen.all() and len(blocks) > 1:
            chosen[rng.integers(len(blocks))] = False
        int8 = {site for site, pick in zip(blocks, chosen, strict=True) if pick}
        stages = tuple(dataclasses.replace(stage, blocks=tuple(
            dataclasses.replace(block, precision=MIXED_PRECISION) if (s, b) in int8 else block
            for b, block in enumerate(stage.blocks))) for s, stage in enumerate(arch.stages))
        out.append(dataclasses.replace(arch, stages=stages))
    return out


def with_int8_rates(setting: Setting, mac_tops: float, vector_tops: float) -> Setting:
    """``setting`` whose device runs int8 ops at these rates (its float rates unchanged)."""
    device = setting.device
    return dataclasses.replace(setting, device=dataclasses.replace(
        device, peak_tops={**device.peak_tops, "int8": mac_tops},
        vector_tops={**device.vector_tops, "int8": vector_tops}))


def _tables(setting: Setting, archs: Sequence[Arch]) -> list[tuple[OpTable, float]]:
    out = []
    for arch in archs:
        spec = arch.input
        out.append((build_table(profile(arch, batch=1).ops, setting, by_unit=True),
                    4.0 * spec.channels * spec.resolution ** 2))
    return out


def _evaluate_ms(setting: Setting, params: Params, tables: Sequence[tuple[OpTable, float]]) -> np.ndarray:
    feats = concat([compress(features(table, setting, input_bytes=size)) for table, size in tables])
    return evaluate(feats, params) * 1e3


def predict_ms(setting: Setting, coefficients: Coefficients, archs: Sequence[Arch]) -> np.ndarray:
    """What ``setting`` with ``coefficients`` predicts for ``archs`` (batch 1, ms), as :func:`nas.latency.predict`
    prices them."""
    return _evaluate_ms(setting, params_of(coefficients), _tables(setting, archs))


def fit_int8_rates(setting: Setting, coefficients: Coefficients, archs: Sequence[Arch],
                   measured_ms: Sequence[float]) -> tuple[float, float]:
    """``(peak_tops.int8, vector_tops.int8)`` that best predict the mixed-precision ``archs`` (deterministic).

    Args:
        setting: the local setting; its device must list int8 rates already (any positive values: they place the
            int8 ops, the fit replaces them).
        coefficients: the setting's fitted (fp32) coefficients, held fixed.
        archs: mixed-precision models.
        measured_ms: their measured latencies.

    The fit minimises the soft-L1 loss of the log ratio predicted / measured (relative errors, robust to a
    model the shared machine slowed down), over the log of each rate.
    """
    from scipy.optimize import least_squares

    params = params_of(coefficients)
    tables = _tables(setting, archs)
    measured = np.asarray(measured_ms, dtype=np.float64)

    def residuals(log_rates: np.ndarray) -> np.ndarray:
        rated = with_int8_rates(setting, *np.exp(log_rates))
        return np.log(_evaluate_ms(rated, params, tables) / measured)

    start = np.log([setting.device.peak_tops["fp32"]] * 2)
    bounds = np.log(_RATE_BOUNDS_TOPS)
    found = least_squares(residuals, start, bounds=(bounds[0], bounds[1]), loss="soft_l1", f_scale=0.1)
    mac, vector = np.exp(found.x)
    return float(f"{mac:.6g}"), float(f"{vector:.6g}")


def within_pct(measured: Sequence[float], predicted: Sequence[float], band: float = ACCEPTANCE_BAND) -> float:
    """The share (0..100) of predictions within ``+-band`` of their measurement."""
    error = np.abs(np.asarray(predicted, dtype=np.float64) / np.asarray(measured, dtype=np.float64) - 1.0)
    return float(100 * np.mean(error <= band + 1e-12))
