"""Classifier heads: ``linear`` (pool, norm, linear; optional distillation head) and ``conv`` (MobileNetV2).

The norm is applied to the pooled vector. Models that normalise tokens before
pooling (Swin, PoolFormer) have the same parameters and cost either way.
A distillation head (DeiT arXiv:2012.12877, EfficientFormer, EfficientViT) is
a second linear classifier whose logits are averaged with the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from nas.arch import Component, Site
from nas.blocks.common import Activation, ConvNorm, Layout, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.template import create_norm
from nas.errors import ConfigError

__all__ = ["LinearHeadCfg", "ConvHeadCfg", "LinearHead", "ConvHead", "Head"]


def _check_classes(num_classes: int) -> None:
    if num_classes < 0:
        raise ConfigError(f"must be >= 0 (0 means no classifier), got {num_classes}", path="num_classes")


@dataclass(frozen=True)
class LinearHeadCfg(Component):
    """Pool (average, or the class token), normalise, classify."""

    num_classes: int = 1000
    pool: Literal["avg", "cls"] = "avg"
    norm: Literal["none", "layernorm", "batchnorm"] = "none"
    distillation: bool = False

    def check(self, site: Site) -> None:
        _check_classes(self.num_classes)
        if self.pool == "cls" and not site.prefix_tokens:
            raise ConfigError("'cls' pooling needs a class token (stem.class_token: true)", path="pool")


@dataclass(frozen=True)
class ConvHeadCfg(Component):
    """A 1x1 conv-BN-act to ``hidden`` channels, average pool, then a linear classifier."""

    width_fields = ("hidden",)

    num_classes: int = 1000
    hidden: int = 1280
    act: Activation = "relu6"

    def check(self, site: Site) -> None:
        _check_classes(self.num_classes)
        if self.hidden < 1:
            raise ConfigError(f"must be >= 1, got {self.hidden}", path="hidden")


class _AvgPoolMap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class _AvgPoolTokens(nn.Module):
    def __init__(self, prefix_tokens: int):
        super().__init__()
        self.prefix_tokens = prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.prefix_tokens:].mean(1)


class _ClassToken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def _pool(kind: str, layout: Layout, prefix_tokens: int) -> nn.Module:
    if kind == "cls":
        return _ClassToken()
    return _AvgPoolMap() if layout == "nchw" else _AvgPoolTokens(prefix_tokens)


class Head(nn.Module):
    """Base: ``(cfg, *, in_dim, layout, prefix_tokens, device, dtype)``; exposes ``num_features``."""

    num_features: int

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError


def _classifier(in_dim: int, num_classes: int, dd: dict[str, Any]) -> nn.Module:
    return nn.Linear(in_dim, num_classes, **dd) if num_classes else nn.Identity()


@register("head", "linear", LinearHeadCfg)
class LinearHead(Head):
    def __init__(self, cfg: LinearHeadCfg, *, in_dim: int, layout: Layout, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self._dd = factory_kwargs(device, dtype)
        self.num_features = in_dim
        self.pool = _pool(cfg.pool, layout, prefix_tokens)
        self.norm = create_norm(cfg.norm, in_dim, "nlc", **self._dd)
        self.distillation = cfg.distillation
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = _classifier(self.num_features, num_classes, self._dd)
        self.fc_dist = _classifier(self.num_features, num_classes, self._dd) if self.distillation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.pool(x))
        if self.fc_dist is None:
            return self.fc(x)
        return (self.fc(x) + self.fc_dist(x)) / 2


@register("head", "conv", ConvHeadCfg)
class ConvHead(Head):
    def __init__(self, cfg: ConvHeadCfg, *, in_dim: int, layout: Layout, prefix_tokens: int,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        if layout != "nchw":
            raise ConfigError("the conv head needs a feature map (nchw), not tokens", path="head.kind")
        self._dd = factory_kwargs(device, dtype)
        self.num_features = cfg.hidden
        self.conv = ConvNorm(in_dim, cfg.hidden, 1, act=cfg.act, **self._dd)
        self.pool = _AvgPoolMap()
        self.reset_classifier(cfg.num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = _classifier(self.num_features, num_classes, self._dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)))
