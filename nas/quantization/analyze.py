"""Per-layer activation statistics and quantisation error: where a model's precision hurts, and why.

:func:`layer_statistics` runs calibration-style batches through a calibrated model (:func:`quantize_model`) in
float (:func:`~nas.quantization.calibrate.float_mode`) and, at each quantised layer, reads the float input ``x``
and output ``y`` and computes the same layer's quantised output ``y_q`` on the same ``x``: the layer's own error,
not the error it inherits from the layers before it. One row per layer:

==============  ====================================================================================================
column          definition
==============  ====================================================================================================
layer           the layer's dotted name in the model
type            its module class (``Linear``, ``Conv2d``, ...)
max_abs         ``max |x|`` over every batch
kurtosis        ``E[(x - mean)^4] / std^4`` over every element of every batch (Pearson's; 3 for a Gaussian): the
                tail weight Quantizable Transformers (arXiv:2306.12929) tracks; large values mean outliers set the
                range
outliers        share of the elements of ``x`` further than :data:`OUTLIER_SIGMAS` standard deviations from the
                mean of their batch's tensor (a Gaussian has about 2e-9 of them at 6 sigma)
relative_mse    ``sum (y_q - y)^2 / sum y^2``
sqnr_db         signal-to-quantisation-noise ratio, ``-10 log10(relative_mse)``
==============  ====================================================================================================

Moments are accumulated in float64 over all batches. The plot (:func:`nas.report.render_layer_statistics`) draws
``max_abs``, ``kurtosis`` and ``sqnr_db`` per layer.

Example:
    >>> from nas.quantization import layer_statistics, quantize_model
    >>> table = layer_statistics(quantize_model(model, arch, precision, images).module, images)  # doctest: +SKIP
    >>> table.sort_values("sqnr_db").head()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from nas.blocks.fakequant import quantized_layers
from nas.errors import NasError
from nas.quantization.calibrate import FloatMode, float_mode, run_batches

if TYPE_CHECKING:
    import pandas

__all__ = ["OUTLIER_SIGMAS", "COLUMNS", "LayerAccumulator", "layer_statistics", "summarize"]

OUTLIER_SIGMAS = 6.0
"""Distance from the mean, in standard deviations, beyond which an activation counts as an outlier."""
COLUMNS = ("layer", "type", "max_abs", "kurtosis", "outliers", "relative_mse", "sqnr_db")


class LayerAccumulator:
    """Running sums of one layer's input moments, outliers and output error over batches."""

    def __init__(self, outlier_sigmas: float = OUTLIER_SIGMAS):
        self.outlier_sigmas = outlier_sigmas
        self.count = 0
        self.moments = torch.zeros(4, dtype=torch.float64)  # sums of x, x^2, x^3, x^4
        self.max_abs = 0.0
        self.outliers = 0
        self.signal = 0.0
        self.noise = 0.0

    def add_input(self, x: Tensor) -> None:
        values = x.detach().reshape(-1).double()
        self.count += values.numel()
        self.moments += torch.stack([values.pow(power).sum() for power in range(1, 5)]).cpu()
        self.max_abs = max(self.max_abs, float(values.abs().max()))
        mean, std = values.mean(), values.std(unbiased=False)
        if std > 0:
            self.outliers += int(((values - mean).abs() > self.outlier_sigmas * std).sum())

    def add_output(self, reference: Tensor, quantized: Tensor) -> None:
        self.signal += float(reference.detach().double().pow(2).sum())
        self.noise += float((quantized.detach().double() - reference.detach().double()).pow(2).sum())

    def kurtosis(self) -> float:
        raw = (self.moments / max(self.count, 1)).tolist()
        mean = raw[0]
        variance = raw[1] - mean**2
        if variance <= 0:
            return math.nan
        fourth = raw[3] - 4 * mean * raw[2] + 6 * mean**2 * raw[1] - 3 * mean**4
        return fourth / variance**2

    def row(self) -> dict[str, float]:
        relative = self.noise / self.signal if self.signal > 0 else math.nan
        sqnr = -10.0 * math.log10(relative) if relative > 0 else math.inf
        return {"max_abs": self.max_abs, "kurtosis": self.kurtosis(), "outliers": self.outliers / max(self.count, 1),
                "relative_mse": relative, "sqnr_db": sqnr}


def _hook(accumulator: LayerAccumulator, mode: FloatMode) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
    """A layer's forward hook: its float input and output into ``accumulator``, and its quantised output on the
    same input (computed with ``mode`` switched off for the moment)."""

    def measure(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        accumulator.add_input(inputs[0])
        mode.active = False
        try:
            quantized = layer.forward(*inputs)  # forward, not __call__: this hook must not run again
        finally:
            mode.active = True
        accumulator.add_output(output, quantized)

    return measure


@torch.no_grad()
def layer_statistics(model: nn.Module, images: Iterable[Tensor], *, batches: int = 4,
                     outlier_sigmas: float = OUTLIER_SIGMAS) -> pandas.DataFrame:
    """One row per quantised layer of the calibrated ``model`` (columns :data:`COLUMNS`), in model order.

    Args:
        model: a model built at a precision, its quantisers calibrated.
        images: input batches; the first ``batches`` are used.
        outlier_sigmas: the outlier threshold in standard deviations.

    Raises:
        NasError: the model has no quantised layer, or ``images`` gave no batch.
    """
    import pandas as pd

    layers = list(quantized_layers(model))
    if not layers:
        raise NasError("the model has no quantised layer to analyse")
    accumulators = {name: LayerAccumulator(outlier_sigmas) for name, _ in layers}
    model.eval()
    with float_mode(model) as mode:
        handles = [layer.register_forward_hook(_hook(accumulators[name], mode)) for name, layer in layers]
        run_batches(model, images, batches, handles, "no batch to analyse")
    rows = [{"layer": name, "type": type(layer).__name__, **accumulators[name].row()} for name, layer in layers
            if accumulators[name].count]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarize(table: pandas.DataFrame) -> dict[str, float]:
    """Model-level figures of a :func:`layer_statistics` table: the largest ``max_abs``, the largest and mean
    kurtosis, the largest outlier share, and the worst and median SQNR."""
    return {"max_abs": float(table["max_abs"].max()), "kurtosis_max": float(table["kurtosis"].max()),
            "kurtosis_mean": float(table["kurtosis"].mean()), "outliers_max": float(table["outliers"].max()),
            "sqnr_db_min": float(table["sqnr_db"].min()), "sqnr_db_median": float(table["sqnr_db"].median())}
