"""Blocks: token mixers, FFNs, norms, stems, downsamplers and heads, each registered by kind.

Registration is explicit: importing a module below registers its kinds. Add a
new family by writing one module and listing it here.
"""

from __future__ import annotations

from nas.blocks import (  # noqa: F401  (importing a module registers its kinds)
    affnet,
    attention,
    class_attention,
    convit,
    convnext,
    crossvit,
    cvt,
    davit,
    dinat,
    downsample,
    efficientformer,
    efficientvit,
    ffn,
    gcvit,
    heads,
    maxvit,
    mbconv,
    moe,
    norms,
    pooling,
    pvt,
    resnet,
    smt,
    spectformer,
    stems,
    swin,
    t2t,
    uniformer,
    van,
    vanillanet,
    volo,
    wavemix,
)
from nas.blocks.common import ConvNorm, DropPath, LayerNorm2d, LayerScale, Mlp, SqueezeExcite
from nas.blocks.contract import Chunks, FitsMap, Prefix, RelativeTable
from nas.blocks.registry import list_registered, module_class, register
from nas.blocks.template import BlockContext, FusedBlock, TokenMixer, create_block

__all__ = [
    "BlockContext",
    "Chunks",
    "ConvNorm",
    "DropPath",
    "FitsMap",
    "FusedBlock",
    "LayerNorm2d",
    "LayerScale",
    "Mlp",
    "Prefix",
    "RelativeTable",
    "TokenMixer",
    "create_block",
    "list_registered",
    "module_class",
    "register",
    "SqueezeExcite",
]
