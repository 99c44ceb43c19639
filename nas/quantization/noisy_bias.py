"""NoisyQuant's noisy bias: a fixed uniform noise added to a layer's input before it is quantised, removed after.

Paper: "NoisyQuant: Noisy Bias-Enhanced Post-Training Activation Quantization for Vision Transformers",
Liu et al., CVPR 2023, arXiv:2211.16056.

Heavy-tailed activations (after GELU, softmax) crowd most values into a few quantisation bins. The paper shows
(its Theorem 1) that adding a fixed noise ``N ~ U(-n/2, n/2)``, ``n`` at most one quantisation step, to the
values before a uniform quantiser lowers the expected quantisation error of values in a provable part of each
bin, and flattens the peaks of the quantised distribution. The noise is sampled once per layer, one value per
input channel, shared by every token and image, so its contribution to a linear layer's output is a constant:
``W N``, which the layer's bias absorbs. The layer computes::

    y = W Q(x + N) + (b - W N)          # the paper's "denoising bias" b - W N

so in float (``Q`` the identity) ``y = W x + b`` exactly, and quantised its expectation over the rounding is the
float output with a smaller error. ``W`` here is the weight the layer multiplies by: the quantised weight, so the
cancellation is exact whatever the weight format.

The paper searches the noise amplitude per layer on calibration data; :func:`add_noisy_bias` does the same over
:data:`AMPLITUDES` (fractions of the input quantiser's step, 0 meaning no noise) and keeps, per layer, the one with
the smallest output error against the float layer on the calibration inputs.

Where it applies: layers whose output is linear in a per-channel constant input, the noise's channel being the
layer's input channel: linear layers, and convolutions with a 1-sized kernel and no padding (a larger kernel or
padding would make ``W N`` differ at the borders). Only integer activation formats have the uniform step the
theorem is about. Other layers are left as they are.

How it lives in a model: a :class:`NoisyBias` child named ``noisy_bias`` on the layer (buffers ``noise`` and
``correction``, saved with the model), with a forward pre-hook on the layer's ``input_quantizer`` that adds the
noise and a forward hook on the layer that subtracts the correction. :func:`attach_noisy_bias` re-creates them
from a saved model's layer names before its state dict is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["AMPLITUDES", "NOISY_BIAS", "NoisyBias", "supports_noisy_bias", "attach_noisy_bias", "add_noisy_bias",
           "noisy_bias_layers"]

AMPLITUDES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Noise widths tried per layer, as fractions of the input quantiser's step (the paper bounds it by one step)."""
NOISY_BIAS = "noisy_bias"
"""The child module's name on a layer (and so its state-dict prefix)."""


def _channel_axis(layer: nn.Module) -> int:
    """The input-channel axis of the layer's input: last for a linear layer, 1 for a convolution."""
    return -1 if isinstance(layer, nn.Linear) else 1


def supports_noisy_bias(layer: nn.Module) -> bool:
    """Whether ``W N`` is a per-output constant for ``layer``: a linear layer, or a 1-sized, unpadded convolution
    whose input quantiser has an integer format."""
    quantizer = getattr(layer, "input_quantizer", None)
    if quantizer is None or quantizer.fmt.family != "int":
        return False
    if isinstance(layer, nn.Linear):
        return True
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):  # the convolutions nas.blocks.fakequant quantises
        padding = layer.padding if isinstance(layer.padding, tuple) else (1,)  # "same": treated as padded
        return all(size == 1 for size in layer.kernel_size) and all(pad == 0 for pad in padding)
    return False


def _layer_response(layer: nn.Module, noise: Tensor) -> Tensor:
    """``W N`` for the layer's quantised weight: one value per output channel."""
    weight = layer.weight_quantizer(layer.deployed_weight())
    if isinstance(layer, nn.Linear):
        return F.linear(noise, weight)
    spatial = weight.dim() - 2
    shaped = noise.reshape(1, -1, *([1] * spatial))
    convolve = F.conv1d if spatial == 1 else F.conv2d
    return convolve(shaped, weight, groups=layer.groups).reshape(-1)


class NoisyBias(nn.Module):
    """A layer's fixed noise (one value per input channel) and its correction (one value per output channel).

    ``add(quantizer, inputs)`` is the input quantiser's forward pre-hook; ``remove(layer, inputs, output)`` the
    layer's forward hook. Both broadcast along the layer's channel axis.
    """

    def __init__(self, in_channels: int, out_channels: int, channel_axis: int):
        super().__init__()
        self.channel_axis = channel_axis
        self.handles: tuple[RemovableHandle, ...] = ()  # the two hooks, set by _install
        self.register_buffer("noise", torch.zeros(in_channels))
        self.register_buffer("correction", torch.zeros(out_channels))

    def _shaped(self, values: Tensor, like: Tensor) -> Tensor:
        if self.channel_axis == -1:
            return values
        return values.reshape(-1, *([1] * (like.dim() - 2)))

    def add(self, quantizer: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = inputs[0]
        return (x + self._shaped(self.noise, x).to(x.dtype), *inputs[1:])

    def remove(self, layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        return output - self._shaped(self.correction, output).to(output.dtype)

    @torch.no_grad()
    def set_noise(self, layer: nn.Module, noise: Tensor) -> None:
        """Fix the noise and recompute the correction from the layer's (quantised) weight."""
        self.noise.copy_(noise)
        self.correction.copy_(_layer_response(layer, noise))


def _install(layer: nn.Module) -> NoisyBias:
    """A zero :class:`NoisyBias` on ``layer``, hooked in (zero noise: the layer computes what it did)."""
    in_channels = layer.weight.shape[1] * (1 if isinstance(layer, nn.Linear) else layer.groups)
    module = NoisyBias(in_channels, layer.weight.shape[0], _channel_axis(layer)).to(layer.weight.device)
    layer.add_module(NOISY_BIAS, module)
    module.handles = (layer.input_quantizer.register_forward_pre_hook(module.add),
                      layer.register_forward_hook(module.remove))
    return module


def attach_noisy_bias(model: nn.Module, names: Iterable[str]) -> None:
    """Install (zero) noisy biases on the layers ``names`` of ``model``, so a saved state dict with them loads."""
    for name in names:
        _install(model.get_submodule(name))


def noisy_bias_layers(model: nn.Module) -> list[str]:
    """The dotted names of the layers of ``model`` that carry a noisy bias."""
    suffix = f".{NOISY_BIAS}"
    return [name[: -len(suffix)] for name, module in model.named_modules() if isinstance(module, NoisyBias)
            and name.endswith(suffix)]


def _step(layer: nn.Module) -> Tensor:
    """The input quantiser's step, broadcastable to one value per input channel."""
    return layer.input_quantizer.scale.detach().float().reshape(-1)


@torch.no_grad()
def add_noisy_bias(layers: Sequence[tuple[str, nn.Module, Callable[[Tensor], Tensor]]],
                   inputs: dict[str, list[Tensor]], *, generator: torch.Generator,
                   amplitudes: Sequence[float] = AMPLITUDES) -> dict[str, float]:
    """Give each supported, calibrated layer the noisy bias whose amplitude best matches its float output.

    Args:
        layers: ``(name, quantised layer, its float computation)``; the layer's quantisers already calibrated.
        inputs: float inputs of each layer (by name) seen on calibration batches.
        generator: draws the noise (one uniform draw per layer, scaled for every amplitude).
        amplitudes: noise widths tried, as fractions of the step.

    Returns:
        The chosen amplitude of each layer that got a noisy bias (layers where no noise was best are left bare).
    """
    chosen: dict[str, float] = {}
    for name, layer, reference in layers:
        if not supports_noisy_bias(layer) or not inputs.get(name):
            continue
        module = _install(layer)
        in_channels = module.noise.numel()
        unit = torch.rand(in_channels, generator=generator).to(module.noise) - 0.5  # U(-1/2, 1/2)
        step = _step(layer).to(module.noise)
        expected = [reference(x) for x in inputs[name]]
        errors = []
        for amplitude in amplitudes:
            module.set_noise(layer, unit * step * amplitude)
            errors.append(sum(float((layer(x) - y).pow(2).mean()) for x, y in zip(inputs[name], expected,
                                                                                  strict=True)))
        best = min(range(len(amplitudes)), key=errors.__getitem__)
        module.set_noise(layer, unit * step * amplitudes[best])
        if amplitudes[best] == 0.0:
            _remove(layer)
        else:
            chosen[name] = amplitudes[best]
    return chosen


def _remove(layer: nn.Module) -> None:
    """Take a noisy bias off ``layer`` again (its hooks with it)."""
    for handle in getattr(layer, NOISY_BIAS).handles:
        handle.remove()
    delattr(layer, NOISY_BIAS)
