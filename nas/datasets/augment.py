"""Batch augmentation written with torch ops (no torchvision): random crop, flip, Patch Mixing, mixup, CutMix.

Patch Mixing: Lee et al., "Hardwiring ViT Patch Selectivity into CNNs using
Patch Mixing", arXiv:2306.17848 - a random share of a grid of patches is taken
from another image of the batch and the targets are interpolated by that
share. mixup (Zhang et al., arXiv:1710.09412) blends whole images, CutMix (Yun et al.,
arXiv:1905.04899) pastes one box, both with a partner from the batch and targets mixed by the
same share. :class:`nas.data.Loader` applies these per batch, drawing from a
generator seeded by ``(seed, epoch, batch index, rank)``; they are re-exported
by :mod:`nas.data`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nas.errors import ConfigError

__all__ = ["PatchMixing", "Augment", "random_crop", "random_flip", "patch_mix", "mix_batch"]


@dataclass(frozen=True)
class PatchMixing:
    """Patch Mixing (arXiv:2306.17848): paste a random share of grid patches from a partner image.

    The partner is another image of the batch (a random permutation); the
    target becomes ``(1 - share) * own + share * partner`` as class
    probabilities. The defaults are ours, chosen for small images.

    Attributes:
        probability: chance that an image is mixed at all.
        max_share: the share of patches taken is uniform in ``[0, max_share]``.
        patch_size: patch side in pixels at the loader's resolution; must divide
            it. None: an 8 x 8 grid (``resolution // 8``).
    """

    probability: float = 1.0
    max_share: float = 0.5
    patch_size: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"must lie in [0, 1], got {self.probability}", path="patch_mixing.probability")
        if not 0.0 <= self.max_share <= 1.0:
            raise ConfigError(f"must lie in [0, 1], got {self.max_share}", path="patch_mixing.max_share")
        if self.patch_size is not None and self.patch_size < 1:
            raise ConfigError(f"must be >= 1, got {self.patch_size}", path="patch_mixing.patch_size")


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, applied per batch in this order: crop, flip, normalise, Patch Mixing.

    Attributes:
        crop_padding: zero padding of the random crop in pixels at the loader's
            resolution; None: ``resolution // 8`` (4 at 32 px, the CIFAR recipe); 0: no crop.
        flip: random horizontal flip with probability 1/2.
        patch_mixing: Patch Mixing settings, or None for none.
        mixup, cutmix: the Beta(alpha, alpha) parameter of each (0: off); with both on, each batch takes
            one of them with equal chance (timm's rule), after Patch Mixing.
        randaugment: ``(ops, magnitude)`` of RandAugment (:mod:`nas.datasets.randaugment`) per image before
            the crop, or None.
    """

    crop_padding: int | None = None
    flip: bool = True
    patch_mixing: PatchMixing | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    randaugment: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ConfigError(f"must be >= 0, got {self.crop_padding}", path="augment.crop_padding")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be >= 0 (0: off), got {getattr(self, name)}", path=f"augment.{name}")
        if self.randaugment is not None and not (self.randaugment[0] >= 1 and 0 <= self.randaugment[1] <= 30):
            raise ConfigError(f"needs ops >= 1 and a magnitude in [0, 30], got {self.randaugment}",
                              path="augment.randaugment")

    @property
    def mixes(self) -> bool:
        """Whether targets become class probabilities (Patch Mixing, mixup or CutMix)."""
        return self.patch_mixing is not None or self.mixup > 0 or self.cutmix > 0


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """A random ``H x W`` window of each zero-padded image; ``B x C x H x W`` in and out, any dtype."""
    if padding == 0:
        return images
    batch, channels, height, width = images.shape
    padded_width = width + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).reshape(batch, channels, -1)
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    rows = top[:, None] + torch.arange(height)
    cols = left[:, None] + torch.arange(width)
    flat = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, height * width)
    return padded.gather(2, flat.expand(batch, channels, height * width)).view(batch, channels, height, width)


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Each image mirrored left-right with probability 1/2; ``B x C x H x W``."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def patch_mix(
    images: Tensor, labels: Tensor, *, num_classes: int, config: PatchMixing, patch_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Patch Mixing on a batch.

    Args:
        images: ``B x C x H x W``; ``patch_size`` divides ``H`` and ``W``.
        labels: ``B`` class indices.
        num_classes: width of the returned targets.
        config: probability and share of mixing.
        patch_size: the grid's patch side in pixels.
        generator: the source of every random draw.

    Returns:
        The mixed images and ``B x num_classes`` float target probabilities.
    """
    batch, _, height, width = images.shape
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = grid_h * grid_w
    partner = torch.randperm(batch, generator=generator)
    share = torch.rand(batch, generator=generator) * config.max_share
    mixed = torch.rand(batch, generator=generator) < config.probability
    count = torch.where(mixed, torch.round(share * patches), torch.zeros_like(share)).long()
    rank = torch.rand(batch, patches, generator=generator).argsort(dim=1).argsort(dim=1)
    grid = (rank < count[:, None]).view(batch, 1, grid_h, grid_w)
    mask = grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)
    taken = (count.float() / patches)[:, None]
    one_hot = F.one_hot(labels, num_classes).float()
    targets = (1.0 - taken) * one_hot + taken * one_hot[partner]
    return torch.where(mask, images[partner], images), targets


def mix_batch(images: Tensor, targets: Tensor, *, num_classes: int, mixup: float, cutmix: float,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """mixup or CutMix on a batch (see :class:`Augment`); ``targets`` are class indices or probabilities.

    The share ``lam`` of each image's own content is drawn from Beta(alpha, alpha) once per batch; CutMix's
    box is clipped at the border and ``lam`` then set to the share the box really leaves.
    """
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    partner = torch.randperm(images.shape[0], generator=generator)
    if use_cutmix:
        height, width = images.shape[-2:]
        cut = (1.0 - lam) ** 0.5
        centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(centre_y - round(height * cut / 2), 0), min(centre_y + round(height * cut / 2), height)
        left, right = max(centre_x - round(width * cut / 2), 0), min(centre_x + round(width * cut / 2), width)
        images = images.clone()
        images[..., top:bottom, left:right] = images[partner][..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
        images = lam * images + (1.0 - lam) * images[partner]
    probabilities = targets.float() if targets.dim() == 2 else F.one_hot(targets, num_classes).float()
    return images, lam * probabilities + (1.0 - lam) * probabilities[partner]
