"""Reproduce ``animal_mnist.npz`` from the ``animal-mnist`` 0.4 wheel on PyPI.

The bundled default dataset of :mod:`nas.data` is the Animal-MNIST images
(10 classes of animal silhouettes, 28x28 grey-scale, MIT licence; see
``NOTICE`` beside this file). The wheel stores them as two gzipped pickles of
numpy arrays; this script converts them once into a compressed ``.npz`` with
arrays ``x`` (``N x 28 x 28`` uint8), ``y`` (``N`` uint8) and ``class_names``.
Nothing here runs when ``nas`` is used; it only documents how the shipped file
was made, so that the file can be reviewed and rebuilt byte for byte:

    pip download --no-deps animal-mnist==0.4 -d /tmp/wheel
    python -m nas.datasets.convert_animal_mnist /tmp/wheel/animal_mnist-0.4-py3-none-any.whl

Conversion rules:

* the pickles are read with an unpickler that accepts numpy arrays only;
* exact duplicate images (same bytes) are dropped, the first occurrence kept,
  so that no image can land in both the training and the validation split
  (the wheel holds 284 such copies, 188 of them birds; no copy has a
  conflicting label);
* the zip entries carry a fixed timestamp, so the output is reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CLASS_NAMES", "WHEEL_SHA256", "convert", "main"]

WHEEL_SHA256 = "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce"  # animal_mnist-0.4-py3-none-any.whl
# label order, from the wheel's description (METADATA) and checked by eye on samples of each label
CLASS_NAMES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
_MEMBERS = (
    "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
    "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
)
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class _ArrayUnpickler(pickle.Unpickler):
    """Loads pickled numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        target = _NUMPY_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(*target)


def _load_array(wheel: zipfile.ZipFile, member: str) -> np.ndarray:
    with wheel.open(member) as raw, gzip.open(raw) as stream:
        array = _ArrayUnpickler(stream).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{member}: expected a numpy array, got {type(array).__name__}")
    return array


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def convert(wheel_path: Path, out_path: Path, *, check_hash: bool = True) -> dict[str, int]:
    """Convert the wheel's arrays into ``out_path``; returns the image count per class name."""
    digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    if check_hash and digest != WHEEL_SHA256:
        raise ValueError(f"{wheel_path}: sha256 {digest} is not the animal-mnist 0.4 wheel's {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel_path) as wheel:
        images, labels = (_load_array(wheel, member) for member in _MEMBERS)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"images: expected N x 28 x 28 uint8, got {images.shape} {images.dtype}")
    if labels.shape != images.shape[:1] or labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"labels: expected {images.shape[0]} values in [0, {len(CLASS_NAMES)}), got {labels.shape}")
    _, first = np.unique(images.reshape(len(images), -1), axis=0, return_index=True)
    keep = np.sort(first)
    images, labels = images[keep], labels[keep].astype(np.uint8)
    _write_npz(out_path, {"x": images, "y": labels, "class_names": np.array(CLASS_NAMES)})
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return dict(zip(CLASS_NAMES, counts.tolist(), strict=True))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``convert_animal_mnist WHEEL [--out PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="animal_mnist-0.4-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("animal_mnist.npz"))
    parser.add_argument("--no-check-hash", action="store_true", help="accept a wheel other than the pinned one")
    args = parser.parse_args(argv)
    counts = convert(args.wheel, args.out, check_hash=not args.no_check_hash)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    sys.stdout.write(f"{args.out}: {sum(counts.values())} images, {counts}\nsha256 {digest}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
