"""Precision-aware latency on Xeon: predicted INT8 speed-ups against the published INT8 / FP32 pairs.

The Xeon calibration file (``predictors/calibration/xeon.csv``, rows copied with their sources from the
Intel Neural Compressor validated-model table) holds, for many models, the FP32 latency and the INT8
latency of the same model under the same runtime on the same 4-core Platinum 8480+ instance. For each
such pair this prints the measured speed-up (FP32 / INT8 latency) and two predicted ones:

* ``per-op``: the runtime's FP32 setting prices the model twice, once with every op at fp32 and once with
  every op at int8 (``nas.op_precision``: convolutions and matrix products compute in int8, the rest moves
  int8 tensors), taking the device's int8 peak. No INT8 row is used: this is how a mixed-precision point
  of a search is priced on an FP32 setting, so its ratio is the check of per-op precision.
* ``regime``: the runtime's FP32 setting for the FP32 latency, its INT8 setting (fitted on the INT8 rows,
  so in-sample) for the INT8 one.

Each ratio is predicted / measured speed-up (1.0: exact). Pairs are matched by model, reference and
runtime family (``onnxruntime`` with ``onnxruntime-qdq`` / ``-qlinearops``, ``pytorch`` with
``pytorch-ptq`` / ``-qat``, ``tensorflow`` with itself); a model with several rows per side takes the median.

Usage::

    python bench/precision.py
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict

import numpy as np

from nas.arch import Precision
from nas.latency.calibration.measurements import Measurement, load_measurements, resolve_reference, trace
from nas.latency.opmodel import evaluate, features, params_of
from nas.latency.optable import build_table
from nas.latency.targets import Setting, get_target
from nas.op_precision import op_format

FAMILIES = {"onnxruntime": "onnxruntime", "onnxruntime-qdq": "onnxruntime", "onnxruntime-qlinearops": "onnxruntime",
            "pytorch": "pytorch", "pytorch-ptq": "pytorch", "pytorch-qat": "pytorch", "tensorflow": "tensorflow"}
INT8 = Precision.from_spec("int8")


def _latency_ms(row: Measurement, setting: Setting, *, int8: bool) -> float:
    """``row``'s model priced under ``setting``, every op at fp32 or (``int8``) at the format int8 gives it."""
    ops = trace(row).ops
    if int8:
        ops = tuple(dataclasses.replace(op, precision=op_format(op.op_class, op.name, INT8, "block")) for op in ops)
    table = build_table(ops, setting, by_unit=resolve_reference(row.reference) == "zoo")
    feats = features(table, setting, input_bytes=4.0 * row.batch * 3 * row.resolution * row.resolution)
    return float(evaluate(feats, params_of(setting.fitted))[0]) * 1e3


def pairs() -> list[tuple[str, str, list[Measurement], list[Measurement]]]:
    """``(model, runtime family, FP32 rows, INT8 rows)`` of every model with both on the Platinum 8480+."""
    grouped: dict[tuple[str, str, str], dict[str, list[Measurement]]] = defaultdict(lambda: defaultdict(list))
    for row in load_measurements("xeon"):
        family = FAMILIES.get(row.runtime)
        if family is not None and row.device == "Xeon Platinum 8480+":
            grouped[(row.model, row.reference, family)][row.precision].append(row)
    return [(model, family, sides["fp32"], sides["int8"]) for (model, _, family), sides in sorted(grouped.items())
            if sides["fp32"] and sides["int8"]]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    target = get_target("xeon")
    ratios: dict[str, list[float]] = {"per-op": [], "regime": []}
    print(f"{'model':<34} {'runtime':<12} {'measured':>9} {'per-op':>8} {'ratio':>6} {'regime':>8} {'ratio':>6}")
    for model, family, fp32_rows, int8_rows in pairs():
        fp32_setting, int8_setting = target.setting(f"{family}_fp32"), target.setting(f"{family}_int8")
        measured = (statistics.median(row.latency_ms for row in fp32_rows)
                    / statistics.median(row.latency_ms for row in int8_rows))
        row = fp32_rows[0]
        fp32_ms = _latency_ms(row, fp32_setting, int8=False)
        per_op = fp32_ms / _latency_ms(row, fp32_setting, int8=True)
        regime = fp32_ms / _latency_ms(int8_rows[0], int8_setting, int8=False)
        ratios["per-op"].append(per_op / measured)
        ratios["regime"].append(regime / measured)
        print(f"{model[:34]:<34} {family:<12} {measured:>8.2f}x {per_op:>7.2f}x {per_op / measured:>6.2f} "
              f"{regime:>7.2f}x {regime / measured:>6.2f}")
    for name, values in ratios.items():
        array = np.array(values)
        within = 100 * np.mean(np.abs(array - 1) <= 0.25)
        print(f"{name}: {len(array)} pairs, predicted / measured int8 speed-up: median {np.median(array):.2f}, "
              f"geometric mean {np.exp(np.mean(np.log(array))):.2f}, range {array.min():.2f}-{array.max():.2f}, "
              f"within +-25%: {within:.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
