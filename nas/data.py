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

Example:
    >>> from nas.data import load_dataset, loaders
    >>> data = load_dataset(None)
    >>> train, val = loaders(data, batch_size=64, resolution=32, channels=3, augment=True, seed=0)
    >>> images, targets = next(iter(train))
    >>> tuple(images.shape), data.num_classes
    ((64, 3, 32, 32), 10)
"""

from __future__ import annotations

import importlib.resources
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.datasets.augment import Augment, PatchMixing, patch_mix, random_crop, random_flip
from nas.errors import ConfigError, NasError

__all__ = [
    "DEFAULT_DATASET",
    "BUNDLED",
    "DatasetError",
    "Dataset",
    "PatchMixing",
    "Augment",
    "Loader",
    "load_dataset",
    "loaders",
    "split_indices",
    "safe_unpickle",
    "random_crop",
    "random_flip",
    "patch_mix",
]

DEFAULT_DATASET = "animal-mnist"
BUNDLED = {"animal-mnist": "animal_mnist.npz"}  # name -> file in nas/datasets
_BUNDLED_SOURCE = "animal-mnist 0.4 (PyPI), MIT licence, bundled as nas/datasets/animal_mnist.npz (see NOTICE there)"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for RGB -> grey
_PICKLE_GLOBALS = {  # what a pickled numpy array needs, under numpy 1 and 2 names; nothing else is loaded
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


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
        mean, std = _convert_stats(dataset.mean, dataset.std, channels)
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
        """Whether targets are class probabilities (Patch Mixing) rather than indices."""
        return self.augment is not None and self.augment.patch_mixing is not None

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
        total = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, total, self.world_size)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        permutation = torch.randperm(total, generator=generator)
        padded_total = self.num_samples * self.world_size
        repeats = -(-padded_total // total)
        permutation = permutation.repeat(repeats)[:padded_total]
        return permutation[self.rank : padded_total : self.world_size]

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
        images = random_crop(images, self._crop, generator)
        if self.augment.flip:
            images = random_flip(images, generator)
        if self.augment.patch_mixing is None:
            return self._normalise(images), labels
        return patch_mix(self._normalise(images), labels, num_classes=self.num_classes,
                         config=self.augment.patch_mixing, patch_size=self._patch_size, generator=generator)

    def _normalise(self, images: Tensor) -> Tensor:
        return (_convert_channels(images.float().div_(255.0), self.channels) - self._mean) / self._std


def loaders(
    dataset: Dataset, *, batch_size: int, resolution: int | None = None, augment: bool | Augment = False,
    seed: int = 0, rank: int = 0, world_size: int = 1, channels: int | None = None,
    val_batch_size: int | None = None,
) -> tuple[Loader, Loader]:
    """The training and validation loaders of ``dataset`` for one rank.

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
    train = Loader(dataset.train_images, dataset.train_labels, batch_size=batch_size, augment=policy, train=True,
                   **common)
    val = Loader(dataset.val_images, dataset.val_labels, batch_size=val_batch_size, augment=None, train=False,
                 **common)
    if len(train) == 0:
        raise DatasetError(dataset.source, f"batch_size {batch_size} exceeds the {train.num_samples} training images "
                           f"per rank (world_size {world_size})")
    return train, val


def load_dataset(
    spec: str | Path | None = None, *, val_fraction: float = 0.2, split_seed: int = 0, image_size: int | None = None,
) -> Dataset:
    """Read a dataset into memory (see the module docstring for the formats).

    Args:
        spec: None or a bundled name (``"animal-mnist"``) for the bundled
            default; otherwise a path to a dataset directory or ``.npz`` file.
        val_fraction: share of each class held out for validation when the
            format has no split of its own.
        split_seed: seed of that hold-out.
        image_size: image folders only: resize every image to this square
            size. Without it all images must share one square size.

    Raises:
        DatasetError: the path does not exist, or is not a dataset of a known
            format; the message names the path and what was expected.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"must lie in (0, 1), got {val_fraction}", path="val_fraction")
    split: dict[str, Any] = {"val_fraction": val_fraction, "split_seed": split_seed}
    if spec is None or str(spec) in BUNDLED:
        name = DEFAULT_DATASET if spec is None else str(spec)
        resource = importlib.resources.files("nas.datasets").joinpath(BUNDLED[name])
        with resource.open("rb") as stream:
            return _from_npz(stream, name=name, source=_BUNDLED_SOURCE, **split)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(path, "no such file or directory (and not a bundled dataset name: "
                           f"{', '.join(sorted(BUNDLED))}); expected a directory of image folders or CIFAR "
                           "python batches, or an .npz file")
    if path.is_file():
        if path.suffix != ".npz":
            raise DatasetError(path, f"unknown file type '{path.suffix}'; expected an .npz file with arrays x, y "
                               "(or a directory)")
        with path.open("rb") as stream:
            return _from_npz(stream, name=path.stem, source=str(path), **split)
    for inner in ("cifar-10-batches-py", "cifar-100-python"):
        if (path / inner).is_dir():
            path = path / inner
    if any(path.glob("data_batch_*")) or (path / "test_batch").exists():
        return _from_cifar10(path)
    if (path / "train").is_file() or (path / "test").is_file():
        return _from_cifar100(path)
    return _from_folders(path, image_size=image_size, **split)


def split_indices(labels: np.ndarray, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified hold-out: ``round(val_fraction * n_c)`` random images of each class ``c`` go to validation.

    Deterministic for a given ``seed`` (numpy's PCG64) on every platform.

    Returns:
        Sorted training indices and sorted validation indices.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        held.append(rng.permutation(members)[: int(round(val_fraction * len(members)))])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = _PICKLE_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and builtins expected")
        return super().find_class(*target)


def safe_unpickle(stream: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle builtins and numpy arrays only (CIFAR batches); any other global is refused."""
    return _ArrayUnpickler(stream, encoding=encoding).load()


def _resize(images: Tensor, resolution: int) -> Tensor:
    """uint8 images resized once to ``resolution`` (antialiased bilinear), in chunks to bound memory."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    chunks = [F.interpolate(chunk.float(), size=(resolution, resolution), mode="bilinear", align_corners=False,
                            antialias=True).round_().clamp_(0, 255).to(torch.uint8) for chunk in images.split(2048)]
    return torch.cat(chunks) if chunks else images.new_zeros((0, images.shape[1], resolution, resolution))


def _convert_channels(images: Tensor, channels: int) -> Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    weights = torch.tensor(_LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _convert_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> tuple[list[float], list[float]]:
    if len(mean) == channels:
        return list(mean), list(std)
    if channels == 3:
        return list(mean) * 3, list(std) * 3
    grey_mean = sum(w * m for w, m in zip(_LUMA, mean, strict=True))
    grey_std = sum(w * s for w, s in zip(_LUMA, std, strict=True))  # an upper bound; close for correlated channels
    return [grey_mean], [grey_std]


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(4096):
        values = chunk.double().div_(255.0)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = max(images.shape[0] * images.shape[2] * images.shape[3], 1)
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _as_images(array: np.ndarray, where: str | Path, key: str) -> np.ndarray:
    """``N x C x R x R`` uint8 from any accepted layout and dtype."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise DatasetError(where, f"{key}: expected images N x H x W, N x H x W x C or N x C x H x W with C in "
                           f"(1, 3), got shape {array.shape}")
    if array.shape[2] != array.shape[3]:
        raise DatasetError(where, f"{key}: expected square images, got {array.shape[2]}x{array.shape[3]}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0 or np.isnan(array).any()):
            raise DatasetError(where, f"{key}: float images must lie in [0, 1]")
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and (not array.size or (array.min() >= 0 and array.max() <= 255)):
        return array.astype(np.uint8)
    raise DatasetError(where, f"{key}: expected uint8 images or floats in [0, 1], got {array.dtype}")


def _as_labels(array: np.ndarray, count: int, where: str | Path, key: str) -> np.ndarray:
    if array.shape != (count,) or not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(where, f"{key}: expected {count} integer labels, got shape {array.shape} {array.dtype}")
    if count and array.min() < 0:
        raise DatasetError(where, f"{key}: labels must be >= 0, got {array.min()}")
    return array.astype(np.int64)


def _assemble(
    name: str, source: str, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
    class_names: tuple[str, ...] | None,
) -> Dataset:
    if len(train[1]) == 0:
        raise DatasetError(source, "no training images")
    if class_names is None:
        top = max(int(train[1].max()), int(val[1].max()) if len(val[1]) else 0)
        class_names = tuple(str(index) for index in range(top + 1))
    train_images = torch.from_numpy(train[0])
    mean, std = _channel_stats(train_images)
    mixed = np.random.default_rng(0).permutation(len(val[1]))  # any prefix of the validation split mixes classes
    return Dataset(name=name, train_images=train_images, train_labels=torch.from_numpy(train[1]),
                   val_images=torch.from_numpy(val[0][mixed]), val_labels=torch.from_numpy(val[1][mixed]),
                   class_names=class_names, mean=mean, std=std, source=source)


def _split(
    images: np.ndarray, labels: np.ndarray, *, val_fraction: float, split_seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    train, val = split_indices(labels, val_fraction=val_fraction, seed=split_seed)
    return (images[train], labels[train]), (images[val], labels[val])


def _from_npz(stream: IO[bytes], *, name: str, source: str, val_fraction: float, split_seed: int) -> Dataset:
    try:
        with np.load(stream, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(source, f"not a readable .npz file ({error})") from error
    class_names = tuple(str(item) for item in arrays["class_names"]) if "class_names" in arrays else None
    val_key = "x_val" if "x_val" in arrays else "x_test"
    if {"x_train", "y_train", val_key, f"y{val_key[1:]}"} <= arrays.keys():
        parts = []
        for x_key in ("x_train", val_key):
            y_key = f"y{x_key[1:]}"
            images = _as_images(arrays[x_key], source, x_key)
            parts.append((images, _as_labels(arrays[y_key], len(images), source, y_key)))
        return _assemble(name, source, parts[0], parts[1], class_names)
    if {"x", "y"} <= arrays.keys():
        images = _as_images(arrays["x"], source, "x")
        labels = _as_labels(arrays["y"], len(images), source, "y")
        train, val = _split(images, labels, val_fraction=val_fraction, split_seed=split_seed)
        return _assemble(name, source, train, val, class_names)
    raise DatasetError(source, f"expected arrays x, y or x_train, y_train, x_val, y_val; found {sorted(arrays)}")


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as stream:
            batch = safe_unpickle(stream)
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key])
    except FileNotFoundError as error:
        raise DatasetError(path, "missing; expected a CIFAR python batch file") from error
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as error:
        raise DatasetError(path, f"not a CIFAR python batch (a pickled dict with 'data' and '{label_key}'): "
                           f"{error!r}") from error
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DatasetError(path, f"'data' must be N x 3072 uint8 (3 x 32 x 32 per row), got {data.shape} {data.dtype}")
    return data.reshape(-1, 3, 32, 32), _as_labels(labels, len(data), path, label_key)


def _read_names(path: Path, key: str) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    try:
        with path.open("rb") as stream:
            return tuple(str(name) for name in safe_unpickle(stream)[key])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as error:
        raise DatasetError(path, f"not a CIFAR meta file (a pickled dict with '{key}'): {error!r}") from error


def _from_cifar10(path: Path) -> Dataset:
    files = sorted(path.glob("data_batch_*"))
    if not files:
        raise DatasetError(path, "no data_batch_* files; expected CIFAR-10 python batches data_batch_1..5, test_batch")
    parts = [_read_batch(file, "labels") for file in files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    val = _read_batch(path / "test_batch", "labels")
    return _assemble("cifar10", str(path), train, val, _read_names(path / "batches.meta", "label_names"))


def _from_cifar100(path: Path) -> Dataset:
    train = _read_batch(path / "train", "fine_labels")
    val = _read_batch(path / "test", "fine_labels")
    return _assemble("cifar100", str(path), train, val, _read_names(path / "meta", "fine_label_names"))


def _class_folders(path: Path) -> list[Path]:
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(path, "no class sub-folders; expected one folder of images per class, CIFAR python "
                           "batches, or an .npz file")
    return folders


def _open_images(path: Path, class_names: tuple[str, ...], *, require_images: bool) -> list[tuple[Any, int]]:
    """Every image under ``path``'s class folders, decoded, with its class index."""
    from PIL import Image, UnidentifiedImageError

    items: list[tuple[Any, int]] = []
    for folder in _class_folders(path):
        if folder.name not in class_names:
            raise DatasetError(folder, f"class '{folder.name}' is not among the training classes {list(class_names)}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files and require_images:
            raise DatasetError(folder, f"no images (expected files ending in {', '.join(sorted(_IMAGE_SUFFIXES))})")
        for file in files:
            try:
                with Image.open(file) as image:
                    image.load()
                    items.append((image.copy(), class_names.index(folder.name)))
            except (OSError, UnidentifiedImageError) as error:
                raise DatasetError(file, f"not a readable image ({error})") from error
    return items


def _stack_images(
    groups: list[list[tuple[Any, int]]], path: Path, image_size: int | None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each group as uint8 ``N x C x R x R`` images and labels, in one mode (grey if all are grey) and size."""
    from PIL import Image

    everything = [image for group in groups for image, _ in group]
    mode = "L" if all(image.mode in _GREY_MODES for image in everything) else "RGB"
    sizes = {image.size for image in everything}
    if image_size is None and (len(sizes) > 1 or any(width != height for width, height in sizes)):
        raise DatasetError(path, f"images differ in size or are not square ({sorted(sizes)[:4]}); "
                           "pass image_size to resize them")
    side = image_size if image_size is not None else next(iter(sizes))[0]
    result = []
    for group in groups:
        arrays = []
        for image, _ in group:
            image = image.convert(mode)
            if image.size != (side, side):
                image = image.resize((side, side), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(image, dtype=np.uint8))
        labels = np.array([label for _, label in group], dtype=np.int64)
        result.append((_as_images(np.stack(arrays), path, "images"), labels))
    return result


def _from_folders(path: Path, *, image_size: int | None, val_fraction: float, split_seed: int) -> Dataset:
    val_dir = next((path / name for name in ("val", "test") if (path / name).is_dir()), None)
    if (path / "train").is_dir() and val_dir is not None:
        class_names = tuple(folder.name for folder in _class_folders(path / "train"))
        groups = [_open_images(path / "train", class_names, require_images=True),
                  _open_images(val_dir, class_names, require_images=False)]
        if not groups[1]:
            raise DatasetError(val_dir, "no validation images; expected class folders of images")
        train, val = _stack_images(groups, path, image_size)
        return _assemble(path.name, str(path), train, val, class_names)
    class_names = tuple(folder.name for folder in _class_folders(path))
    ((images, labels),) = _stack_images([_open_images(path, class_names, require_images=True)], path, image_size)
    train, val = _split(images, labels, val_fraction=val_fraction, split_seed=split_seed)
    return _assemble(path.name, str(path), train, val, class_names)
