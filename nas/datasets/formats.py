"""Reading a dataset into memory: the bundled default, CIFAR-10/100 python batches, image folders, ``.npz``.

:func:`load_dataset` picks the format from the path (the formats and the split rule are described in
:mod:`nas.data`); each ``read_*`` function reads one format into a :class:`~nas.datasets.dataset.Dataset`.
CIFAR pickles go through :func:`safe_unpickle`, which loads numpy arrays and builtins only.
"""

from __future__ import annotations

import importlib.resources
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from nas.datasets.dataset import Dataset, DatasetError
from nas.datasets.streaming import STREAM_FROM_IMAGES, FolderDataset, read_folder_index, stream_folders
from nas.errors import ConfigError

__all__ = ["DEFAULT_DATASET", "BUNDLED", "load_dataset", "split_indices", "safe_unpickle", "read_npz",
           "read_cifar10", "read_cifar100", "read_image_folders"]

DEFAULT_DATASET = "animal-mnist"
BUNDLED = {"animal-mnist": "animal_mnist.npz"}  # name -> file in nas/datasets
_BUNDLED_SOURCE = "animal-mnist 0.4 (PyPI), MIT licence, bundled as nas/datasets/animal_mnist.npz (see NOTICE there)"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_PICKLE_GLOBALS = {  # what a pickled numpy array needs, under numpy 1 and 2 names; nothing else is loaded
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


def load_dataset(
    spec: str | Path | None = None, *, val_fraction: float = 0.2, split_seed: int = 0, image_size: int | None = None,
    stream: bool | None = None,
) -> Dataset | FolderDataset:
    """Read a dataset into memory, or index a large image folder to stream (formats: :mod:`nas.data`'s docstring).

    Args:
        spec: None or a bundled name (``"animal-mnist"``) for the bundled
            default; otherwise a path to a dataset directory or ``.npz`` file.
        val_fraction: share of each class held out for validation when the
            format has no split of its own.
        split_seed: seed of that hold-out.
        image_size: image folders only: resize every image to this square
            size. Without it all images must share one square size.
        stream: image folders only: True streams from disk (:mod:`nas.datasets.streaming`), False decodes
            into memory, None streams folders of ``STREAM_FROM_IMAGES`` images or more.

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
            return read_npz(stream, name=name, source=_BUNDLED_SOURCE, **split)
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
            return read_npz(stream, name=path.stem, source=str(path), **split)
    for inner in ("cifar-10-batches-py", "cifar-100-python"):
        if (path / inner).is_dir():
            path = path / inner
    if any(path.glob("data_batch_*")) or (path / "test_batch").exists():
        return read_cifar10(path)
    if (path / "train").is_file() or (path / "test").is_file():
        return read_cifar100(path)
    return read_image_folders(path, image_size=image_size, stream=stream, **split)


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


def read_npz(stream: IO[bytes], *, name: str, source: str, val_fraction: float, split_seed: int) -> Dataset:
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


def read_cifar10(path: Path) -> Dataset:
    files = sorted(path.glob("data_batch_*"))
    if not files:
        raise DatasetError(path, "no data_batch_* files; expected CIFAR-10 python batches data_batch_1..5, test_batch")
    parts = [_read_batch(file, "labels") for file in files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    val = _read_batch(path / "test_batch", "labels")
    return _assemble("cifar10", str(path), train, val, _read_names(path / "batches.meta", "label_names"))


def read_cifar100(path: Path) -> Dataset:
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


def read_image_folders(path: Path, *, image_size: int | None, val_fraction: float, split_seed: int,
                       stream: bool | None = None) -> Dataset | FolderDataset:
    val_dir = next((path / name for name in ("val", "test") if (path / name).is_dir()), None)
    layout = (path / "train").is_dir() and val_dir is not None
    train_dir = path / "train" if layout else path
    class_names = tuple(folder.name for folder in _class_folders(train_dir))
    files, labels = read_folder_index(train_dir, class_names, _IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(train_dir, f"no images in its class folders (expected files ending in "
                           f"{', '.join(sorted(_IMAGE_SUFFIXES))})")
    if stream or (stream is None and len(files) >= STREAM_FROM_IMAGES):
        return _stream_image_folders(path, train_dir, val_dir if layout else None, (files, labels), class_names,
                                     val_fraction=val_fraction, split_seed=split_seed)
    if layout:
        groups = [_open_images(path / "train", class_names, require_images=True),
                  _open_images(val_dir, class_names, require_images=False)]
        if not groups[1]:
            raise DatasetError(val_dir, "no validation images; expected class folders of images")
        train, val = _stack_images(groups, path, image_size)
        return _assemble(path.name, str(path), train, val, class_names)
    ((images, labels_array),) = _stack_images([_open_images(path, class_names, require_images=True)], path,
                                              image_size)
    train, val = _split(images, labels_array, val_fraction=val_fraction, split_seed=split_seed)
    return _assemble(path.name, str(path), train, val, class_names)


def _stream_image_folders(path: Path, train_dir: Path, val_dir: Path | None, indexed: tuple[list[str], list[int]],
                          class_names: tuple[str, ...], *, val_fraction: float, split_seed: int) -> FolderDataset:
    """Image folders indexed, not decoded: ``val_dir``'s images, or a stratified hold-out of the training ones."""
    files, labels = indexed
    empty = sorted(set(range(len(class_names))) - set(labels))
    if empty:
        raise DatasetError(train_dir / class_names[empty[0]], f"no images (expected files ending in "
                           f"{', '.join(sorted(_IMAGE_SUFFIXES))})")
    if val_dir is not None:
        for folder in _class_folders(val_dir):
            if folder.name not in class_names:
                raise DatasetError(folder, f"class '{folder.name}' is not among the training classes "
                                   f"{list(class_names)}")
        val_files, val_labels = read_folder_index(val_dir, class_names, _IMAGE_SUFFIXES)
        if not val_files:
            raise DatasetError(val_dir, "no validation images; expected class folders of images")
        return stream_folders(path.name, (train_dir, files, labels), (val_dir, val_files, val_labels), class_names)
    train_index, val_index = split_indices(np.asarray(labels), val_fraction=val_fraction, seed=split_seed)
    return stream_folders(path.name, (train_dir, [files[i] for i in train_index], [labels[i] for i in train_index]),
                          (train_dir, [files[i] for i in val_index], [labels[i] for i in val_index]), class_names)
