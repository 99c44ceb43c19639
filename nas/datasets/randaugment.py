"""RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced search
space", arXiv:1909.13719): ``ops`` image operations drawn uniformly per image, each at one global
``magnitude`` in ``[0, 30]`` (the paper's scale; 9 to 15 are its ImageNet settings), with Pillow.

The operation list and the magnitude-to-parameter ranges follow the paper's Table (identity, auto-contrast,
equalize, rotate up to 30 degrees, solarize, colour, posterize down to 4 bits, contrast, brightness,
sharpness, shear up to 0.3, translate up to 45% ... scaled here to 1/3 of the image side's 30%). Every draw
comes from the caller's generator, so an image's augmentation is fixed by its seed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["MAX_MAGNITUDE", "OPERATIONS", "rand_augment"]

MAX_MAGNITUDE = 30


def _signed(value: float, generator: torch.Generator) -> float:
    return value if bool(torch.rand(1, generator=generator) < 0.5) else -value


def _affine(image: Any, matrix: tuple[float, ...]) -> Any:
    from PIL import Image

    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR)


@functools.cache
def _operations() -> dict[str, Callable[[Any, float, torch.Generator], Any]]:
    """Name -> ``op(image, strength in [0, 1], generator)``."""
    from PIL import ImageEnhance, ImageOps

    def enhance(kind: Any) -> Callable[[Any, float, torch.Generator], Any]:
        return lambda image, strength, g: kind(image).enhance(1.0 + _signed(0.9 * strength, g))

    return {
        "identity": lambda image, strength, g: image,
        "auto_contrast": lambda image, strength, g: ImageOps.autocontrast(image),
        "equalize": lambda image, strength, g: ImageOps.equalize(image),
        "rotate": lambda image, strength, g: image.rotate(_signed(30.0 * strength, g)),
        "solarize": lambda image, strength, g: ImageOps.solarize(image, round(256 - 256 * strength)),
        "posterize": lambda image, strength, g: ImageOps.posterize(image, max(1, round(8 - 4 * strength))),
        "color": enhance(ImageEnhance.Color),
        "contrast": enhance(ImageEnhance.Contrast),
        "brightness": enhance(ImageEnhance.Brightness),
        "sharpness": enhance(ImageEnhance.Sharpness),
        "shear_x": lambda image, strength, g: _affine(image, (1, _signed(0.3 * strength, g), 0, 0, 1, 0)),
        "shear_y": lambda image, strength, g: _affine(image, (1, 0, 0, _signed(0.3 * strength, g), 1, 0)),
        "translate_x": lambda image, strength, g: _affine(
            image, (1, 0, _signed(0.3 * strength * image.size[0], g), 0, 1, 0)),
        "translate_y": lambda image, strength, g: _affine(
            image, (1, 0, 0, 0, 1, _signed(0.3 * strength * image.size[1], g))),
    }


OPERATIONS = tuple(_operations())  # the names, in draw order


def rand_augment(image: Any, *, ops: int, magnitude: int, generator: torch.Generator) -> Any:
    """``image`` (a PIL image) after ``ops`` operations drawn with replacement, each at ``magnitude``."""
    table = _operations()
    strength = magnitude / MAX_MAGNITUDE
    for index in torch.randint(0, len(OPERATIONS), (ops,), generator=generator).tolist():
        image = table[OPERATIONS[index]](image, strength, generator)
    return image
