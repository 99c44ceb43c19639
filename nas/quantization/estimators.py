"""Clipping ranges of a tensor for a quantiser: min-max, percentile and MSE, per tensor or per channel.

Each estimator maps a tensor to ``(low, high)``: 0-dim tensors per tensor, or vectors with one entry per index
of ``axis`` per channel. The quantiser turns a range into its scale and zero point
(:meth:`~nas.blocks.fakequant.Quantizer.set_range`): a symmetric format uses ``max(|low|, |high|)``, an affine one
both ends.

* :func:`minmax_range`: the extremes. Nothing is clipped; one outlier stretches the step for every value.
* :func:`percentile_range`: the ``percentile``-th and ``(100 - percentile)``-th percentiles; the tails beyond are
  clipped (saturated), which trades a large error on a few values for a finer step on all the others.
* :func:`mse_range`: the shrunk min-max range, out of :data:`MSE_GRID` candidates, whose quantised tensor is
  closest to the tensor in mean squared error (rounding and clipping errors weighed together, as in
  "Post-training 4-bit quantization of convolution networks for rapid-deployment", Banner et al.,
  arXiv:1810.05723, which solves it in closed form for a Laplace or Gaussian prior; here the grid is searched
  on the observed values, with no prior). The grid includes the min-max range itself, so on the tensor it is
  fitted to it is never worse than min-max.

Example:
    >>> import torch
    >>> low, high = minmax_range(torch.tensor([-1.0, 0.5, 3.0]), axis=None)
    >>> float(low), float(high)
    (-1.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nas.errors import ConfigError

__all__ = ["RangeQuantize", "MSE_GRID", "channels_first", "minmax_range", "percentile_range", "mse_range"]

RangeQuantize = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``quantize(values, low, high) -> dequantised values``: the format's fake quantisation of ``values`` (``C x M``
per channel, ``M`` per tensor) at the range ``(low, high)`` (``C``-vectors or scalars)."""

MSE_GRID = 100
"""Candidate clipping ranges of :func:`mse_range`: fractions ``1/MSE_GRID ... 1`` of the min-max range."""


def channels_first(values: Tensor, axis: int | None) -> Tensor:
    """``values`` as ``C x M`` (channel ``axis`` first, the rest flattened), or flat ``M`` for ``axis=None``."""
    if axis is None:
        return values.detach().reshape(-1)
    return values.detach().movedim(axis, 0).reshape(values.shape[axis], -1)


def minmax_range(values: Tensor, axis: int | None) -> tuple[Tensor, Tensor]:
    """The smallest and largest values (per channel of ``axis``)."""
    flat = channels_first(values, axis)
    return flat.amin(-1), flat.amax(-1)


def percentile_range(values: Tensor, axis: int | None, percentile: float) -> tuple[Tensor, Tensor]:
    """The ``(100 - percentile)``-th and ``percentile``-th percentiles (per channel of ``axis``).

    Args:
        percentile: in ``(50, 100]``; 100 is min-max.
    """
    if not 50.0 < percentile <= 100.0:
        raise ConfigError(f"must be in (50, 100], got {percentile}", path="percentile")
    flat = channels_first(values, axis)
    count = flat.shape[-1]
    high_rank = max(1, min(count, round(count * percentile / 100.0)))  # kthvalue has no size limit; quantile has
    low_rank = count + 1 - high_rank
    return flat.kthvalue(low_rank, dim=-1).values, flat.kthvalue(high_rank, dim=-1).values


def mse_range(values: Tensor, axis: int | None, quantize: RangeQuantize,
              grid: int = MSE_GRID) -> tuple[Tensor, Tensor]:
    """The range ``t * (low, high)`` of min-max, ``t`` in ``{1/grid, ..., 1}``, with the least quantisation MSE.

    Each channel picks its own ``t`` when ``axis`` is given.
    """
    if grid < 1:
        raise ConfigError(f"must be >= 1, got {grid}", path="grid")
    flat = channels_first(values, axis).float()
    low, high = minmax_range(flat, None if axis is None else 0)
    best_error = torch.full_like(low, torch.inf)
    best_low, best_high = low.clone(), high.clone()
    for step in range(grid, 0, -1):
        fraction = step / grid
        candidate_low, candidate_high = low * fraction, high * fraction
        error = (quantize(flat, candidate_low, candidate_high) - flat).pow(2).mean(-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_low = torch.where(better, candidate_low, best_low)
        best_high = torch.where(better, candidate_high, best_high)
    return best_low, best_high
