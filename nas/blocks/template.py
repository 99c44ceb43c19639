"""The block template and the two kinds of mixer class.

A :class:`TokenMixer` only mixes tokens; :meth:`TokenMixer.make_block` wraps it
in the MetaFormer template (arXiv:2111.11418)::

    x = x + layer_scale(mixer(norm(x)))
    x = x + layer_scale(ffn(norm(x)))        # skipped when ffn is 'none'

A :class:`FusedBlock` is a whole residual block with its own wiring (ResNet
bottleneck, MBConv, ConvNeXt, EfficientViT's sandwich); it reads ``norm``,
``ffn`` and ``layer_scale`` from the :class:`~nas.arch.Block` itself.

The mixer's config declares the tensor ``layout`` the block works in
(:attr:`nas.arch.Component.layout`); the builder inserts layout conversions
between units, so no module guesses its input layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, parse_component
from nas.blocks.common import DropPath, Layout, create_layer_scale, factory_kwargs
from nas.blocks.registry import module_class

__all__ = ["BlockContext", "TokenMixer", "FusedBlock", "Residual", "create_norm", "create_ffn", "ffn_residual",
           "create_block"]


class BlockContext:
    """What a block is built for: widths, feature-map size, class tokens, drop-path rate."""

    __slots__ = ("in_dim", "dim", "size", "prefix_tokens", "drop_path")

    def __init__(self, *, in_dim: int, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 drop_path: float = 0.0):
        self.in_dim = in_dim
        self.dim = dim
        self.size = size
        self.prefix_tokens = prefix_tokens
        self.drop_path = drop_path


class TokenMixer(nn.Module):
    """Base of mixers that fit the MetaFormer template.

    Subclasses take ``(cfg, *, dim, size, prefix_tokens, device, dtype)`` and
    map a tensor of their config's ``layout`` to one of the same shape.
    """

    @classmethod
    def make_block(cls, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None) -> nn.Module:
        dd = factory_kwargs(device, dtype)
        dim, layout = context.dim, block.mixer.layout
        mixer = cls(block.mixer, dim=dim, size=context.size, prefix_tokens=context.prefix_tokens, **dd)
        first = Residual(create_norm(block.norm, dim, layout, **dd), mixer,
                         create_layer_scale(dim, block.layer_scale, layout, **dd), context.drop_path)
        if block.ffn.kind == "none":
            return first
        return nn.Sequential(first, ffn_residual(block, context, layout, **dd))


class FusedBlock(nn.Module):
    """Base of mixers that are a whole block; subclasses take ``(block, context, *, device, dtype)``."""

    @classmethod
    def make_block(cls, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None) -> nn.Module:
        return cls(block, context, device=device, dtype=dtype)


class Residual(nn.Module):
    """``x + drop_path(scale(fn(norm(x))))``."""

    def __init__(self, norm: nn.Module, fn: nn.Module, scale: nn.Module, drop_path: float = 0.0):
        super().__init__()
        self.norm = norm
        self.fn = fn
        self.scale = scale
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.scale(self.fn(self.norm(x))))


def create_norm(cfg: Component | str, dim: int, layout: Layout, *, device: Any = None,
                dtype: Any = None) -> nn.Module:
    """The norm for ``layout``; ``cfg`` may be a bare kind named inside another component's params."""
    if isinstance(cfg, str):
        cfg = parse_component("norm", cfg, "norm")
    return module_class("norm", cfg).create(dim, layout, device=device, dtype=dtype)


def create_ffn(cfg: Component, dim: int, layout: Layout, *, size: tuple[int, int], device: Any = None,
               dtype: Any = None) -> nn.Module:
    """The FFN of kind ``cfg.kind``, working in ``layout``."""
    return module_class("ffn", cfg)(cfg, dim=dim, layout=layout, size=size, device=device, dtype=dtype)


def ffn_residual(block: Block, context: BlockContext, layout: Layout, *, device: Any = None,
                 dtype: Any = None) -> nn.Module:
    """The FFN half of a block, ``x + ls(ffn(norm(x)))``; an identity when the block has no FFN.

    The template's second residual, and the one the fused blocks that keep their FFN apart
    (class attention, GPSA, GC ViT) build the same way.
    """
    if block.ffn.kind == "none":
        return nn.Identity()
    dim = context.dim
    return Residual(create_norm(block.norm, dim, layout, device=device, dtype=dtype),
                    create_ffn(block.ffn, dim, layout, size=context.size, device=device, dtype=dtype),
                    create_layer_scale(dim, block.layer_scale, layout, device=device, dtype=dtype),
                    context.drop_path)


def create_block(block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None) -> nn.Module:
    """The module for one block: the mixer class decides the wiring."""
    return module_class("mixer", block.mixer).make_block(block, context, device=device, dtype=dtype)
