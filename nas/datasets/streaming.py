"""Image folders too large for memory: decoded from disk per batch, in DataLoader worker processes.

ImageNet-1k holds 1.28M JPEGs, about 140 GB decoded at 224 px, so a folder
with :data:`STREAM_FROM_IMAGES` images or more (or any folder, asked
explicitly) is kept as a list of files: :class:`FolderDataset`. Its loaders,
:class:`StreamLoader`, serve the batches the in-memory :class:`~nas.data.Loader`
would: the same shuffled, rank-sharded order (``shard_order``), each image
augmented by a generator seeded by ``(seed, epoch, position, rank)``, so the
batches do not depend on the number of workers and a resumed run sees the
batches of an uninterrupted one.

Training images get the ImageNet recipe's random resized crop (area 8-100%,
aspect 3/4-4/3, as in torchvision's ``RandomResizedCrop`` defaults and the
"Going deeper with convolutions" paper, arXiv:1409.4842) and a horizontal flip;
validation images are resized so the shorter side is ``resolution / 0.875``
and centre-cropped (the standard 87.5% crop). Patch Mixing, when asked, is
applied per batch as in memory. Written on Pillow and torch: torchvision's
wheels do not load beside the CPU build of torch this project pins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from nas.datasets.augment import Augment, mix_batch, patch_mix
from nas.datasets.channels import convert_channels, convert_stats
from nas.datasets.dataset import DatasetError
from nas.datasets.randaugment import rand_augment

__all__ = ["STREAM_FROM_IMAGES", "FolderDataset", "StreamLoader", "shard_order", "read_folder_index"]

STREAM_FROM_IMAGES = 20_000  # this many images or more: stream from disk (20k RGB images at 224 px are 3 GB decoded)
CENTRE_CROP = 0.875
_STATS_SAMPLE = 256  # training images that estimate the channel mean and std
_STATS_SIDE = 64


def shard_order(total: int, *, train: bool, seed: int, epoch: int, rank: int, world_size: int,
                num_samples: int) -> Tensor:
    """One rank's sample indices for an epoch, by ``torch.utils.data.DistributedSampler``'s rule.

    Training: ``randperm`` seeded by ``seed + epoch``, padded by wrapping to ``num_samples * world_size``,
    every ``world_size``-th index from ``rank`` on. Validation: stored order, sharded without padding.
    """
    if not train:
        return torch.arange(rank, total, world_size)
    permutation = torch.randperm(total, generator=torch.Generator().manual_seed(seed + epoch))
    padded_total = num_samples * world_size
    permutation = permutation.repeat(-(-padded_total // total))[:padded_total]
    return permutation[rank:padded_total:world_size]


@dataclass(frozen=True, eq=False)
class FolderDataset:
    """An image-folder dataset kept on disk: file paths and labels per split.

    Attributes mirror :class:`~nas.data.Dataset` where they can: ``name``, ``class_names``, ``mean``, ``std``,
    ``source``, ``channels`` (3: every image is served as RGB), ``num_train``/``num_val``; ``resolution`` is the
    side it is served at unless a loader asks for another.
    """

    name: str
    root: Path
    train_files: tuple[str, ...]
    train_labels: Tensor
    val_files: tuple[str, ...]
    val_labels: Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    resolution: int = 224
    channels: int = 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_train(self) -> int:
        return len(self.train_files)

    @property
    def num_val(self) -> int:
        return len(self.val_files)


def read_folder_index(path: Path, class_names: tuple[str, ...], suffixes: set[str]) -> tuple[list[str], list[int]]:
    """Every image file under ``path``'s class folders (relative to ``path``) with its class index; no decoding."""
    files, labels = [], []
    for index, name in enumerate(class_names):
        folder = path / name
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            names = sorted(entry.name for entry in entries if Path(entry.name).suffix.lower() in suffixes)
        files.extend(f"{name}/{file}" for file in names)
        labels.extend([index] * len(names))
    return files, labels


def stream_folders(name: str, train: tuple[Path, list[str], list[int]], val: tuple[Path, list[str], list[int]],
                   class_names: tuple[str, ...]) -> FolderDataset:
    """A :class:`FolderDataset` from indexed splits ``(folder, files relative to it, labels)``."""
    (train_root, train_files, train_labels), (val_root, val_files, val_labels) = train, val
    root = Path(os.path.commonpath([train_root, val_root]))
    train_paths = tuple(str((train_root / file).relative_to(root)) for file in train_files)
    val_paths = tuple(str((val_root / file).relative_to(root)) for file in val_files)
    mean, std = channel_stats(root, train_paths)
    return FolderDataset(name=name, root=root, train_files=train_paths,
                         train_labels=torch.tensor(train_labels, dtype=torch.int64), val_files=val_paths,
                         val_labels=torch.tensor(val_labels, dtype=torch.int64), class_names=class_names, mean=mean,
                         std=std, source=str(root))


def channel_stats(root: Path, files: tuple[str, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of an evenly spaced sample of ``files`` (RGB, at 64 px)."""
    step = max(1, len(files) // _STATS_SAMPLE)
    sample = [np.asarray(_decode(root / files[index]).resize((_STATS_SIDE, _STATS_SIDE)), dtype=np.uint8)
              for index in range(0, len(files), step)][:_STATS_SAMPLE]
    flat = torch.from_numpy(np.stack(sample)).reshape(-1, 3).float().div_(255.0)
    return tuple(float(v) for v in flat.mean(0)), tuple(float(v) for v in flat.std(0).clamp_min(1e-3))


def _decode(path: Path):  # noqa: ANN202 - a PIL image; PIL is imported lazily
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(path, f"not a readable image ({error})") from None


def _random_resized_box(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A crop box of 8-100% of the area and aspect ratio 3/4-4/3 (ten tries, then the centre square)."""
    area = width * height
    for _ in range(10):
        draws = torch.rand(4, generator=generator).tolist()
        target = area * (0.08 + 0.92 * draws[0])
        aspect = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * draws[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(draws[2] * (width - w + 1)), int(draws[3] * (height - h + 1))
            return left, top, left + w, top + h
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


class _Images(TorchDataset):
    """The images of one epoch's shard, from position ``start`` on, decoded and augmented in a worker."""

    def __init__(self, loader: StreamLoader, epoch: int, indices: Tensor, first_position: int):
        self.loader, self.epoch, self.indices, self.first_position = loader, epoch, indices, first_position

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        loader = self.loader
        index = int(self.indices[item])
        image = _decode(loader.root / loader.files[index])
        side = loader.resolution
        if loader.augment is None:
            scale = side / CENTRE_CROP / min(image.size)
            image = image.resize((max(side, round(image.size[0] * scale)), max(side, round(image.size[1] * scale))),
                                 Image.Resampling.BILINEAR)
            left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
            image = image.crop((left, top, left + side, top + side))
        else:
            position = self.first_position + item
            entropy = [loader.seed, self.epoch, position, loader.rank]
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1)[0]))
            box = _random_resized_box(*image.size, generator)
            image = image.resize((side, side), Image.Resampling.BILINEAR, box=box)
            if loader.augment.flip and bool(torch.rand(1, generator=generator) < 0.5):
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if loader.augment.randaugment is not None:
                ops, magnitude = loader.augment.randaugment
                image = rand_augment(image, ops=ops, magnitude=magnitude, generator=generator)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return loader.normalise(pixels), loader.labels[index]


class StreamLoader:
    """Batches of one split of a :class:`FolderDataset`, for one rank; the interface of :class:`~nas.data.Loader`.

    ``workers`` DataLoader processes decode and augment; each batch is ``B x channels x resolution x
    resolution`` float32, normalised, with int64 targets (class probabilities with Patch Mixing).
    """

    def __init__(self, dataset: FolderDataset, *, batch_size: int, resolution: int, channels: int,
                 augment: Augment | None, train: bool, seed: int, rank: int, world_size: int, workers: int):
        self.root = dataset.root
        self.files = dataset.train_files if train else dataset.val_files
        self.labels = dataset.train_labels if train else dataset.val_labels
        self.num_classes = dataset.num_classes
        self.batch_size, self.resolution, self.channels = batch_size, resolution, channels
        self.augment, self.train, self.seed, self.rank, self.world_size = augment, train, seed, rank, world_size
        self.workers = workers
        self.epoch = 0
        mean, std = convert_stats(dataset.mean, dataset.std, channels)
        self._mean, self._std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self._patch_size = max(resolution // 8, 1)
        if augment is not None and augment.patch_mixing is not None and augment.patch_mixing.patch_size:
            self._patch_size = augment.patch_mixing.patch_size

    @property
    def num_samples(self) -> int:
        total = len(self.files)
        return -(-total // self.world_size) if self.train else len(range(self.rank, total, self.world_size))

    def __len__(self) -> int:
        return self.num_samples // self.batch_size if self.train else -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> Tensor:
        return shard_order(len(self.files), train=self.train, seed=self.seed, epoch=epoch, rank=self.rank,
                           world_size=self.world_size, num_samples=self.num_samples)

    def normalise(self, pixels: Tensor) -> Tensor:
        """uint8 ``3 x R x R`` to the served float channels."""
        images = convert_channels(pixels.float().div_(255.0)[None], self.channels)[0]
        return (images - self._mean) / self._std

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_epoch(self.epoch)

    def iter_epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of ``epoch`` from batch index ``start`` on."""
        served = len(self) * self.batch_size if self.train else self.num_samples
        indices = self.order(epoch)[start * self.batch_size:served]
        images = _Images(self, epoch, indices, start * self.batch_size)
        batches = DataLoader(images, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                             drop_last=False, persistent_workers=False, prefetch_factor=4 if self.workers else None)
        for index, (pixels, labels) in enumerate(batches, start=start):
            policy = self.augment
            if policy is None or not policy.mixes:
                yield pixels, labels
                continue
            state = np.random.SeedSequence([self.seed, epoch, index, self.rank]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(state))
            targets: Tensor = labels
            if policy.patch_mixing is not None:
                pixels, targets = patch_mix(pixels, labels, num_classes=self.num_classes, config=policy.patch_mixing,
                                            patch_size=self._patch_size, generator=generator)
            if policy.mixup > 0 or policy.cutmix > 0:
                pixels, targets = mix_batch(pixels, targets, num_classes=self.num_classes, mixup=policy.mixup,
                                            cutmix=policy.cutmix, generator=generator)
            yield pixels, targets
