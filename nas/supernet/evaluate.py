"""One-shot evaluation: a subnet's top-1 accuracy with weights inherited from the supernet.

Weight sharing leaves BatchNorm running statistics that belong to no single
subnet, so every evaluated network first has them recomputed on a few training
batches (BN recalibration, as in OFA and BigNAS): the statistics are reset and
re-estimated as a cumulative average in training mode, without gradients, then
the network is evaluated on the whole validation split. The calibration and
validation batches are prepared once and reused for every arch of a batch.

Example:
    >>> from nas.data import load_dataset
    >>> batches = EvalBatches.from_dataset(load_dataset(None), resolution=32, channels=3)  # doctest: +SKIP
    >>> accuracies = evaluate(supernet, archs, batches)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nas.arch import Arch
from nas.data import Dataset, FolderDataset, StreamLoader, loaders
from nas.errors import NasError

__all__ = ["EvalBatches", "recalibrate_batchnorm", "accuracy", "evaluate", "kendall_tau"]


@dataclass(frozen=True)
class EvalBatches:
    """Calibration batches (training images, no augmentation) and the validation split, as tensors.

    Attributes:
        calibration: ``[(images, labels), ...]`` from the training split, a fixed random subset.
        validation: ``[(images, labels), ...]`` covering the whole validation split (for a streamed dataset,
            its validation loader, which decodes the images again at each pass).
    """

    calibration: list[tuple[torch.Tensor, torch.Tensor]]
    validation: Iterable[tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def from_dataset(cls, dataset: Dataset | FolderDataset, *, resolution: int, channels: int,
                     calibration_batches: int = 8, batch_size: int = 128, seed: int = 0,
                     max_val: int | None = None) -> EvalBatches:
        """Prepare the batches of ``dataset`` at ``resolution`` and ``channels``.

        Args:
            calibration_batches: number of training batches for BN recalibration.
            batch_size: images per batch.
            seed: picks the calibration images.
            max_val: use only the first ``max_val`` validation images (None: all).
        """
        if calibration_batches < 1:
            raise NasError(f"calibration_batches must be >= 1, got {calibration_batches}")
        train, val = loaders(dataset, batch_size=min(batch_size, dataset.num_train), resolution=resolution,
                             channels=channels, augment=False, seed=seed, val_batch_size=batch_size)
        calibration = []
        for index, batch in enumerate(train.iter_epoch(0)):
            if index >= calibration_batches:
                break
            calibration.append(batch)
        if isinstance(val, StreamLoader) and max_val is None:
            return cls(calibration, val)  # a folder too large for memory is read again at each evaluation
        validation, seen = [], 0
        for images, labels in val.iter_epoch(0):
            if max_val is not None and seen >= max_val:
                break
            if max_val is not None:
                images, labels = images[:max_val - seen], labels[:max_val - seen]
            validation.append((images, labels))
            seen += len(labels)
        return cls(calibration, validation)


def _device_of(model: nn.Module) -> torch.device:
    """Where ``model`` computes: its first parameter's or buffer's device (the CPU for a stateless one)."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def recalibrate_batchnorm(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Reset and re-estimate every BatchNorm's running statistics on ``batches``; returns the BN count.

    The batches (kept on the CPU) are moved to the model's device one at a time, as in :func:`accuracy`.

    The statistics become the cumulative average over the batches (momentum
    None); each module's momentum is restored afterwards. The model is left in
    evaluation mode.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        model.eval()
        return 0
    momenta = [module.momentum for module in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    device = _device_of(model)
    try:
        with torch.no_grad():
            for images, _ in batches:
                model(images.to(device))
    finally:
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum
        model.eval()
    return len(norms)


def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy of ``model`` (in evaluation mode) on ``batches``, in [0, 1]."""
    model.eval()
    device = _device_of(model)
    correct = total = 0
    with torch.no_grad():
        for images, labels in batches:
            predicted = model(images.to(device)).argmax(dim=-1).cpu()
            target = labels if labels.dim() == 1 else labels.argmax(dim=-1)
            correct += int((predicted == target).sum())
            total += len(target)
    if total == 0:
        raise NasError("no validation images to evaluate on")
    return correct / total


def evaluate(supernet: nn.Module, archs: Sequence[Arch], batches: EvalBatches, *,
             progress: Callable[[int, float], None] | None = None) -> np.ndarray:
    """One-shot top-1 accuracy of each arch: extract, recalibrate BatchNorm, evaluate.

    Args:
        supernet: a :class:`~nas.supernet.Supernet` (its state is not changed).
        archs: points of the supernet's space.
        batches: from :meth:`EvalBatches.from_dataset` at the supernet's proxy resolution.
        progress: called with ``(index, accuracy)`` after each arch.

    Returns:
        ``len(archs)`` accuracies in [0, 1].
    """
    out = np.empty(len(archs), dtype=np.float64)
    for index, arch in enumerate(archs):
        model = supernet.extract(arch)  # type: ignore[operator]
        recalibrate_batchnorm(model, batches.calibration)
        out[index] = accuracy(model, batches.validation)
        if progress is not None:
            progress(index, float(out[index]))
    return out


def kendall_tau(first: Sequence[float], second: Sequence[float]) -> float:
    """Kendall's tau-b of two rankings (how far one-shot scores order archs as stand-alone training does).

    ``scipy.stats.kendalltau``: pairs tied in one list count as neither agreeing nor disagreeing, and the
    denominator leaves them out (tau-b). NaN when either list is constant or shorter than two.
    """
    from scipy.stats import kendalltau  # scipy.stats takes a while to import; only rank checks need it

    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise NasError(f"kendall_tau needs two equally long lists, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)
