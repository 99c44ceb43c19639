"""Post-training quantisation: calibration, NoisyQuant's noisy bias, per-layer statistics, calibrated model files.

Its own package, not part of ``nas.blocks``: calibrating needs a built model (``nas.build``), data to run through
it (``nas.data``) and, to read and write models, the checkpoint files of ``nas.supernet.checkpoint``; ``blocks``
may import none of those. In DESIGN.md's order it sits right after ``nas/supernet/`` (it imports arch, blocks,
build, data, and the supernet's checkpoint files and accuracy), above search, report and the CLI, which use it.

* :mod:`~nas.quantization.estimators`: clipping ranges of a tensor (min-max, percentile, MSE), pure functions;
* :mod:`~nas.quantization.calibrate`: :func:`quantize_model`: observers on the quantisers, ranges set;
* :mod:`~nas.quantization.noisy_bias`: NoisyQuant (arXiv:2211.16056);
* :mod:`~nas.quantization.analyze`: per-layer activation statistics and quantisation error;
* :mod:`~nas.quantization.model_file`: a calibrated model's file: written atomically, loaded back; a float
  model from a checkpoint;
* :mod:`~nas.quantization.workflow`: :func:`ptq` and :func:`analyze` on a dataset (``nas quantize``, ``nas analyze``).

Example:
    >>> import nas
    >>> from nas.quantization import CalibrationSettings, load_float, quantize_model, save_quantized
    >>> arch, model = load_float(nas.zoo.get("deit_tiny"), "runs/train-deit_tiny/model.pt")  # doctest: +SKIP
    >>> result = quantize_model(model, arch, nas.Precision.from_spec("int8"), images)  # doctest: +SKIP
    >>> save_quantized(result, "quantized/")  # doctest: +SKIP
"""

from __future__ import annotations

from nas.quantization.analyze import OUTLIER_SIGMAS, layer_statistics, summarize
from nas.quantization.calibrate import (
    METHODS,
    WEIGHT_METHODS,
    CalibrationSettings,
    QuantizedModel,
    float_mode,
    quantize_model,
)
from nas.quantization.estimators import minmax_range, mse_range, percentile_range
from nas.quantization.model_file import load_float, load_quantized, save_quantized
from nas.quantization.noisy_bias import AMPLITUDES, NoisyBias, add_noisy_bias, attach_noisy_bias
from nas.quantization.workflow import PtqResult, analyze, ptq

__all__ = [
    "AMPLITUDES",
    "METHODS",
    "OUTLIER_SIGMAS",
    "WEIGHT_METHODS",
    "CalibrationSettings",
    "NoisyBias",
    "PtqResult",
    "QuantizedModel",
    "add_noisy_bias",
    "analyze",
    "attach_noisy_bias",
    "float_mode",
    "layer_statistics",
    "load_float",
    "load_quantized",
    "minmax_range",
    "mse_range",
    "percentile_range",
    "ptq",
    "quantize_model",
    "save_quantized",
    "summarize",
]
