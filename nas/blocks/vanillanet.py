"""VanillaNet: a plain stack without shortcuts, its series-informed activation, deep training and the merge.

Paper: "VanillaNet: the Power of Minimalism in Deep Learning", Chen, Guo, Han,
Xu and Wang (Huawei Noah's Ark), NeurIPS 2023, arXiv:2305.12972. Each layer is
one 1x1 convolution, a max-pool where it downsamples, and an activation; there
is no residual and no attention, so a deployed model is a single chain of
dense kernels. Two ideas make so shallow a net train:

* **Deep training.** During training each layer is *two* convolutions (each
  with BatchNorm) with ``leaky_relu(x, slope)`` between them. The slope is
  annealed from 0 (ReLU) to 1 (identity) as training goes on (:func:`anneal`);
  once it is 1 the two convolutions and their norms are one affine map, and
  :func:`merge_weights` folds them into the single convolution of the deployed
  form (``deploy: true``). The same holds
  for the stem (4x4/4 conv then 1x1 conv) and the head (two linear layers).
* **Series-informed activation.** ``relu(x)`` followed by a depthwise
  ``(2n + 1) x (2n + 1)`` convolution and BatchNorm: a learned sum of shifted,
  scaled ReLUs, a stack of ``n`` activations in series, at almost no cost.

A VanillaNet layer changes width and has no shortcut, so its block is a
block-owning kind that declares ``changes_width``; nothing else in ``nas``
knows it is plain. Its widths (512 to 4096) and its three-layer depth do not
fit the four MetaFormer stages, so it has a family space,
``spaces/vanillanet.yaml``.

Published figures (``spaces/zoo/vanillanet_5.yaml``): VanillaNet-5 has 15.5M
parameters and 5.2 GFLOPs at 224 px, deployed (the paper's Table 3 and the
official huawei-noah/VanillaNet README); widths 512, 1024, 2048, 4096, strides
2, 2, 2, activation ``n = 3`` (``vanillanet_5`` in that repo's models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import TrainingProgress, factory_kwargs, set_training_progress
from nas.blocks.contract import Prefix
from nas.blocks.heads import Head
from nas.blocks.registry import register
from nas.blocks.resnet import check_conv_bn_block
from nas.blocks.stems import Stem, conv_out
from nas.blocks.template import BlockContext, FusedBlock
from nas.errors import ConfigError

__all__ = ["VanillaStemCfg", "VanillaBlockCfg", "VanillaHeadCfg", "SeriesActivation", "VanillaStem", "VanillaBlock",
           "VanillaHead", "anneal", "merge_weights"]

_EPS = 1e-6  # VanillaNet's BatchNorm epsilon


def _check_terms(terms: int) -> None:
    if terms < 0:
        raise ConfigError(f"must be >= 0, got {terms}", path="terms")


@dataclass(frozen=True)
class VanillaStemCfg(Component):
    """4x4/4 conv (then, training, BatchNorm, leaky ReLU, 1x1 conv, BatchNorm), series-informed activation.

    Attributes:
        terms: ``n`` of the activation's ``(2n + 1)`` square depthwise kernel.
        deploy: the merged form (one conv with bias) rather than the two-conv training form.
    """

    key_fields = ("deploy",)  # merged weights mean something else than the training form's

    dim: int | None = None
    terms: int = 3
    deploy: bool = False

    def check(self, site: Site) -> None:
        _check_terms(self.terms)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_out(height, 4, 4, 0), conv_out(width, 4, 4, 0)


@dataclass(frozen=True)
class VanillaBlockCfg(Component):
    """A plain layer: 1x1 conv to the stage width (training: two, a leaky ReLU between), max-pool, activation.

    Attributes:
        stride: the max-pool's window and stride (1: none).
        terms: ``n`` of the activation's ``(2n + 1)`` square depthwise kernel.
        deploy: the merged form rather than the training form.
    """

    reads_block: ClassVar[bool] = True  # check_conv_bn_block: the block's ffn and norm
    changes_width: ClassVar[bool] = True  # a plain layer projects to the stage width; it has no shortcut
    sharing = {"conv1": Prefix()}  # the training form's inner width is the input width
    key_fields = ("deploy",)  # merged weights mean something else than the training form's

    stride: int = 2
    terms: int = 3
    deploy: bool = False

    def check(self, site: Site) -> None:
        if self.stride < 1:
            raise ConfigError(f"must be >= 1, got {self.stride}", path="stride")
        _check_terms(self.terms)
        check_conv_bn_block(site, "vanilla")
        if site.height < self.stride or site.width < self.stride:
            raise ConfigError(f"a {self.stride}x{self.stride} max-pool does not fit the {site.height}x{site.width} "
                              "map", path="stride")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.stride, width // self.stride


@dataclass(frozen=True)
class VanillaHeadCfg(Component):
    """Average pool, then a linear classifier (training: linear, BatchNorm, leaky ReLU, linear).

    Attributes:
        deploy: the merged form rather than the training form.
    """

    key_fields = ("deploy",)  # merged weights mean something else than the training form's

    num_classes: int = 1000
    deploy: bool = False

    def check(self, site: Site) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"must be >= 1, got {self.num_classes}", path="num_classes")


def _fold(conv_weight: torch.Tensor, conv_bias: torch.Tensor | None,
          norm: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of ``norm(conv(x))`` as one affine layer (eval-mode BatchNorm)."""
    assert norm.running_var is not None and norm.running_mean is not None  # track_running_stats is on
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = conv_bias if conv_bias is not None else torch.zeros_like(norm.running_mean)
    shape = (-1,) + (1,) * (conv_weight.dim() - 1)
    return conv_weight * scale.reshape(shape), (bias - norm.running_mean) * scale + norm.bias


def _chain(first: tuple[torch.Tensor, torch.Tensor],
           second: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One affine layer for ``first`` then ``second`` (a 1x1 conv or linear layer after any conv)."""
    (weight1, bias1), (weight2, bias2) = first, second
    matrix = weight2.reshape(weight2.shape[0], weight2.shape[1])
    weight = torch.einsum("om,m...->o...", matrix, weight1)
    return weight, matrix @ bias1 + bias2


class _Annealed(TrainingProgress):
    """A training-form module: a leaky ReLU between its two layers, its slope the training progress."""

    def __init__(self) -> None:
        super().__init__()
        self.between = nn.LeakyReLU(0.0)

    def set_progress(self, progress: float) -> None:
        self.between.negative_slope = progress

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The state dict of the deployed form of this module; exact once the slope is 1."""
        raise NotImplementedError


class SeriesActivation(nn.Module):
    """``norm(depthwise(relu(x)))`` with a ``(2n + 1)`` square kernel; deployed, the norm is the conv's bias."""

    def __init__(self, dim: int, terms: int, deploy: bool, dd: dict[str, Any]):
        super().__init__()
        size = 2 * terms + 1
        self.terms = terms
        self.relu = nn.ReLU()  # a module, so that activation hooks (the NASWOT proxy) see it
        self.weight = nn.Parameter(torch.randn(dim, 1, size, size, **dd) * 0.02)
        self.bias = nn.Parameter(torch.zeros(dim, **dd)) if deploy else None
        self.norm = nn.Identity() if deploy else nn.BatchNorm2d(dim, eps=_EPS, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.conv2d(self.relu(x), self.weight, self.bias, padding=self.terms, groups=x.shape[1]))

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The state dict of the deployed form (its own, if already deployed)."""
        if not isinstance(self.norm, nn.BatchNorm2d):
            return self.state_dict()
        weight, bias = _fold(self.weight, None, self.norm)
        return {"weight": weight, "bias": bias}


def _conv_bn(in_dim: int, out_dim: int, kernel: int, dd: dict[str, Any]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel, kernel, **dd), nn.BatchNorm2d(out_dim, eps=_EPS, **dd))


class _TwoConvs(_Annealed):
    """Training form of a merged conv: ``conv_bn2(leaky_relu(conv_bn1(x)))``, the second one a 1x1."""

    def __init__(self, in_dim: int, mid_dim: int, out_dim: int, kernel: int, dd: dict[str, Any]):
        super().__init__()
        self.conv1 = _conv_bn(in_dim, mid_dim, kernel, dd)
        self.conv2 = _conv_bn(mid_dim, out_dim, 1, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.between(self.conv1(x)))

    def merged_state(self) -> dict[str, torch.Tensor]:
        first = _fold(self.conv1[0].weight, self.conv1[0].bias, self.conv1[1])
        weight, bias = _chain(first, _fold(self.conv2[0].weight, self.conv2[0].bias, self.conv2[1]))
        return {"weight": weight, "bias": bias}


def _projection(in_dim: int, out_dim: int, kernel: int, deploy: bool, dd: dict[str, Any]) -> nn.Module:
    if deploy:
        return nn.Conv2d(in_dim, out_dim, kernel, kernel, **dd)
    return _TwoConvs(in_dim, in_dim if kernel == 1 else out_dim, out_dim, kernel, dd)


@register("stem", "vanilla", VanillaStemCfg)
class VanillaStem(Stem):
    def __init__(self, cfg: VanillaStemCfg, *, in_dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        assert cfg.dim is not None  # Arch fills the stem width in
        self.proj = _projection(in_dim, cfg.dim, 4, cfg.deploy, dd)
        self.act = SeriesActivation(cfg.dim, cfg.terms, cfg.deploy, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x))


@register("mixer", "vanilla", VanillaBlockCfg)
class VanillaBlock(FusedBlock):
    """``act(pool(proj(x)))``: no shortcut, by design."""

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: VanillaBlockCfg = block.mixer  # type: ignore[assignment]
        self.proj = _projection(context.in_dim, context.dim, 1, cfg.deploy, dd)
        self.pool = nn.MaxPool2d(cfg.stride) if cfg.stride > 1 else nn.Identity()
        self.act = SeriesActivation(context.dim, cfg.terms, cfg.deploy, dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pool(self.proj(x)))


class _TwoLinears(_Annealed):
    """Training form of the classifier: ``fc2(leaky_relu(norm(fc1(x))))``."""

    def __init__(self, in_dim: int, num_classes: int, dd: dict[str, Any]):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, num_classes, **dd)
        self.norm = nn.BatchNorm1d(num_classes, eps=_EPS, **dd)
        self.fc2 = nn.Linear(num_classes, num_classes, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.between(self.norm(self.fc1(x))))

    def merged_state(self) -> dict[str, torch.Tensor]:
        weight, bias = _chain(_fold(self.fc1.weight, self.fc1.bias, self.norm), (self.fc2.weight, self.fc2.bias))
        return {"weight": weight, "bias": bias}


@register("head", "vanilla", VanillaHeadCfg)
class VanillaHead(Head):
    def __init__(self, cfg: VanillaHeadCfg, *, in_dim: int, layout: str, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        if layout != "nchw":
            raise ConfigError("the vanilla head needs a feature map (nchw), not tokens", path="head.kind")
        self._dd = factory_kwargs(device, dtype)
        self.num_features = in_dim
        self.deploy = cfg.deploy
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = (nn.Linear(self.num_features, num_classes, **self._dd) if self.deploy
                   else _TwoLinears(self.num_features, num_classes, self._dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def anneal(model: nn.Module, progress: float) -> None:
    """Deep training's schedule: set every leaky ReLU's slope to ``progress`` (0: ReLU, 1: identity).

    The trainer does this before every step (:func:`~nas.blocks.common.set_training_progress`), so a
    model trained to the end merges exactly (:func:`merge_weights`).
    """
    set_training_progress(model, progress)


def merge_weights(trained: nn.Module, deployed: nn.Module) -> None:
    """Load the merged weights of ``trained`` (training form, in eval mode) into ``deployed``.

    ``deployed`` is built from the same Arch with ``deploy: true`` on every VanillaNet component: each
    training-form module and its deployed layer have the same name (``stem.proj``, ``head.fc``, ...).
    """
    with torch.no_grad():
        deployed.load_state_dict(trained.state_dict(), strict=False)  # layers deployed in both, and the rest
        for name, module in trained.named_modules():
            if isinstance(module, (_Annealed, SeriesActivation)):
                deployed.get_submodule(name).load_state_dict(module.merged_state())
