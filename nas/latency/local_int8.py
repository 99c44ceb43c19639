"""Int8 on the local onnxruntime setting: mixed-precision models timed by the profile, and the int8 rates fitted.

``nas profile --target local --runtime onnxruntime`` also times random
*mixed-precision* models: metaformer points whose blocks are each int8 or
fp32 (:func:`mixed_archs`). onnxruntime runs them as their QDQ models
(:func:`nas.qdq.export_qdq`): an int8 block's layers run int8 kernels
(``QLinearConv``, ``MatMulIntegerToFloat``), its other ops (norms,
activations, residual adds) run in float between quantise/dequantise nodes.

The local setting prices int8 ops as a processor of their own: the main device
sends int8 ops to a *fallback* processor (``formats: {int8: fallback}``), the
same CPU running onnxruntime's int8 kernels (:func:`int8_processor`). It gets
the fallback's full coefficient set, per op group: compute and memory
efficiencies, launch costs and saturation, plus a cost per switch between fp32
and int8 ops with the crossing tensor (a quantise or dequantise pass at an int8
region's edges). :func:`fit_int8` fits those to the mixed-precision fit models
with the fp32 coefficients fixed (already fitted to the float models), so the
float predictions do not change. The held-out mixed-precision models, never
fitted, validate the result (acceptance: 90% of them within +-15%).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.arch import Arch, Precision
from nas.cost import profile
from nas.latency.calibration.solver import fit_features
from nas.latency.coefficients import Coefficients
from nas.latency.opmodel import Params, compress, concat, evaluate, features, params_of
from nas.latency.optable import OpTable, build_table
from nas.latency.targets import Setting

__all__ = ["MIXED_PRECISION", "INT8_BLOCK_SHARE", "ACCEPTANCE_BAND", "INT8_FREE", "mixed_archs", "int8_processor",
           "fit_int8", "predict_ms", "within_pct"]

MIXED_PRECISION = Precision("int8:channel", "int8")
"""An int8 block of a mixed-precision profile model: weights per output channel, activations per tensor (the
scheme onnxruntime's CPU int8 kernels take; a per-channel activation scale would run dequantised)."""

INT8_BLOCK_SHARE = 0.5
"""The chance that a block of a mixed-precision profile model is int8."""

ACCEPTANCE_BAND = 0.15
"""The held-out mixed-precision models' acceptance band: within +-15% of the measurement."""

INT8_FREE = ("host.compute_efficiency.*", "host.memory_efficiency.*", "host.launch_us.*", "host.saturation_parallelism",
             "switch_us")
"""The int8 processor's coefficients a profile fits (as the fp32 ones, kernel_us left at its prior)."""

INT8_PRIOR_WEIGHT = 0.003
"""Pull of the fitted fp32 coefficients on the int8 processor's (log-space, per parameter)."""


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


def int8_processor(device: dict[str, Any], peak_tops: float) -> dict[str, Any]:
    """The device document of the int8 processor: the CPU of ``device`` (a local device document) running int8
    kernels; its rate is the fp32 GEMM peak (the fitted int8 efficiencies are relative to it)."""
    return {**device, "title": f"{device['title']}, onnxruntime int8 kernels (QDQ)",
            "peak_tops": {"int8": peak_tops}, "vector_tops": {"int8": peak_tops},
            "sources": [*device["sources"], "int8 processor: the same CPU running onnxruntime's int8 kernels "
                        "(QLinearConv, MatMulIntegerToFloat) and the float ops between quantise/dequantise nodes; "
                        "rate = the fp32 GEMM peak above, efficiencies fitted here (nas.latency.local_int8)"]}


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


def fit_int8(setting: Setting, coefficients: Coefficients, archs: Sequence[Arch],
             measured_ms: Sequence[float]) -> Coefficients:
    """``coefficients`` with the int8 processor's (``host.*``) and ``switch_us`` fitted to the mixed-precision
    ``archs`` (deterministic); the fp32 ones are held fixed.

    Args:
        setting: the local setting with its int8 processor (a fallback that ``formats: {int8: fallback}`` sends
            int8 ops to).
        coefficients: the setting's fitted fp32 coefficients (with the int8 processor's priors).
        archs: mixed-precision models.
        measured_ms: their measured latencies.
    """
    free = tuple(name for name in coefficients.names() if any(fnmatch.fnmatch(name, pattern) for pattern in INT8_FREE))
    # The int8 processor starts as the fitted fp32 one and the prior pulls it there: it departs from fp32 only where
    # the mixed-precision models say so (a few dozen rows against ~20 coefficients).
    host = [name for name in coefficients.names() if name.startswith("host.")]
    like_fp32 = coefficients.replace_values({name: coefficients.get(name[len("host."):]) for name in host})
    staged = dataclasses.replace(setting, priors=like_fp32, free=free, prior_weight=INT8_PRIOR_WEIGHT)
    feats = concat([compress(features(table, setting, input_bytes=size)) for table, size in _tables(setting, archs)])
    return fit_features(staged, feats, np.asarray(measured_ms, dtype=np.float64) * 1e-3,
                        ["measured here"] * len(archs))


def within_pct(measured: Sequence[float], predicted: Sequence[float], band: float = ACCEPTANCE_BAND) -> float:
    """The share (0..100) of predictions within ``+-band`` of their measurement."""
    error = np.abs(np.asarray(predicted, dtype=np.float64) / np.asarray(measured, dtype=np.float64) - 1.0)
    return float(100 * np.mean(error <= band + 1e-12))
