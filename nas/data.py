"""Datasets for supernet training and stand-alone training: the bundled default, image folders, CIFAR, ``.npz``.

:func:`load_dataset` reads a dataset into memory as uint8 image tensors with a
fixed train/validation split; :func:`loaders` turns it into batches at the
resolution and channel count a model wants, with augmentation. Nothing is ever
downloaded: ``None`` (or ``"animal-mnist"``) is the dataset bundled with the
package, anything else is a local path.

Formats, detected from the path:

* ``None`` / ``"animal-mnist"``: Animal-MNIST (10 classes of 28x28 grey-scale
  animal silhouettes, MIT licence, bundled as ``nas/datasets/animal_mnist.npz``;
  ``nas/datasets/NOTICE`` names the source and ``convert_animal_mnist.py``
  rebuilds the file from the PyPI wheel);
* a directory with ``data_batch_*`` and ``test_batch``: CIFAR-10, python pickles;
* a directory with ``train`` and ``test`` files: CIFAR-100, python pickles (fine labels);
  a directory holding ``cifar-10-batches-py`` or ``cifar-100-python`` is followed into it;
* another directory: image folders, one sub-folder per class (sorted names are
  the class indices), read with Pillow; with ``train/`` and ``val/`` (or
  ``test/``) sub-folders, those are the split;
* a ``.npz`` file with arrays ``x``, ``y`` (split here) or ``x_train``, ``y_train``,
  ``x_val``, ``y_val`` (or ``x_test``, ``y_test``), optionally ``class_names``;
  images ``N x H x W``, ``N x H x W x C`` or ``N x C x H x W`` with ``C`` in {1, 3},
  uint8 or floats in [0, 1].

Splits: a format with its own held-out set (CIFAR's test batch, ``val/``
folders, ``x_val`` arrays) uses it as the validation split; otherwise
:func:`split_indices` holds out ``val_fraction`` of each class, chosen by
``split_seed``, so the split is the same on every machine and every run.

Augmentation (:class:`Augment`, in ``nas/datasets/augment.py``) is written with torch ops on whole batches:
random crop with zero padding and horizontal flip, and optionally Patch Mixing
(Lee et al., "Hardwiring ViT Patch Selectivity into CNNs using Patch Mixing",
arXiv:2306.17848): a random share of a grid of patches is taken from another
image of the batch and the targets are interpolated by that share. Every random
draw comes from a generator seeded by ``(seed, epoch, batch index, rank)``, so
a resumed run sees exactly the batches an uninterrupted one would.

The public names all come from here; the work is split by job: the in-memory
:class:`Dataset` in ``nas/datasets/dataset.py``, reading the formats
(:func:`load_dataset`) in ``nas/datasets/formats.py``, serving batches
(:class:`Loader`, :func:`loaders`) in this module.

Example:
    >>> from nas.data import load_dataset, loaders
    >>> data = load_dataset(None)
    >>> train, val = loaders(data, batch_size=64, resolution=32, channels=3, augment=True, seed=0)
    >>> images, targets = next(iter(train))
    >>> tuple(images.shape), data.num_classes
    ((64, 3, 32, 32), 10)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.datasets.augment import Augment, PatchMixing, mix_batch, patch_mix, random_crop, random_flip
from nas.datasets.channels import convert_channels, convert_stats
from nas.datasets.dataset import Dataset, DatasetError
from nas.datasets.formats import BUNDLED, DEFAULT_DATASET, load_dataset, safe_unpickle, split_indices
from nas.datasets.randaugment import rand_augment
from nas.datasets.streaming import STREAM_FROM_IMAGES, FolderDataset, StreamLoader, shard_order
from nas.errors import ConfigError

__all__ = [
    "DEFAULT_DATASET",
    "BUNDLED",
    "DatasetError",
    "Dataset",
    "FolderDataset",
    "STREAM_FROM_IMAGES",
    "PatchMixing",
    "Augment",
    "Loader",
    "StreamLoader",
    "load_dataset",
    "loaders",
    "split_indices",
    "safe_unpickle",
    "random_crop",
    "random_flip",
    "patch_mix",
]

class Loader:
    """Batches of one split, from memory, for one rank.

    Order: the training loader shuffles with ``torch.randperm`` seeded by
    ``seed + epoch``, pads the permutation by wrapping around to a multiple of
    ``world_size`` and takes every ``world_size``-th index from ``rank`` on -
    the rule of ``torch.utils.data.DistributedSampler`` (same seed, same
    order), so ranks see disjoint shards of equal length and the same number
    of batches; incomplete last batches are dropped. The validation loader
    keeps the stored order, shards without padding (each image is seen by
    exactly one rank, so sum correct counts across ranks) and keeps the last
    batch.

    Each batch: images ``B x channels x resolution x resolution`` float32,
    normalised by the dataset's mean and std; targets ``B`` int64 class
    indices, or ``B x num_classes`` float probabilities when Patch Mixing is
    on (``torch.nn.functional.cross_entropy`` takes both).

    Call :meth:`set_epoch` before iterating each epoch (as with
    DistributedSampler), or use :meth:`iter_epoch`, which can also start in the
    middle of an epoch when a run resumes.
    """

    def __init__(
        self, images: Tensor, labels: Tensor, *, dataset: Dataset, batch_size: int, resolution: int,
        channels: int, augment: Augment | None, train: bool, seed: int, rank: int, world_size: int,
    ):
        self.images = _resize(images, resolution)
        self.labels = labels
        self.num_classes = dataset.num_classes
        self.batch_size = batch_size
        self.resolution = resolution
        self.channels = channels
        self.augment = augment
        self.train = train
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        mean, std = convert_stats(dataset.mean, dataset.std, channels)
        self._mean = torch.tensor(mean).view(1, -1, 1, 1)
        self._std = torch.tensor(std).view(1, -1, 1, 1)
        self._crop = 0
        self._patch_size = 0
        if augment is not None:
            self._crop = resolution // 8 if augment.crop_padding is None else augment.crop_padding
            if augment.patch_mixing is not None:
                size = augment.patch_mixing.patch_size
                self._patch_size = max(resolution // 8, 1) if size is None else size
                if resolution % self._patch_size:
                    raise ConfigError(f"{self._patch_size} does not divide the resolution {resolution}",
                                      path="patch_mixing.patch_size")

    @property
    def soft_targets(self) -> bool:
        """Whether targets are class probabilities (Patch Mixing, mixup, CutMix) rather than indices."""
        return self.augment is not None and self.augment.mixes

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch (before dropping an incomplete batch)."""
        total = len(self.labels)
        if self.train:
            return -(-total // self.world_size)
        return len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        if self.train:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter(loader)`` serves (shuffling and augmentation depend on it)."""
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        """This rank's sample indices for ``epoch``, in batch order."""
        return shard_order(len(self.labels), train=self.train, seed=self.seed, epoch=epoch, rank=self.rank,
                           world_size=self.world_size, num_samples=self.num_samples)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_epoch(self.epoch)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of ``epoch`` from batch index ``start`` on."""
        order = self.order(epoch)
        for index in range(start, len(self)):
            chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield self._batch(chosen, epoch, index)

    def _batch(self, chosen: Tensor, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        images = self.images[chosen]
        labels = self.labels[chosen]
        if self.augment is None:
            return self._normalise(images), labels
        state = np.random.SeedSequence([self.seed, epoch, index, self.rank]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(state))
        policy = self.augment
        if policy.randaugment is not None:
            images = _rand_augmented(images, policy.randaugment, generator)
        images = random_crop(images, self._crop, generator)
        if policy.flip:
            images = random_flip(images, generator)
        targets: Tensor = labels
        images = self._normalise(images)
        if policy.patch_mixing is not None:
            images, targets = patch_mix(images, labels, num_classes=self.num_classes, config=policy.patch_mixing,
                                        patch_size=self._patch_size, generator=generator)
        if policy.mixup > 0 or policy.cutmix > 0:
            images, targets = mix_batch(images, targets, num_classes=self.num_classes, mixup=policy.mixup,
                                        cutmix=policy.cutmix, generator=generator)
        return images, targets

    def _normalise(self, images: Tensor) -> Tensor:
        return (convert_channels(images.float().div_(255.0), self.channels) - self._mean) / self._std


def loaders(
    dataset: Dataset | FolderDataset, *, batch_size: int, resolution: int | None = None,
    augment: bool | Augment = False, seed: int = 0, rank: int = 0, world_size: int = 1, channels: int | None = None,
    val_batch_size: int | None = None, workers: int | None = None,
) -> tuple[Loader | StreamLoader, Loader | StreamLoader]:
    """The training and validation loaders of ``dataset`` for one rank (streamed for a :class:`FolderDataset`).

    Args:
        dataset: from :func:`load_dataset`.
        batch_size: training images per batch and rank.
        resolution: side of the served images; None keeps the dataset's. Images
            are resized with antialiased bilinear interpolation.
        augment: True for :class:`Augment`'s defaults (crop and flip), False for
            none, or an :class:`Augment`. Only the training loader augments.
        seed: shuffling and augmentation seed (>= 0); the split does not depend on it.
        rank: this process's rank, in ``[0, world_size)``.
        world_size: number of processes sharing the data (DDP).
        channels: channels of the served images; None keeps the dataset's.
            Grey-scale data is repeated to 3 channels; RGB data becomes grey
            with BT.601 weights for 1.
        val_batch_size: validation batch size; None: ``batch_size``.
        workers: streamed datasets only: decoding processes (None: one per CPU this process may use, at most 8).

    Raises:
        DatasetError: the training shard holds fewer than ``batch_size`` images.
        ConfigError: an argument is out of range.
    """
    resolution = dataset.resolution if resolution is None else resolution
    channels = dataset.channels if channels is None else channels
    val_batch_size = batch_size if val_batch_size is None else val_batch_size
    for name, value, ok, rule in (
        ("batch_size", batch_size, batch_size >= 1, ">= 1"),
        ("val_batch_size", val_batch_size, val_batch_size >= 1, ">= 1"),
        ("resolution", resolution, resolution >= 1, ">= 1"),
        ("seed", seed, seed >= 0, ">= 0"),
        ("world_size", world_size, world_size >= 1, ">= 1"),
        ("rank", rank, 0 <= rank < world_size, f"in [0, {world_size})"),
        ("channels", channels, channels in (1, 3), "1 or 3"),
    ):
        if not ok:
            raise ConfigError(f"must be {rule}, got {value}", path=name)
    policy = Augment() if augment is True else augment or None
    common: dict[str, Any] = {"dataset": dataset, "resolution": resolution, "channels": channels,
                              "seed": seed, "rank": rank, "world_size": world_size}
    train: Loader | StreamLoader
    val: Loader | StreamLoader
    if isinstance(dataset, FolderDataset):
        common["workers"] = min(len(os.sched_getaffinity(0)), 8) if workers is None else workers
        train = StreamLoader(batch_size=batch_size, augment=policy, train=True, **common)
        val = StreamLoader(batch_size=val_batch_size, augment=None, train=False, **common)
    else:
        train = Loader(dataset.train_images, dataset.train_labels, batch_size=batch_size, augment=policy, train=True,
                       **common)
        val = Loader(dataset.val_images, dataset.val_labels, batch_size=val_batch_size, augment=None, train=False,
                     **common)
    if len(train) == 0:
        raise DatasetError(dataset.source, f"batch_size {batch_size} exceeds the {train.num_samples} training images "
                           f"per rank (world_size {world_size})")
    return train, val


def _rand_augmented(images: Tensor, policy: tuple[int, int], generator: torch.Generator) -> Tensor:
    """RandAugment on each uint8 ``C x H x W`` image of a batch, through Pillow (grey or RGB)."""
    from PIL import Image

    ops, magnitude = policy
    out = []
    for image in images:
        pixels = image.permute(1, 2, 0).numpy()
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        augmented = np.asarray(rand_augment(picture, ops=ops, magnitude=magnitude, generator=generator))
        out.append(torch.from_numpy(augmented.copy()).reshape(image.shape[1], image.shape[2], -1).permute(2, 0, 1))
    return torch.stack(out)


def _resize(images: Tensor, resolution: int) -> Tensor:
    """uint8 images resized once to ``resolution`` (antialiased bilinear), in chunks to bound memory."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    chunks = [F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                            antialias=True).round_().clamp_(0, 255).to(torch.uint8) for chunk in images.split(2048)]
    return torch.cat(chunks) if chunks else images.new_zeros((0, images.shape[1], resolution, resolution))
