"""UniFormer's relation aggregators (MHRA) with the dynamic position embedding.

Paper: "UniFormer: Unifying Convolution and Self-attention for Visual Recognition",
Li et al., TPAMI 2023, arXiv:2201.09450 (the image backbone). A UniFormer block is

    x = x + DPE(x)              # dynamic position embedding: a depthwise 3x3 conv
    x = x + MHRA(norm(x))       # multi-head relation aggregator
    x = x + FFN(norm(x))

with a *local* MHRA in the shallow stages, where tokens mostly relate to their
neighbours, and a *global* one in the deep stages. The local MHRA learns a
relation only within a small neighbourhood, so it is a convolution: 1x1,
depthwise 5x5, 1x1, with BatchNorm as the block's norm. The global MHRA is
multi-head self-attention over all tokens, with LayerNorm. The DPE is a
zero-padded depthwise convolution before each block; it encodes positions from
the content and works at any resolution.
Details read from the official code (``Sense-X/UniFormer``,
``image_classification/models/uniformer.py``): every convolution has a bias and
the DPE kernel is 3.

Both MHRAs are :class:`~nas.blocks.template.TokenMixer`\\ s whose block gets the
DPE in front (:func:`with_position_conv`); the global one reuses
:class:`~nas.blocks.attention.Attention`. The patch embeddings are existing
kinds: the ``patch`` stem (4x4, LayerNorm) and the ``conv`` downsampler
(2x2 stride 2, LayerNorm after); the head is ``linear`` with BatchNorm.

Published figures used by the zoo (``spaces/zoo/uniformer_s.yaml``): UniFormer-S
has 22M parameters and 3.6 GFLOPs at 224 px (the official
``image_classification/README.md`` model table), 21.5M parameters to one decimal
(``Westlake-AI/openmixup``, ``configs/classification/imagenet/uniformer/README.md``,
the converted official model). The official repository counts FLOPs with fvcore,
one multiply-add per FLOP, attention matmuls included, as ``nas.cost`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Layout, Site
from nas.blocks.attention import Attention, AttentionCfg
from nas.blocks.common import ToNCHW, ToNLC, factory_kwargs
from nas.blocks.registry import register
from nas.blocks.template import BlockContext, TokenMixer
from nas.errors import ConfigError

__all__ = ["LocalMhraCfg", "GlobalMhraCfg", "PositionConv", "with_position_conv", "LocalMhra", "GlobalMhra"]


def _check_kernel(kernel: int, path: str, *, allow_zero: bool = False) -> None:
    if kernel == 0 and allow_zero:
        return
    if kernel < 1 or kernel % 2 == 0:
        rule = "an odd number >= 1 (or 0 for none)" if allow_zero else "an odd number >= 1"
        raise ConfigError(f"must be {rule}, got {kernel}", path=path)


@dataclass(frozen=True)
class LocalMhraCfg(Component):
    """Local relation aggregator: 1x1 conv, depthwise ``kernel x kernel`` conv, 1x1 conv; DPE before the block.

    Attributes:
        kernel: the depthwise kernel, the neighbourhood each token relates to (UniFormer uses 5).
        pos_kernel: kernel of the dynamic position embedding; 0 leaves it out.
    """

    layout = "nchw"

    kernel: int = 5
    pos_kernel: int = 3

    def check(self, site: Site) -> None:
        _check_kernel(self.kernel, "kernel")
        _check_kernel(self.pos_kernel, "pos_kernel", allow_zero=True)


@dataclass(frozen=True)
class GlobalMhraCfg(AttentionCfg):
    """Global relation aggregator: the ``attention`` kind's self-attention, with a DPE before the block.

    Attributes:
        heads: number of heads; must divide the stage width (UniFormer uses width / 64).
        qkv_bias: bias on the fused query/key/value projection (UniFormer uses one).
        pos_kernel: kernel of the dynamic position embedding; 0 leaves it out.
    """

    pos_kernel: int = 3

    def check(self, site: Site) -> None:
        super().check(site)
        _check_kernel(self.pos_kernel, "pos_kernel", allow_zero=True)
        if self.pos_kernel and site.prefix_tokens:
            raise ConfigError("the position convolution needs a feature map, but the tokens carry a class token; "
                              "use pos_kernel 0", path="pos_kernel")


class PositionConv(nn.Module):
    """``x + dwconv(x)``: the dynamic position embedding, on a map or on its tokens."""

    def __init__(self, dim: int, kernel: int, layout: Layout, *, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim, **factory_kwargs(device, dtype))
        self.conv = conv if layout == "nchw" else nn.Sequential(ToNCHW(size), conv, ToNLC())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def with_position_conv(body: nn.Module, block: Block, context: BlockContext, *, device: Any = None,
                       dtype: Any = None) -> nn.Module:
    """``body`` (the block's residual units) after the block's position convolution, if it has one."""
    kernel = block.mixer.pos_kernel  # type: ignore[attr-defined]
    if not kernel:
        return body
    position = PositionConv(context.dim, kernel, block.mixer.layout, size=context.size, device=device, dtype=dtype)
    return nn.Sequential(position, body)


@register("mixer", "local_mhra", LocalMhraCfg)
class LocalMhra(TokenMixer):
    """``conv2(dwconv(conv1(x)))``: a learnable relation within each ``kernel x kernel`` neighbourhood."""

    def __init__(self, cfg: LocalMhraCfg, *, dim: int, size: tuple[int, int], prefix_tokens: int = 0,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.conv1 = nn.Conv2d(dim, dim, 1, **dd)
        self.aggregate = nn.Conv2d(dim, dim, cfg.kernel, padding=cfg.kernel // 2, groups=dim, **dd)
        self.conv2 = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.aggregate(self.conv1(x)))

    @classmethod
    def make_block(cls, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None) -> nn.Module:
        body = super().make_block(block, context, device=device, dtype=dtype)
        return with_position_conv(body, block, context, device=device, dtype=dtype)


@register("mixer", "global_mhra", GlobalMhraCfg)
class GlobalMhra(Attention):
    """Self-attention over every token (:class:`~nas.blocks.attention.Attention`), in a block with a DPE."""

    @classmethod
    def make_block(cls, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None) -> nn.Module:
        body = super().make_block(block, context, device=device, dtype=dtype)
        return with_position_conv(body, block, context, device=device, dtype=dtype)
