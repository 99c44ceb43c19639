"""Latency prediction per hardware target: device facts, a per-op model fitted to published measurements.

A target (``predictors/<name>.yaml``) holds device facts with their sources,
one or more measurement settings (runtime, precision, batch sizes), and per
setting the fitted coefficients of the per-op model and its leave-one-family-out
validation figures. The modules, one job each:

* :mod:`~nas.latency.targets`: read targets (``list_targets``, ``get_target``);
* :mod:`~nas.latency.kinds`: the op kinds the model prices;
* :mod:`~nas.latency.optable`: fusion, fallback placement, channel padding;
* :mod:`~nas.latency.opmodel`: roofline + launch-overhead time model;
* :mod:`~nas.latency.predict`, :mod:`~nas.latency.batch`: the API;
* :mod:`~nas.latency.local`, :mod:`~nas.latency.measure`, :mod:`~nas.latency.machine`:
  ``nas profile``, a predictor for this machine;
* :mod:`~nas.latency.calibration`: the toolchain that made the packaged
  coefficients (reference models, row selection, fitting, validation:
  ``python -m nas.latency.calibration.fit --target v100 --write``); prediction
  imports none of it.

Example:
    >>> import nas
    >>> result = nas.latency.predict(nas.zoo.get("poolformer_s12"), target="iphone12")
    >>> sorted(result.to_dict())[:3]
    ['batch', 'breakdown', 'latency_ms']
"""

from __future__ import annotations

from nas.latency.optable import UnsupportedOpError, UnsupportedPrecisionError
from nas.latency.predict import Prediction, predict, predict_many
from nas.latency.targets import Setting, Target, get_target, list_targets

__all__ = [
    "Prediction",
    "Setting",
    "Target",
    "UnsupportedOpError",
    "UnsupportedPrecisionError",
    "get_target",
    "list_targets",
    "predict",
    "predict_many",
]
