"""The in-memory dataset every reader returns and every loader serves: uint8 images with a fixed split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from nas.errors import NasError

__all__ = ["DatasetError", "Dataset"]


class DatasetError(NasError):
    """A dataset is missing, malformed, or cannot serve the request; the message names the path.

    Args:
        path: the file or directory concerned.
        message: what is wrong and what was expected.
    """

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset in memory, split into training and validation images.

    Attributes:
        name: short name (``animal-mnist``, ``cifar10``, the folder or file stem).
        train_images: ``num_train x channels x resolution x resolution`` uint8.
        train_labels: ``num_train`` int64 class indices.
        val_images: ``num_val x channels x resolution x resolution`` uint8, in a
            fixed shuffled order, so that any prefix is a class-mixed sample.
        val_labels: ``num_val`` int64 class indices.
        class_names: one name per class; its length is ``num_classes``.
        mean: per-channel mean of the training images, scaled to [0, 1].
        std: per-channel standard deviation of the training images, scaled to [0, 1].
        source: where the data came from (a path, or the bundled file and its licence).
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    val_images: Tensor
    val_labels: Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        for split, images, labels in (("train", self.train_images, self.train_labels),
                                      ("val", self.val_images, self.val_labels)):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
                raise DatasetError(self.source, f"{split} images must be N x C x R x R uint8, got "
                                   f"{tuple(images.shape)} {images.dtype}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise DatasetError(self.source, f"{split} labels must be {images.shape[0]} int64 values, got "
                                   f"{tuple(labels.shape)} {labels.dtype}")
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
                raise DatasetError(self.source, f"{split} labels must lie in [0, {len(self.class_names)}), got "
                                   f"[{int(labels.min())}, {int(labels.max())}]")
        if self.val_images.shape[1:] != self.train_images.shape[1:]:
            raise DatasetError(self.source, f"train and val images differ in shape: "
                               f"{tuple(self.train_images.shape[1:])} vs {tuple(self.val_images.shape[1:])}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        """Channels of the stored images (1: grey-scale, 3: RGB); :func:`loaders` can convert."""
        return int(self.train_images.shape[1])

    @property
    def resolution(self) -> int:
        """Side of the stored (square) images in pixels; :func:`loaders` resizes."""
        return int(self.train_images.shape[2])

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_images.shape[0])
