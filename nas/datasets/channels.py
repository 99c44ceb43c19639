"""Serving images with another channel count than they are stored with: grey to RGB by repetition, RGB to
grey by ITU-R BT.601 luma weights; and the normalisation statistics to match. Shared by the in-memory and
the streamed loaders."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LUMA", "convert_channels", "convert_stats"]

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for RGB -> grey


def convert_channels(images: Tensor, channels: int) -> Tensor:
    """``B x C x H x W`` float images with ``channels`` channels (1 or 3)."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    weights = torch.tensor(LUMA, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def convert_stats(mean: tuple[float, ...], std: tuple[float, ...], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std for images converted to ``channels``."""
    if len(mean) == channels:
        return list(mean), list(std)
    if channels == 3:
        return list(mean) * 3, list(std) * 3
    grey_mean = sum(w * m for w, m in zip(LUMA, mean, strict=True))
    grey_std = sum(w * s for w, s in zip(LUMA, std, strict=True))  # an upper bound; close for correlated channels
    return [grey_mean], [grey_std]
