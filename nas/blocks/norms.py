"""Norm kinds: none, layernorm, batchnorm, groupnorm1, each in both layouts.

A norm kind is semantic ("normalise over channels"); the layout picks the
module (``nn.LayerNorm`` on tokens, :class:`LayerNorm2d` on NCHW maps).
GroupNorm with one group is PoolFormer's choice (arXiv:2111.11418, Sec. 4.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from nas.arch import Component
from nas.blocks.common import BatchNormNLC, GroupNorm1NLC, LayerNorm2d, Layout
from nas.blocks.registry import register

__all__ = ["NoNormCfg", "LayerNormCfg", "BatchNormCfg", "GroupNorm1Cfg"]


@dataclass(frozen=True)
class NoNormCfg(Component):
    """No normalisation."""


@dataclass(frozen=True)
class LayerNormCfg(Component):
    """LayerNorm over channels."""


@dataclass(frozen=True)
class BatchNormCfg(Component):
    """BatchNorm over channels (foldable into a preceding conv at inference)."""


@dataclass(frozen=True)
class GroupNorm1Cfg(Component):
    """GroupNorm with a single group: normalise over channels and positions."""


class _NormKind:
    """A norm kind: one constructor per layout."""

    by_layout: ClassVar[dict[str, Callable[..., nn.Module]]]

    @classmethod
    def create(cls, dim: int, layout: Layout, *, device: Any = None, dtype: Any = None) -> nn.Module:
        return cls.by_layout[layout](dim, device=device, dtype=dtype)


def _identity(dim: int, *, device: Any = None, dtype: Any = None) -> nn.Module:
    return nn.Identity()


def _group_norm_nchw(dim: int, *, device: Any = None, dtype: Any = None) -> nn.Module:
    return nn.GroupNorm(1, dim, device=device, dtype=dtype)


@register("norm", "none", NoNormCfg)
class NoNorm(_NormKind):
    by_layout = {"nchw": _identity, "nlc": _identity}


@register("norm", "layernorm", LayerNormCfg)
class LayerNormKind(_NormKind):
    by_layout = {"nchw": LayerNorm2d, "nlc": nn.LayerNorm}


@register("norm", "batchnorm", BatchNormCfg)
class BatchNormKind(_NormKind):
    by_layout = {"nchw": nn.BatchNorm2d, "nlc": BatchNormNLC}


@register("norm", "groupnorm1", GroupNorm1Cfg)
class GroupNorm1Kind(_NormKind):
    by_layout = {"nchw": _group_norm_nchw, "nlc": GroupNorm1NLC}
