"""The 2-D Fourier transform pair the spectral mixers (SpectFormer, AFFNet) filter in.

By the convolution theorem, multiplying the spectrum of a map by a filter ``M``
and transforming back is a circular convolution of the map with the kernel
``irfft2(M)``: a depthwise convolution whose kernel is as large as the map, at
``O(HW log HW)`` instead of ``O((HW)^2)``. With ``norm="ortho"`` on both sides
the two ``1/sqrt(HW)`` factors make exactly that convolution. The real-input
transform keeps only ``W // 2 + 1`` columns; the inverse reads the
Hermitian-symmetric part of a filter's first (and, for even ``W``, last)
column, so any complex filter is still a convolution with a real kernel.
The transforms dispatch ``aten._fft_r2c`` and ``aten._fft_c2r``, op class
``fft`` (:mod:`nas.op_classes`).
"""

from __future__ import annotations

import torch

__all__ = ["spectrum", "from_spectrum", "spectrum_width"]


def spectrum_width(width: int) -> int:
    """Columns of the real-input spectrum of a map ``width`` wide."""
    return width // 2 + 1


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal 2-D spectrum of ``(..., height, width)``: ``(..., height, width // 2 + 1)`` complex."""
    return torch.fft.rfft2(x, norm="ortho")


def from_spectrum(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The real map of ``size`` whose orthonormal spectrum is ``z`` (the inverse of :func:`spectrum`)."""
    return torch.fft.irfft2(z, s=size, norm="ortho")
