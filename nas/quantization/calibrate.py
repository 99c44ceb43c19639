"""Post-training calibration: fix every quantiser's range of a model built at a precision, from a float model.

:func:`quantize_model` builds the Arch at the precision, loads the float weights (the quantised layers keep the
float parameter names), then:

1. **weights**: each weight quantiser's range from its own weight (:func:`~nas.quantization.estimators.minmax_range`,
   or :func:`~nas.quantization.estimators.mse_range` with ``weights="mse"``), per output channel where its format
   says ``channel``;
2. **activations**: an :class:`Observer` hooks each activation quantiser (a forward pre-hook: its input is the
   tensor it will quantise) while ``batches`` calibration batches run through the model with every quantiser
   passed through (:func:`float_mode`), so each range is fitted to the float network's activations, as they will
   reach the layer once the layers before it stay close to float; then ``set_range`` with the ``method``'s range;
3. optionally NoisyQuant's noisy bias on the layers that take it (:mod:`nas.quantization.noisy_bias`).

Observers keep the exact running extremes (min-max is exact over all batches) and a bounded random sample of
values, always with each batch's extremes in it, for the percentile and MSE searches: ``max_samples`` values per
tensor (per channel: columns of values) over all batches, so memory stays bounded whatever the batch size.

Quantisers whose format has no range (fp32, fp16, bf16: a cast) are left alone.

Example:
    >>> import nas
    >>> from nas.quantization import CalibrationSettings, quantize_model
    >>> arch = nas.Arch.load("tests/tiny/mixer_attention.yaml")  # doctest: +SKIP
    >>> result = quantize_model(nas.build(arch), arch, nas.Precision.from_spec("int8"), images,
    ...                         CalibrationSettings(method="percentile"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nas.arch import Arch, NumberFormat, Precision
from nas.blocks.fakequant import Quantizer, fake_quantize, qparams_from_range, quantized_layers
from nas.build import build
from nas.errors import ConfigError, NasError
from nas.quantization.estimators import RangeQuantize, channels_first, minmax_range, mse_range, percentile_range
from nas.quantization.noisy_bias import add_noisy_bias

__all__ = ["METHODS", "WEIGHT_METHODS", "CalibrationSettings", "DEFAULT_SETTINGS", "QuantizedModel", "Observer",
           "FloatMode", "float_mode", "has_range", "quantize_model", "quantized_copy", "range_quantize", "fit_range"]

METHODS = ("minmax", "percentile", "mse")
"""Activation range estimators."""
WEIGHT_METHODS = ("minmax", "mse")
"""Weight range estimators (a weight is seen whole, so a percentile would only clip real values)."""


@dataclass(frozen=True)
class CalibrationSettings:
    """How :func:`quantize_model` calibrates.

    Attributes:
        method: the activations' range estimator, one of :data:`METHODS`.
        percentile: for ``percentile``: the upper percentile kept (the lower one is ``100 - percentile``).
        weights: the weights' range estimator, one of :data:`WEIGHT_METHODS`.
        batches: calibration batches run through the model.
        noisy_bias: add NoisyQuant's noisy bias where a layer takes it.
        seed: draws the observers' samples and the noise.
        max_samples: values (per channel: columns) each observer keeps for percentile and MSE.
    """

    method: str = "minmax"
    percentile: float = 99.99
    weights: str = "minmax"
    batches: int = 8
    noisy_bias: bool = False
    seed: int = 0
    max_samples: int = 1 << 16

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown range estimator {self.method!r}; known: {', '.join(METHODS)}", path="method")
        if self.weights not in WEIGHT_METHODS:
            raise ConfigError(f"unknown weight range estimator {self.weights!r}; known: {', '.join(WEIGHT_METHODS)}",
                              path="weights")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"must be in (50, 100], got {self.percentile}", path="percentile")
        for name in ("batches", "max_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", path=name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_SETTINGS = CalibrationSettings()


@dataclass
class QuantizedModel:
    """What :func:`quantize_model` gives: the calibrated module, its Arch (with the precision), and how.

    Attributes:
        arch: the float Arch at the precision.
        module: the calibrated model, in eval mode.
        settings: the calibration settings.
        noisy_bias: layer name -> noise amplitude (fraction of the step) of each layer given a noisy bias.
    """

    arch: Arch
    module: nn.Module
    settings: CalibrationSettings
    noisy_bias: dict[str, float] = field(default_factory=dict)


def has_range(fmt: NumberFormat) -> bool:
    """Whether a quantiser of ``fmt`` needs a range: integer and fp8 formats (fp16/bf16/fp32 are casts)."""
    return fmt.family == "int" or fmt.bits == 8


def range_quantize(fmt: NumberFormat) -> RangeQuantize:
    """``quantize(values, low, high)`` in ``fmt`` for values laid out channels first (``C x M``, one range per
    channel) or flat, by the quantiser's own range -> scale rule (:func:`~nas.blocks.fakequant.qparams_from_range`)."""

    def quantize(values: Tensor, low: Tensor, high: Tensor) -> Tensor:
        scale, zero_point = qparams_from_range(fmt, low, high)
        return fake_quantize(values, fmt, scale, zero_point, 0 if values.dim() == 2 else None)

    return quantize


def fit_range(values: Tensor, fmt: NumberFormat, axis: int | None, method: str,
              percentile: float = 99.99) -> tuple[Tensor, Tensor]:
    """The ``method``'s range of ``values`` (channels along ``axis``, or per tensor) for the format ``fmt``."""
    if method == "minmax":
        return minmax_range(values, axis)
    if method == "percentile":
        return percentile_range(values, axis, percentile)
    return mse_range(values, axis, range_quantize(fmt))


class Observer:
    """The values one activation quantiser sees during calibration: exact extremes and a bounded sample.

    Args:
        axis: the channel axis of the observed tensor (None: per tensor).
        per_batch: sampled values (per channel: columns) kept from each batch.
        generator: picks the sampled values.
    """

    def __init__(self, axis: int | None, per_batch: int, generator: torch.Generator):
        self.axis = axis
        self.per_batch = per_batch
        self.generator = generator
        self.low: Tensor | None = None
        self.high: Tensor | None = None
        self.samples: list[Tensor] = []

    def observe(self, values: Tensor) -> None:
        flat = channels_first(values, self.axis).float()
        low, high = flat.amin(-1), flat.amax(-1)
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)
        count = flat.shape[-1]
        chosen = torch.randint(count, (min(count, self.per_batch),), generator=self.generator).to(flat.device)
        self.samples.append(torch.cat([flat.index_select(-1, chosen), low.unsqueeze(-1), high.unsqueeze(-1)], -1))

    def hook(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        """A forward pre-hook for the quantiser."""
        self.observe(inputs[0])

    def range(self, fmt: NumberFormat, method: str, percentile: float) -> tuple[Tensor, Tensor]:
        """The ``method``'s range for ``fmt``: exact extremes for min-max, else fitted to the sample."""
        if self.low is None or self.high is None:
            raise NasError("an activation quantiser saw no data during calibration (is its layer used?)")
        if method == "minmax":
            return self.low, self.high
        return fit_range(torch.cat(self.samples, -1), fmt, None if self.axis is None else 0, method, percentile)


class FloatMode:
    """While :attr:`active`, every :class:`Quantizer` of a model passes its input through unchanged (see
    :func:`float_mode`); hooks on the quantisers themselves (observers, a noisy bias) still run."""

    def __init__(self) -> None:
        self.active = True

    def hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return inputs[0] if self.active else output


def run_batches(module: nn.Module, images: Iterable[Tensor], batches: int, hooks: list[Any], empty: str) -> None:
    """Feed up to ``batches`` batches of ``images`` through ``module``, then remove ``hooks`` (also on error).

    Raises:
        NasError: ``empty`` when the data gave no batch at all.
    """
    seen = 0
    try:
        for batch in images:
            if seen >= batches:
                break
            module(batch)
            seen += 1
    finally:
        for hook in hooks:
            hook.remove()
    if seen == 0:
        raise NasError(f"{empty}: the data gave no images")


@contextmanager
def float_mode(model: nn.Module) -> Iterator[FloatMode]:
    """Inside the block ``model`` computes in float: its quantisers pass through while the yielded
    :class:`FloatMode` is active (a caller may switch it off to compare with the quantised result)."""
    mode = FloatMode()
    handles = [module.register_forward_hook(mode.hook) for module in model.modules() if isinstance(module, Quantizer)]
    try:
        yield mode
    finally:
        for handle in handles:
            handle.remove()


def quantized_copy(model: nn.Module, arch: Arch, precision: Precision) -> tuple[Arch, nn.Module]:
    """``build(arch at precision)`` holding ``model``'s float weights, in eval mode (quantisers not calibrated).

    Raises:
        NasError: ``model``'s state does not fit ``arch``.
    """
    quantized_arch = arch.with_precision(precision)
    module = build(quantized_arch)
    try:
        module.load_state_dict(model.state_dict())  # a quantiser's missing state is allowed (fakequant.Quantizer)
    except RuntimeError as exc:
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise NasError(f"the float weights do not fit Arch {arch.id}: {reason}") from None
    return quantized_arch, module.eval()


def _calibrate_weights(module: nn.Module, method: str) -> None:
    for _, layer in quantized_layers(module):
        quantizer = layer.weight_quantizer
        if has_range(quantizer.fmt):
            quantizer.set_range(*fit_range(layer.deployed_weight().detach(), quantizer.fmt, quantizer.channel_axis,
                                           method))


@torch.no_grad()
def quantize_model(model: nn.Module, arch: Arch, precision: Precision, images: Iterable[Tensor],
                   settings: CalibrationSettings = DEFAULT_SETTINGS) -> QuantizedModel:
    """Calibrate ``model`` (float weights of ``arch``) at ``precision`` on the first ``settings.batches`` of
    ``images``.

    Raises:
        NasError: ``model``'s weights do not fit ``arch``, or ``images`` holds no batch.
    """
    quantized_arch, module = quantized_copy(model, arch, precision)
    _calibrate_weights(module, settings.weights)
    generator = torch.Generator().manual_seed(settings.seed)
    layers = list(quantized_layers(module))
    observers: dict[str, Observer] = {}
    first_inputs: dict[str, list[Tensor]] = {}
    handles = []
    per_batch = max(1, settings.max_samples // settings.batches)
    for name, layer in layers:
        quantizer = layer.input_quantizer
        if not has_range(quantizer.fmt):
            continue
        observer = observers[name] = Observer(quantizer.channel_axis, per_batch, generator)
        handles.append(quantizer.register_forward_pre_hook(observer.hook))
        if settings.noisy_bias:
            handles.append(quantizer.register_forward_pre_hook(_first_input(first_inputs.setdefault(name, []))))
    with float_mode(module):
        run_batches(module, images, settings.batches, handles, "no calibration batch")
    for name, layer in layers:
        if name in observers:
            quantizer = layer.input_quantizer
            quantizer.set_range(*observers[name].range(quantizer.fmt, settings.method, settings.percentile))
    noisy: dict[str, float] = {}
    if settings.noisy_bias:
        references = [(name, layer, _float_layer(layer)) for name, layer in layers]
        noisy = add_noisy_bias(references, first_inputs, generator=generator)
    return QuantizedModel(quantized_arch, module.eval(), settings, noisy)


def _first_input(store: list[Tensor]) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
    """A pre-hook keeping the first input a quantiser sees (the noisy bias is fitted on one batch)."""

    def keep(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if not store:
            store.append(inputs[0].detach())

    return keep


def _float_layer(layer: nn.Module) -> Callable[[Tensor], Tensor]:
    """``layer`` computed in float (its quantisers passed through)."""

    def run(x: Tensor) -> Tensor:
        with float_mode(layer):
            return layer(x)

    return run
