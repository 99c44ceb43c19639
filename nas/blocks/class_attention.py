"""Class attention and the class token it queries with (CaiT's class-attention stage, as VOLO ends).

Paper: "Going deeper with Image Transformers", Touvron, Cord, Sablayrolles, Synnaeve and
Jégou, ICCV 2021, arXiv:2103.17239 (Sec. 3, "class-attention layers"); used at the end of
VOLO (arXiv:2106.13112, Sec. 3.3: two class-attention blocks after the transformer stage).
The class token joins late: the patch tokens are computed without it, then a few blocks
update the class token alone:

* in a *class-attention block* only the class token queries; keys and values come from
  every token (the class token included). Its residual update, then the FFN on it alone,
  change the class token and nothing else: the patch tokens pass through unchanged, and
  the FFN costs one token, not ``H*W`` of them. That wiring is not the MetaFormer template
  (whose FFN runs on every token), so the block owns it (:class:`~nas.blocks.FusedBlock`);
  the block's ``norm``, ``ffn`` and ``layer_scale`` (CaiT uses one; VOLO does not) apply;
* the ``class_token`` downsampler starts such a stage: it puts a learned class token in
  front of the tokens and changes nothing else, so the stage keeps the width coming in.

With several prefix tokens, the first one queries; the others pass unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.attention import check_heads, split_heads
from nas.blocks.common import DropPath, create_layer_scale, factory_kwargs
from nas.blocks.contract import Chunks
from nas.blocks.downsample import Downsample
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.template import BlockContext, FusedBlock, create_norm, ffn_residual
from nas.errors import ConfigError

__all__ = ["ClassTokenCfg", "ClassAttentionCfg", "ClassToken", "ClassAttention", "ClassAttentionBlock"]


@dataclass(frozen=True)
class ClassTokenCfg(Component):
    """A learned class token put in front of the tokens; width and size unchanged."""

    layout = "nlc"
    prefix_tokens = 1

    def check(self, site: Site) -> None:
        if site.prefix_tokens:
            raise ConfigError("the tokens already carry a class token", path="kind")
        if site.in_dim != site.dim:
            raise ConfigError(f"adds no projection, so the stage must keep the width coming in ({site.in_dim}), "
                              f"got {site.dim}", path="kind")


@dataclass(frozen=True)
class ClassAttentionCfg(QuantizableAttention, Component):
    """A class-attention block: the class token queries every token; only the class token changes.

    Takes the quantization options of every softmax attention kind (:mod:`nas.blocks.quantizable`); the gate
    reads the class token.

    Attributes:
        heads: number of heads; must divide the stage width.
        qkv_bias: bias on the query and key/value projections (VOLO has none; CaiT has one).
    """

    layout = "nlc"
    sharing = {"attn.kv": Chunks(2)}  # rows [k; v]

    heads: int = 8
    qkv_bias: bool = False

    def check(self, site: Site) -> None:
        check_heads(self.heads, site.dim)
        if not site.prefix_tokens:
            raise ConfigError("class attention needs a class token to query with (a class_token downsampler "
                              "before the stage, or a stem with class_token)", path="kind")


@register("downsample", "class_token", ClassTokenCfg)
class ClassToken(Downsample):
    def __init__(self, cfg: ClassTokenCfg, *, in_dim: int, dim: int, size: tuple[int, int], device: Any = None,
                 dtype: Any = None):
        super().__init__()
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim, **factory_kwargs(device, dtype)))
        nn.init.trunc_normal_(self.class_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)


class ClassAttention(nn.Module):
    """``(B, N, C) -> (B, 1, C)``: the first token's query against every token's key and value."""

    def __init__(self, cfg: ClassAttentionCfg, dim: int, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = cfg.heads
        self.q = nn.Linear(dim, dim, bias=cfg.qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=cfg.qkv_bias, **dd)
        self.attend = SoftmaxAttention(cfg, dim=dim, heads=cfg.heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x[:, :1]
        query = split_heads(self.q(token), self.heads)
        key, value = (split_heads(part, self.heads) for part in self.kv(x).chunk(2, dim=-1))
        return self.proj(self.attend(token, query, key, value))


@register("mixer", "class_attention", ClassAttentionCfg)
class ClassAttentionBlock(FusedBlock):
    """``c = t[0] + ls(attn(norm(t)))``, then ``c + ls(ffn(norm(c)))``; the other tokens pass unchanged."""

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: ClassAttentionCfg = block.mixer  # type: ignore[assignment]
        dim = context.dim
        self.norm = create_norm(block.norm, dim, "nlc", **dd)
        self.attn = ClassAttention(cfg, dim, **dd)
        self.scale = create_layer_scale(dim, block.layer_scale, "nlc", **dd)
        self.drop_path = DropPath(context.drop_path) if context.drop_path > 0 else nn.Identity()
        self.ffn = ffn_residual(block, context, "nlc", **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x[:, :1] + self.drop_path(self.scale(self.attn(self.norm(x))))
        return torch.cat([self.ffn(token), x[:, 1:]], dim=1)
