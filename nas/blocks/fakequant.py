"""Fake quantisation: a block's layers compute in float but see their weights and inputs rounded to a format.

Precision per block (:class:`nas.arch.Precision`) becomes real here. :func:`apply_precision` turns every
``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` of a built block (depthwise included) into its quantised
twin, whose forward rounds the input and the weight to the block's formats (the FFN's own, where the
precision overrides the FFN: :func:`nas.blocks.registry.ffn_parts`) with a straight-through estimator,
so the same module trains with quantisation (QAT) and, calibrated, stands for the deployed model (PTQ).

What is rounded, and how (``fmt`` is a :class:`~nas.arch.NumberFormat`):

* ``int8``/``int4``: a uniform grid, through core torch's ``fake_quantize_per_tensor_affine`` /
  ``fake_quantize_per_channel_affine`` (rounding half to even, saturating at the grid's ends; their
  backward is the clipped straight-through estimator). Symmetric formats use the signed grid
  ``[-2**(b-1), 2**(b-1) - 1]`` with zero point 0 and scale ``amax / (2**(b-1) - 1)``; ``affine`` ones
  the unsigned grid ``[0, 2**b - 1]`` with a zero point, over a range widened to contain 0 so that 0
  stays exact (zero padding, ReLU outputs).
* ``fp8_e4m3``/``fp8_e5m2``: scaled so the range's magnitude ``amax`` meets the format's largest finite
  value (per tensor, or per channel), saturated there, and cast through ``torch.float8_e4m3fn`` /
  ``torch.float8_e5m2`` and back (rounding half to even). The saturation is explicit: e5m2 would
  overflow to infinity.
* ``fp16``/``bf16``: a cast round trip, saturated at the format's largest finite value (no scale).
* ``fp32``: nothing (a fp32 :class:`Quantizer` is the identity).

Gradients pass straight through inside the representable range and are zero outside it (where the
value saturated). Scales carry no gradient: they come from the tensor's range (min-max, or the weights'
statistics under OFQ's StatsQ) or from calibration, never learned, which is also what OFQ
(arXiv:2302.02210) found to oscillate less.

Why core torch and not torchao or Brevitas: torchao installs here, but its QAT (``quantize_`` with a
``QATConfig``) fake-quantises ``nn.Linear`` and ``nn.Embedding`` only and refuses other modules, so the
convolutions that most of the zoo is made of would need a layer of our own anyway; Brevitas brings a
heavy dependency (its own layer classes and configuration system) for what is, per tensor, one core
torch call or a cast.
Core torch's fake-quantisation ops have no meta kernel, so on ``meta`` (cost tracing) a quantiser
passes its input on unchanged: the shapes, which are all a trace reads, are the same.

Attention's ``q @ k^T`` and ``attn @ v`` products stay in float under fake quantisation (their inputs are
the projections' outputs, not layers' inputs); the latency model prices them at the activation format.
Layers other than the three classes (the stem, downsamplers and the head, which have no block
precision, and kinds that apply their own weights functionally, such as VanillaNet's activation
convolution or an MoE router) stay float.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import NumberFormat, Precision
from nas.blocks.registry import ffn_parts

__all__ = [
    "FLOAT_DTYPES",
    "integer_range",
    "float_max",
    "qparams_from_range",
    "along_axis",
    "fake_quantize",
    "Quantizer",
    "QuantizedLayer",
    "QuantizesItself",
    "QuantizedLinear",
    "QuantizedConv1d",
    "QuantizedConv2d",
    "quantize_layer",
    "quantized_layers",
    "apply_precision",
]

FLOAT_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16,
                                         "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
"""The torch dtype of each reduced float format (fake quantisation casts through it)."""

_MIN_SCALE = torch.finfo(torch.float32).eps  # as torch's observers: a constant tensor still gets a usable scale


def integer_range(fmt: NumberFormat) -> tuple[int, int]:
    """The integer grid of an int format: ``[-2**(b-1), 2**(b-1) - 1]``, or ``[0, 2**b - 1]`` if ``affine``."""
    if fmt.family != "int":
        raise ValueError(f"{fmt.name} is not an integer format")
    if fmt.affine:
        return 0, 2 ** fmt.bits - 1
    return -(2 ** (fmt.bits - 1)), 2 ** (fmt.bits - 1) - 1


def float_max(fmt: NumberFormat) -> float:
    """The largest finite value of a reduced float format (where fake quantisation saturates)."""
    return float(torch.finfo(FLOAT_DTYPES[fmt.name]).max)


def _is_scaled(fmt: NumberFormat) -> bool:
    """Whether the format needs a scale (integers and fp8) rather than representing values as they are."""
    return fmt.family == "int" or fmt.name.startswith("fp8")


def qparams_from_range(fmt: NumberFormat, low: torch.Tensor,
                       high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` that cover ``[low, high]`` (scalars, or one entry per channel) in ``fmt``.

    ``scale`` is float32, at least float32's epsilon; ``zero_point`` is int32 (0 but for affine integers).
    Formats without a scale (fp16, bf16, fp32) get scale 1.
    """
    low, high = low.detach().float(), high.detach().float()
    zero_point = torch.zeros_like(low, dtype=torch.int32)
    if fmt.family == "int" and fmt.affine:
        qmin, qmax = integer_range(fmt)
        low, high = low.clamp(max=0.0), high.clamp(min=0.0)
        scale = ((high - low) / (qmax - qmin)).clamp(min=_MIN_SCALE)
        zero_point = (qmin - torch.round(low / scale)).clamp(qmin, qmax).to(torch.int32)
        return scale, zero_point
    amax = torch.maximum(low.abs(), high.abs())
    if fmt.family == "int":
        return (amax / integer_range(fmt)[1]).clamp(min=_MIN_SCALE), zero_point
    if _is_scaled(fmt):
        return (amax / float_max(fmt)).clamp(min=_MIN_SCALE), zero_point
    return torch.ones_like(low), zero_point


def along_axis(value: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``value`` (a scalar, or one entry per channel of ``x`` along ``axis``) shaped to broadcast against ``x``."""
    if axis is None or value.ndim == 0:
        return value
    shape = [1] * x.ndim
    shape[axis] = -1
    return value.reshape(shape)


def fake_quantize(x: torch.Tensor, fmt: NumberFormat, scale: torch.Tensor | None = None,
                  zero_point: torch.Tensor | None = None, axis: int | None = None) -> torch.Tensor:
    """``x`` rounded to ``fmt`` and back, with a straight-through gradient (see the module docstring).

    Args:
        x: any tensor.
        fmt: the format; fp32 returns ``x`` itself.
        scale: the step of an integer grid, or the divisor that brings fp8 values into range; a scalar, or
            one entry per channel along ``axis`` when ``fmt.per_channel``. Ignored by fp16/bf16/fp32.
        zero_point: integers only: the grid point that stands for 0 (default 0).
        axis: the channel axis of ``x`` for per-channel scales (negative counts from the end).

    Example:
        >>> fake_quantize(torch.tensor([0.2, 0.3, 99.0]), NumberFormat("int8"), torch.tensor(0.5))
        tensor([ 0.0000,  0.5000, 63.5000])
    """
    if fmt.is_float32 or x.is_meta:  # meta: no values to round, and torch's ops have no meta kernel
        return x
    axis = None if axis is None else axis % x.ndim
    work = x.float()
    if fmt.family == "int":
        qmin, qmax = integer_range(fmt)
        step = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
        zero = (torch.zeros_like(step, dtype=torch.int32) if zero_point is None
                else torch.as_tensor(zero_point, device=x.device).to(torch.int32))
        if axis is not None and step.ndim == 1:
            out = torch.fake_quantize_per_channel_affine(work, step, zero, axis, qmin, qmax)
        else:
            out = torch.fake_quantize_per_tensor_affine(work, step.reshape(()), zero.reshape(()), qmin, qmax)
        return out.to(x.dtype)
    limit = float_max(fmt)
    step = (torch.as_tensor(scale, dtype=torch.float32, device=x.device) if _is_scaled(fmt) and scale is not None
            else torch.ones((), device=x.device))
    step = along_axis(step, work, axis)
    inside = (work / step).clamp(-limit, limit)  # clamp's gradient: 1 inside the range, 0 where it saturates
    rounded = inside + (inside.to(FLOAT_DTYPES[fmt.name]).float() - inside).detach()
    return (rounded * step).to(x.dtype)


class Quantizer(nn.Module):
    """One tensor's fake quantiser: its format and, once calibrated, its fixed range.

    Before calibration the range comes from each tensor it sees (dynamic min-max: always for weights,
    which change every step, and for activations during QAT). :meth:`set_range` fixes the range (PTQ
    observers attach as forward pre-hooks, whose input is the tensor to calibrate, then call it).

    A checkpoint without this quantiser's entries (one saved from a float model) leaves it as it is,
    uncalibrated, instead of failing: float weights load into a quantised model with a plain, strict
    ``load_state_dict``, and a quantiser's state is the only thing allowed to be missing.

    Args:
        fmt: the format.
        channels: the size of the channel axis (entries of a per-channel scale; 1 per tensor).
        axis: where the channels lie in the tensors it sees (0 for weights, 1 for NCHW inputs, -1 for
            channel-last ones); used when ``fmt.per_channel``.
        device: where its buffers live.

    Attributes:
        scale, zero_point: the calibrated range's (persistent buffers; scalars, or one per channel).
        calibrated: whether :meth:`set_range` fixed them (a persistent bool buffer).
        is_calibrated: the same as a Python bool, which ``forward`` branches on: a branch on a buffer's
            value is data-dependent, and ``torch.export`` refuses to trace one.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor
    calibrated: torch.Tensor

    def __init__(self, fmt: NumberFormat, *, channels: int = 1, axis: int = 0, device: Any = None):
        super().__init__()
        self.fmt = fmt
        self.channels = channels
        self.axis = axis
        shape = (channels,) if fmt.per_channel else ()
        self.register_buffer("scale", torch.ones(shape, device=device))
        self.register_buffer("zero_point", torch.zeros(shape, dtype=torch.int32, device=device))
        self.register_buffer("calibrated", torch.tensor(False, device=device))
        self.is_calibrated = False

    @property
    def channel_axis(self) -> int | None:
        """The axis a per-channel scale runs along; None per tensor."""
        return self.axis if self.fmt.per_channel else None

    def observed_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)`` of ``x``: scalars per tensor, or one per channel along :attr:`channel_axis`."""
        values = x.detach()
        if self.channel_axis is None:
            return values.amin(), values.amax()
        rows = values.movedim(self.channel_axis, 0).flatten(1)
        return rows.amin(1), rows.amax(1)

    def qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` used for ``x``: the calibrated ones, else those of ``x``'s own range."""
        if self.is_calibrated:
            return self.scale, self.zero_point
        return qparams_from_range(self.fmt, *self.observed_range(x))

    def set_range(self, low: torch.Tensor | float, high: torch.Tensor | float) -> None:
        """Fix the range to ``[low, high]`` (scalars, or one per channel for a per-channel format)."""
        low_t = torch.as_tensor(low, dtype=torch.float32, device=self.scale.device)
        high_t = torch.as_tensor(high, dtype=torch.float32, device=self.scale.device)
        scale, zero_point = qparams_from_range(self.fmt, low_t, high_t)
        with torch.no_grad():
            self.scale.copy_(scale.expand_as(self.scale))
            self.zero_point.copy_(zero_point.expand_as(self.zero_point))
            self.calibrated.fill_(True)
        self.is_calibrated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt.is_float32 or x.is_meta:
            return x
        scale, zero_point = self.qparams(x)
        return fake_quantize(x, self.fmt, scale, zero_point, self.channel_axis)

    def extra_repr(self) -> str:
        qualifiers = (":channel" if self.fmt.per_channel else "") + (":affine" if self.fmt.affine else "")
        return f"{self.fmt.name}{qualifiers}"

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        if not any(key.startswith(prefix) for key in state_dict):
            return  # a float checkpoint: stay uncalibrated (see the class docstring)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.is_calibrated = bool(self.calibrated)


class QuantizedLayer(nn.Module):
    """What every quantised layer has beside its float class: the quantisers of its input and its weight.

    A layer becomes quantised by changing its class to the quantised subclass (:func:`quantize_layer`)
    rather than by wrapping it: its parameters keep their names (float checkpoints and the supernet's
    shared weights load as they are), ``isinstance(layer, nn.Linear)`` still holds for code that looks
    for linear layers (sigmaReparam, initialisation, pricing), and no hook hides the rounding from a
    reader of ``forward``.
    """

    input_quantizer: Quantizer
    weight_quantizer: Quantizer
    weight_is_latent: bool = True
    """Whether :meth:`deployed_weight` is the trained parameter itself (OFQ's annealing freezes such weights)."""

    def deployed_weight(self) -> torch.Tensor:
        """The float weight the deployed layer multiplies by, which ``weight_quantizer`` rounds: ``weight``, but for
        a layer that derives it from its parameters (QKR's merged query-key product, :mod:`nas.blocks.qkr`)."""
        return self.weight  # type: ignore[return-value]


class QuantizesItself(nn.Module):
    """A float layer whose quantised form is its own rather than one of the three classes' twins.

    :func:`apply_precision` calls :meth:`quantize_to` on it instead of :func:`quantize_layer`; afterwards it must
    be a :class:`QuantizedLayer`.
    """

    def quantize_to(self, weights: NumberFormat, activations: NumberFormat) -> None:
        raise NotImplementedError


class QuantizedLinear(nn.Linear, QuantizedLayer):
    """``nn.Linear`` computing on its quantised input and weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantizedConv1d(nn.Conv1d, QuantizedLayer):
    """``nn.Conv1d`` computing on its quantised input and weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


class QuantizedConv2d(nn.Conv2d, QuantizedLayer):
    """``nn.Conv2d`` (depthwise included) computing on its quantised input and weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)


_QUANTIZED: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: QuantizedLinear, nn.Conv1d: QuantizedConv1d, nn.Conv2d: QuantizedConv2d}
_FLOAT = {quantized: plain for plain, quantized in _QUANTIZED.items()}
_INPUT_AXIS = {nn.Linear: -1, nn.Conv1d: 1, nn.Conv2d: 1}  # where a layer's input keeps its channels


def quantize_layer(layer: nn.Module, weights: NumberFormat, activations: NumberFormat) -> None:
    """Make ``layer`` (an ``nn.Linear``/``Conv1d``/``Conv2d``, or one quantised already) quantise its weight
    to ``weights`` and its input to ``activations``, in place; new quantisers start uncalibrated.

    Subclasses of the three (with a forward of their own) are refused rather than silently replaced.
    """
    base = _FLOAT.get(type(layer), type(layer))
    if base not in _QUANTIZED:
        raise TypeError(f"cannot quantise a {type(layer).__name__}: only nn.Linear, nn.Conv1d and nn.Conv2d")
    weight = layer.weight
    in_channels = weight.shape[1] * (layer.groups if base is not nn.Linear else 1)  # type: ignore[operator]
    layer.__class__ = _QUANTIZED[base]
    layer.add_module("input_quantizer",
                     Quantizer(activations, channels=in_channels, axis=_INPUT_AXIS[base], device=weight.device))
    layer.add_module("weight_quantizer", Quantizer(weights, channels=weight.shape[0], axis=0, device=weight.device))


def quantized_layers(module: nn.Module) -> Iterator[tuple[str, QuantizedLayer]]:
    """``(dotted name, layer)`` for each quantised layer of ``module``, in module order."""
    for name, sub in module.named_modules():
        if isinstance(sub, QuantizedLayer):
            yield name, sub


def apply_precision(block: nn.Module, precision: Precision) -> nn.Module:
    """Quantise a built block's layers to ``precision``, in place; returns the block.

    The block's formats cover every ``nn.Linear``/``Conv1d``/``Conv2d`` in it; the FFN's formats
    (``precision.formats("ffn")``) cover those inside its FFN (:func:`~nas.blocks.registry.ffn_parts`). A
    layer whose weights and activations are both fp32 stays a plain float layer, so a float32 block is
    left exactly as built.
    """
    if precision.is_default:
        return block
    formats = {"block": precision.formats("block"), "ffn": precision.formats("ffn")}
    ffn = [name for name, _ in ffn_parts(block)]
    for name, layer in list(block.named_modules()):
        if type(layer) not in _QUANTIZED and not isinstance(layer, QuantizesItself):
            continue
        part = "ffn" if any(name == outer or name.startswith(outer + ".") for outer in ffn) else "block"
        weights, activations = formats[part]
        if weights.is_float32 and activations.is_float32:
            continue
        if isinstance(layer, QuantizesItself):
            layer.quantize_to(weights, activations)
        else:
            quantize_layer(layer, weights, activations)
    return block
