"""OFQ's remedies for weight oscillation in quantisation-aware training, as options of QAT.

"Oscillation-free Quantization for Low-bit Vision Transformers", Liu, Liu and Cheng, ICML 2023,
https://arxiv.org/abs/2302.02210. Under QAT a latent weight near a rounding boundary flips between two grid
points step after step; the paper traces this to learned scales and to the interplay of query and key
weights, and proposes three remedies. Two are here, for integer weight formats (the only ones with a
uniform grid to oscillate on):

* **StatsQ** (:class:`QatOptions.statsq`): the weight range comes from the weights' statistics,
  ``+-2 * mean(|w|)`` per output channel (per tensor for a per-tensor format), instead of min-max. The
  paper's quantiser puts that range on a half-integer grid; here it goes on the format's own grid
  (symmetric or affine, as the precision says), which integer hardware runs.
* **Confidence-guided annealing** (:class:`QatOptions.cga`): over the last ``cga`` fraction of training the
  weight grid is fixed (calibrated from the weights as they are then), and every weight whose latent value
  lies farther than ``cga_boundary`` (in grid steps) from a rounding boundary - a weight confident of its
  grid point - is frozen at that point: its quantised value no longer changes and it gets no gradient. The
  weights that still sit on a boundary keep training, and freeze as soon as they leave it.

The third, query-key reparameterisation (QKR), is a field of the attention config rather than a QAT option
(it changes what is deployed): :mod:`nas.blocks.qkr`. Its merged query-key matrix is quantised by the merged
layer's weight quantiser, which StatsQ covers like any other; annealing does not, since the merged values are
products of ``q`` and ``k`` rows, not trained weights that could freeze (or be written back for export).

:func:`configure_qat` applies the options to a built model (before training, and again on resume, so the
checkpoint's state loads); :func:`finish_qat` makes the result plain for export: every weight range fixed as
it was trained, frozen values written into the weights, plain :class:`~nas.blocks.fakequant.Quantizer`
modules again, so ``build(arch)`` loads the exported state as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.blocks.common import TrainingProgress
from nas.blocks.fakequant import Quantizer, along_axis, quantized_layers

__all__ = ["QatOptions", "StatisticalQuantizer", "AnnealedQuantizer", "configure_qat", "finish_qat"]

_STATSQ_SPREAD = 2.0  # the range is +-2 * mean(|w|) (OFQ's StatsQ)


@dataclass(frozen=True)
class QatOptions:
    """OFQ's remedies for a QAT run (see the module docstring); the defaults switch them off.

    Attributes:
        statsq: weight ranges from the weights' statistics instead of min-max.
        cga: the fraction of training, at its end, under confidence-guided annealing (0: none).
        cga_boundary: how close to a rounding boundary (in grid steps, in ``(0, 0.5)``) a latent weight keeps
            training under annealing; farther ones freeze.
    """

    statsq: bool = False
    cga: float = 0.0
    cga_boundary: float = 0.005

    @property
    def enabled(self) -> bool:
        return self.statsq or self.cga > 0


def _statistical_range(quantizer: Quantizer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``+-2 * mean(|x|)``, per tensor or per channel along the quantiser's channel axis."""
    magnitude = x.detach().abs()
    if quantizer.channel_axis is None:
        spread = _STATSQ_SPREAD * magnitude.mean()
    else:
        spread = _STATSQ_SPREAD * magnitude.movedim(quantizer.channel_axis, 0).flatten(1).mean(1)
    return -spread, spread


def _rebuilt(quantizer: Quantizer, cls: type[Quantizer] = Quantizer) -> Quantizer:
    """A quantiser of class ``cls`` with ``quantizer``'s format, shape and range."""
    out = cls(quantizer.fmt, channels=quantizer.channels, axis=quantizer.axis, device=quantizer.scale.device)
    with torch.no_grad():
        for name in ("scale", "zero_point", "calibrated"):
            getattr(out, name).copy_(getattr(quantizer, name))
    out.is_calibrated = quantizer.is_calibrated
    return out


class StatisticalQuantizer(Quantizer):
    """A weight quantiser whose uncalibrated range is ``+-2 * mean(|w|)`` (OFQ's StatsQ)."""

    def observed_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _statistical_range(self, x)


class AnnealedQuantizer(Quantizer, TrainingProgress):
    """A weight quantiser under confidence-guided annealing (see the module docstring).

    The trainer tells it the progress of training (:class:`~nas.blocks.common.TrainingProgress`). Before
    ``start`` (a fraction of training) it quantises as a plain quantiser (or a statistical one, with
    ``statistical``). From then on, at its first training forward it fixes its range from the weight it
    sees, and at each training step (a training-mode forward with gradients) freezes the weights farther
    than ``boundary`` grid steps from a rounding boundary at their grid points.

    Attributes:
        frozen: which weights are frozen (a persistent bool buffer of the weight's shape).
        frozen_value: their quantised values (a persistent buffer of the weight's shape).
    """

    frozen: torch.Tensor
    frozen_value: torch.Tensor

    def __init__(self, fmt: Any, *, channels: int, axis: int, weight_shape: torch.Size, statistical: bool,
                 start: float, boundary: float, device: Any = None):
        super().__init__(fmt, channels=channels, axis=axis, device=device)
        self.statistical = statistical
        self.start = start
        self.boundary = boundary
        self.annealing = False
        self.register_buffer("frozen", torch.zeros(weight_shape, dtype=torch.bool, device=device))
        self.register_buffer("frozen_value", torch.zeros(weight_shape, dtype=torch.float32, device=device))

    def observed_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _statistical_range(self, x) if self.statistical else super().observed_range(x)

    def set_progress(self, progress: float) -> None:
        self.annealing = progress > self.start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_meta:
            return x
        stepping = self.training and self.annealing and torch.is_grad_enabled()  # not BatchNorm recalibration
        if stepping and not self.is_calibrated:
            self.set_range(*self.observed_range(x))  # the grid stays put while weights freeze on it
        quantised = super().forward(x)
        if stepping:
            self._freeze_confident(x, quantised)
        return torch.where(self.frozen, self.frozen_value.to(quantised.dtype), quantised)

    @torch.no_grad()
    def _freeze_confident(self, weight: torch.Tensor, quantised: torch.Tensor) -> None:
        steps = (weight.float() / along_axis(self.scale, weight, self.channel_axis)
                 + along_axis(self.zero_point.float(), weight, self.channel_axis))
        confident = ((steps - steps.floor()) - 0.5).abs() > self.boundary
        newly = confident & ~self.frozen
        self.frozen_value.copy_(torch.where(newly, quantised.float(), self.frozen_value))
        self.frozen.logical_or_(newly)


def configure_qat(model: nn.Module, options: QatOptions) -> int:
    """Give the integer weight quantisers of ``model`` the OFQ options, in place; the number of layers changed.

    Call it on a freshly built model (before training, or before loading a checkpoint of such a run).
    """
    if not options.enabled:
        return 0
    changed = 0
    for _, layer in quantized_layers(model):
        current = layer.weight_quantizer
        if current.fmt.family != "int":
            continue
        if options.cga > 0 and layer.weight_is_latent:
            layer.weight_quantizer = AnnealedQuantizer(
                current.fmt, channels=current.channels, axis=current.axis, weight_shape=layer.weight.shape,
                statistical=options.statsq, start=1.0 - options.cga, boundary=options.cga_boundary,
                device=current.scale.device)
        elif options.statsq:
            layer.weight_quantizer = _rebuilt(current, StatisticalQuantizer)
        else:
            continue  # a merged QKR product under annealing alone keeps its min-max range
        changed += 1
    return changed


@torch.no_grad()
def finish_qat(model: nn.Module) -> None:
    """Make a QAT-trained ``model`` plain for export, in place, computing the same outputs in eval mode.

    Every weight quantiser's range is fixed to the one it quantises its weight with now (min-max, StatsQ, or
    annealing's); annealed quantisers write their frozen values into the weight; all become plain
    :class:`~nas.blocks.fakequant.Quantizer` modules.
    """
    for _, layer in quantized_layers(model):
        quantizer = layer.weight_quantizer
        if not quantizer.is_calibrated:
            quantizer.set_range(*quantizer.observed_range(layer.deployed_weight()))
        if isinstance(quantizer, AnnealedQuantizer):
            layer.weight.copy_(torch.where(quantizer.frozen, quantizer.frozen_value.to(layer.weight.dtype),
                                           layer.weight))
        layer.weight_quantizer = _rebuilt(quantizer)
