"""The PTQ workflows behind ``nas quantize`` and ``nas analyze``, from a float model and a dataset.

Both take the calibration batches from the dataset's training split (no augmentation, a fixed random subset:
:class:`nas.supernet.EvalBatches`), at the Arch's own input resolution and channels. ``nas quantize`` also
scores the float and the calibrated model on the validation split (the dataset's test split where it has one)
when the dataset's classes match the model's head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from nas.arch import Arch, Precision
from nas.data import Dataset, FolderDataset
from nas.errors import ConfigError
from nas.quantization.analyze import layer_statistics
from nas.quantization.calibrate import DEFAULT_SETTINGS, CalibrationSettings, QuantizedModel, quantize_model
from nas.supernet.evaluate import EvalBatches, accuracy

if TYPE_CHECKING:
    import pandas

__all__ = ["PtqResult", "check_quantizes", "ptq", "analyze"]


@dataclass
class PtqResult:
    """A calibrated model and, when they could be measured, ``float_accuracy``/``quantized_accuracy``/``drop``."""

    quantized: QuantizedModel
    metrics: dict[str, float]


def check_quantizes(precision: Precision, path: str = "--precision") -> None:
    """Refuse a precision that leaves every tensor in fp32: there would be nothing to calibrate."""
    if precision.is_default:
        raise ConfigError("fp32 weights and activations: nothing to quantise (e.g. int8, int8:channel/int8)",
                          path=path)


def _batches(arch: Arch, dataset: Dataset | FolderDataset, settings: CalibrationSettings, batch_size: int,
             max_val: int | None) -> EvalBatches:
    return EvalBatches.from_dataset(dataset, resolution=arch.input.resolution, channels=arch.input.channels,
                                    calibration_batches=settings.batches, batch_size=batch_size,
                                    seed=settings.seed, max_val=max_val)


def ptq(model: nn.Module, arch: Arch, precision: Precision, dataset: Dataset | FolderDataset,
        settings: CalibrationSettings = DEFAULT_SETTINGS, *, batch_size: int = 64,
        max_val: int | None = None, evaluate: bool = True) -> PtqResult:
    """Calibrate ``model`` (float, of ``arch``) at ``precision`` on ``dataset``; score both models if asked.

    Args:
        max_val: score on the first ``max_val`` validation images only (None: all).
        evaluate: measure the accuracies (skipped anyway when the dataset's classes differ from the head's).
    """
    check_quantizes(precision)
    batches = _batches(arch, dataset, settings, batch_size, max_val if evaluate else 1)
    quantized = quantize_model(model, arch, precision, (images for images, _ in batches.calibration), settings)
    metrics: dict[str, float] = {}
    if evaluate and arch.head.num_classes == dataset.num_classes:
        metrics["float_accuracy"] = accuracy(model, batches.validation)
        metrics["quantized_accuracy"] = accuracy(quantized.module, batches.validation)
        metrics["drop"] = metrics["float_accuracy"] - metrics["quantized_accuracy"]
    return PtqResult(quantized, metrics)


def analyze(model: nn.Module, arch: Arch, precision: Precision, dataset: Dataset | FolderDataset,
            settings: CalibrationSettings = DEFAULT_SETTINGS, *, batch_size: int = 64) -> pandas.DataFrame:
    """:func:`~nas.quantization.analyze.layer_statistics` of ``model`` calibrated at ``precision`` on
    ``dataset``'s calibration batches (the same batches calibrate and are measured)."""
    check_quantizes(precision)
    batches = _batches(arch, dataset, settings, batch_size, 1)
    images = [images for images, _ in batches.calibration]
    quantized = quantize_model(model, arch, precision, images, settings)
    return layer_statistics(quantized.module, images, batches=settings.batches)
