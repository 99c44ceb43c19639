"""Shared primitives, written once: activations, layouts, norms, layer scale, DropPath, MLPs.

Mixer files import these and never redefine them (STYLE rule 1). Tensors move
between modules in one of two layouts, declared by each module:

* ``nchw``: ``(batch, channels, height, width)``, for convolutions and pooling;
* ``nlc``: ``(batch, prefix + height * width, channels)``, for attention and
  linear layers; ``prefix`` counts class tokens.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from nas.arch import Layout

__all__ = [
    "Activation",
    "Layout",
    "NormKind",
    "factory_kwargs",
    "create_act",
    "ToNLC",
    "ToNCHW",
    "LayerNorm2d",
    "BatchNormNLC",
    "GroupNorm1NLC",
    "LayerScale",
    "create_layer_scale",
    "DropPath",
    "ConvNorm",
    "Mlp",
    "SqueezeExcite",
    "split_heads",
    "merge_heads",
    "TrainingProgress",
    "set_training_progress",
]

Activation = Literal["gelu", "relu", "relu6", "silu", "hardswish", "star_relu"]
NormKind = Literal["none", "layernorm", "batchnorm", "groupnorm1"]  # a norm named inside another component


def factory_kwargs(device: Any, dtype: Any) -> dict[str, Any]:
    """The ``device``/``dtype`` pair every constructor passes down (so models build on ``meta``)."""
    return {"device": device, "dtype": dtype}


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(..., tokens, heads * head_dim) -> (..., heads, tokens, head_dim)``."""
    x = x.unflatten(-1, (heads, -1))
    return x.transpose(-2, -3)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., heads, tokens, head_dim) -> (..., tokens, heads * head_dim)``."""
    return x.transpose(-2, -3).flatten(-2)


class StarReLU(nn.Module):
    """``s * relu(x)**2 + b`` with learnable scalars (MetaFormer baselines, arXiv:2210.13452)."""

    def __init__(self, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.scale = nn.Parameter(torch.ones(1, **dd) * 0.8944)
        self.bias = nn.Parameter(torch.ones(1, **dd) * -0.4472)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.relu(x) ** 2 + self.bias


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}


def create_act(name: Activation, *, device: Any = None, dtype: Any = None) -> nn.Module:
    """An activation module by name; ``star_relu`` has parameters, the others none."""
    if name == "star_relu":
        return StarReLU(device=device, dtype=dtype)
    return _ACTIVATIONS[name]()


class ToNLC(nn.Module):
    """``(B, C, H, W) -> (B, H*W, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class ToNCHW(nn.Module):
    """``(B, H*W, C) -> (B, C, H, W)``; the size is fixed at build time."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.size)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class BatchNormNLC(nn.BatchNorm1d):
    """BatchNorm over the channels of an NLC tensor, or of a pooled ``(B, C)`` vector (LeViT, EfficientViT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape_as(x)


class GroupNorm1NLC(nn.GroupNorm):
    """GroupNorm with one group (normalise over tokens and channels) for an NLC tensor."""

    def __init__(self, num_channels: int, *, device: Any = None, dtype: Any = None):
        super().__init__(1, num_channels, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT, arXiv:2103.17239)."""

    def __init__(self, dim: int, init: float, layout: Layout, *, device: Any = None, dtype: Any = None):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init, **factory_kwargs(device, dtype)))
        self.shape = (-1, 1, 1) if layout == "nchw" else (dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(self.shape)


def create_layer_scale(dim: int, init: float | None, layout: Layout, *, device: Any = None,
                       dtype: Any = None) -> nn.Module:
    """A LayerScale, or Identity when ``init`` is None."""
    if init is None:
        return nn.Identity()
    return LayerScale(dim, init, layout, device=device, dtype=dtype)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, probability: float = 0.0):
        super().__init__()
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.probability == 0.0:
            return x
        keep = 1.0 - self.probability
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class ConvNorm(nn.Sequential):
    """Conv2d + BatchNorm2d (+ activation): the conv-BN unit of CNNs and LeViT-style designs."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 1, stride: int = 1, *, groups: int = 1,
                 act: Activation | None = None, padding: int | None = None, bias: bool = False,
                 device: Any = None, dtype: Any = None):
        dd = factory_kwargs(device, dtype)
        padding = kernel // 2 if padding is None else padding
        layers: list[nn.Module] = [
            nn.Conv2d(in_dim, out_dim, kernel, stride, padding, groups=groups, bias=bias, **dd),
            nn.BatchNorm2d(out_dim, **dd),
        ]
        if act is not None:
            layers.append(create_act(act, **dd))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(act(fc1(mean(x)))))`` (arXiv:1709.01507), 1x1 convs on NCHW.

    ``bias=False`` drops the two biases, as GC ViT's squeeze-excitation does.
    """

    def __init__(self, dim: int, hidden: int, act: Activation, *, bias: bool = True, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.reduce = nn.Conv2d(dim, hidden, 1, bias=bias, **dd)
        self.act = create_act(act, **dd)
        self.expand = nn.Conv2d(hidden, dim, 1, bias=bias, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))


class Mlp(nn.Module):
    """Two pointwise layers with an activation between, in either layout.

    Linear layers on ``nlc`` and 1x1 convolutions on ``nchw`` have the same
    weights and cost; the layout only saves a transpose. ``norm=True`` adds
    BatchNorm after each layer (EfficientFormer's conv-BN MLP); ``dwconv``
    adds a depthwise 3x3 between them (PVTv2, VAN).
    """

    def __init__(self, dim: int, hidden: int, layout: Layout, *, act: Activation = "gelu", bias: bool = True,
                 norm: bool = False, dwconv: bool = False, size: tuple[int, int] | None = None,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        if layout == "nchw":
            self.fc1: nn.Module = nn.Conv2d(dim, hidden, 1, bias=bias, **dd)
            self.fc2: nn.Module = nn.Conv2d(hidden, dim, 1, bias=bias, **dd)
            self.norm1: nn.Module = nn.BatchNorm2d(hidden, **dd) if norm else nn.Identity()
            self.norm2: nn.Module = nn.BatchNorm2d(dim, **dd) if norm else nn.Identity()
            self.mid: nn.Module = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, **dd) if dwconv else nn.Identity()
        else:
            self.fc1 = nn.Linear(dim, hidden, bias=bias, **dd)
            self.fc2 = nn.Linear(hidden, dim, bias=bias, **dd)
            self.norm1 = BatchNormNLC(hidden, **dd) if norm else nn.Identity()
            self.norm2 = BatchNormNLC(dim, **dd) if norm else nn.Identity()
            if dwconv:
                if size is None:
                    raise ValueError("an nlc Mlp with dwconv needs the feature-map size")
                self.mid = nn.Sequential(
                    ToNCHW(size), nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, **dd), ToNLC())
            else:
                self.mid = nn.Identity()
        self.act = create_act(act, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.fc2(self.act(self.mid(self.norm1(self.fc1(x))))))


class TrainingProgress(nn.Module):
    """Base of modules whose forward follows training progress (VanillaNet's activations annealed to identity).

    The trainer calls :func:`set_training_progress` before every step with the fraction of the run done
    after it, so the last step trains at progress 1.
    """

    def set_progress(self, progress: float) -> None:
        raise NotImplementedError


def set_training_progress(model: nn.Module, progress: float) -> None:
    """Tell every :class:`TrainingProgress` module of ``model`` that ``progress`` (0 to 1) of training is done."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    for module in model.modules():
        if isinstance(module, TrainingProgress):
            module.set_progress(progress)
