"""CrossViT: two ViT branches at two patch sizes, fused by cross-attention on their class tokens.

Paper: "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image Classification",
Chen, Fan and Panda, ICCV 2021, arXiv:2103.14899. Each branch embeds the image on its own
(a small-patch branch: narrow and shallow; a large-patch branch: wide and deep), with a class
token and a position embedding. A *multi-scale encoder* runs each branch's transformer blocks,
then fuses the branches (the paper's cross-attention fusion): each branch's class token is projected to the
other branch's width (LayerNorm, GELU, linear), put in front of the other branch's patch
tokens, and is the *only query* of one cross-attention layer over them (keys and values come
from every token, itself included; a residual, no MLP); the result is projected back and
replaces the class token. Attention costs one query row per branch instead of ``N x N``. After
``encoders`` multi-scale encoders each branch's class token is normalised, and both go to the
classifier.

Why the whole two-branch body is one block of the Arch (the ``crossvit`` mixer): the blocks of
an Arch pass one tensor between them, and the two branches hold token sets of different lengths
and widths, which no single tensor carries without padding. So the first block embeds the image
itself: the Arch's stem is ``image`` (it hands the image on), and no stem output could serve two
patch sizes anyway. Like GC ViT's stage body (:mod:`nas.blocks.gcvit`), the block's ``norm``,
``ffn`` and ``layer_scale`` apply to every branch layer, which are the plain ``attention``
kind's blocks (:mod:`nas.blocks.attention`). This keeps the Arch contract as it is: every
walk, build, cost, latency and supernet reader sees one ordinary block; the supernet shares
the body's tensors as per-branch prefixes, keys each branch layer's FFN by its path
(``ffns_by_path``), and the interleaved output below keeps the classifier's columns apart.

What the block puts out: both branches' normalised class tokens side by side, as a ``1 x 1``
map of the stage width, so the stage ``dim`` is the two branch widths together, split
``split[0] : split[1]`` (a split rather than two widths: the stage ``dim`` stays the one width
decision, so a space varies it freely, with no rule tying it to a sum). The two are
interleaved in groups (for ``split: [1, 2]``: one channel of the small branch, then two of the
large, and so on), so a narrower subnet's features are a prefix of a wider one's and the
supernet's prefix sharing of the classifier keeps each branch's columns apart. A linear
classifier over them is the paper's mean of two per-branch classifiers up to a permutation of
its inputs (the paper has one bias vector per branch: one ``num_classes`` vector more).

Details read from the official code (``IBM/CrossViT``, ``models/crossvit.py``): the second
(large-patch) branch sees the image resized (bicubic) to its own size, 224 px for a 240 px
input (``img_size=[240, 224]``), so both branches get whole patch grids; the fusion's
LayerNorm covers the whole concatenation; its attention has the other branch's heads.

Published figures (``spaces/zoo/crossvit_tiny.yaml``): the timm model card of
``crossvit_tiny_240`` (7.0M parameters, 1.6 GMACs at 240 px) and the paper (1.6 GFLOPs);
configuration ``crossvit_tiny_224`` of the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.attention import AttentionCfg, check_heads, split_heads
from nas.blocks.common import DropPath, factory_kwargs
from nas.blocks.contract import FitsMap, Prefix
from nas.blocks.quantizable import QuantizableAttention, SoftmaxAttention
from nas.blocks.registry import register
from nas.blocks.stems import PatchStem, PatchStemCfg
from nas.blocks.template import BlockContext, FusedBlock, create_block, create_norm
from nas.errors import ConfigError

__all__ = ["CrossVitCfg", "CrossAttention", "ClassTokenFusion", "BranchEmbedding", "MultiScaleEncoder", "CrossVit"]

_BRANCHES = 2
# Where the branch layers' attention sits: make_block gives Sequential(attention residual, FFN residual), or the
# attention residual alone when the FFN is 'none'.
_BRANCH_ATTENTION = ("encoders.*.branches.*.*.0.fn", "encoders.*.branches.*.*.fn")


@dataclass(frozen=True)
class CrossVitCfg(QuantizableAttention, Component):
    """A CrossViT body: two branches embed the image, ``encoders`` multi-scale encoders, both class tokens out.

    Per-branch fields hold two values: the small-patch branch first, then the large-patch one. The
    quantization options (:mod:`nas.blocks.quantizable`) apply to every attention of the body: the branch
    layers and both cross-attentions.

    Attributes:
        patches: patch size of each branch's embedding.
        split: how the stage width splits between the branches: branch ``i`` is
            ``dim * split[i] / sum(split)`` wide (CrossViT: ``[1, 2]``, the large-patch branch twice as wide).
        depths: transformer layers of each branch in every multi-scale encoder.
        heads: heads of each branch; the cross-attention into a branch's tokens uses that branch's heads.
        encoders: multi-scale encoders (each: the branches' layers, then one fusion).
        resize: side in pixels the image is resized to (bicubic) for the second branch; null: the image
            as it comes (CrossViT: 224 for its 240 px input). No larger than the image.
        qkv_bias: bias on every query, key and value projection.
    """

    layout = "nchw"  # it takes the image, and puts out a 1 x 1 map
    changes_width = True  # from the image's channels to the stage width
    reads_block = True  # the block's FFN and norm are checked where the branch layers use them
    sharing = {"embeds": Prefix(), "encoders": Prefix(), "norms": Prefix(),  # per-branch channels, cut as prefixes
               **{f"{path}.{name}": rule for path in _BRANCH_ATTENTION for name, rule in AttentionCfg.sharing.items()}}
    resolution_fields = {"resize": FitsMap()}
    ffns_by_path = True  # the layers before a position vary with the depths and the encoders
    holds_layers = True  # the whole body: its tensors are allocated only where the supernet's scan met it

    patches: tuple[int, ...] = (12, 16)
    split: tuple[int, ...] = (1, 2)
    depths: tuple[int, ...] = (1, 4)
    heads: tuple[int, ...] = (3, 3)
    encoders: int = 3
    resize: int | None = None
    qkv_bias: bool = True

    def widths(self, dim: int) -> tuple[int, ...]:
        """Each branch's width at stage width ``dim``."""
        return tuple(dim * share // sum(self.split) for share in self.split)

    def image_sizes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """The image size each branch embeds."""
        second = (height, width) if self.resize is None else (self.resize, self.resize)
        return (height, width), second

    def grids(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        """Each branch's patch grid."""
        return tuple((side_h // patch, side_w // patch)
                     for (side_h, side_w), patch in zip(self.image_sizes(height, width), self.patches, strict=True))

    def check(self, site: Site) -> None:
        # First: the proxy scale lowers resize one step at a time until this passes (resolution_fields).
        if self.resize is not None and not 1 <= self.resize <= min(site.height, site.width):
            raise ConfigError(f"must be within 1 and the {site.height}x{site.width} image, got {self.resize}",
                              path="resize")
        for name in ("patches", "split", "depths", "heads"):
            values = getattr(self, name)
            if len(values) != _BRANCHES:
                raise ConfigError(f"must hold {_BRANCHES} values (small-patch branch, large-patch branch), got "
                                  f"{list(values)}", path=name)
            for index, value in enumerate(values):
                if value < 1:
                    raise ConfigError(f"must be >= 1, got {value}", path=f"{name}[{index}]")
        if self.encoders < 1:
            raise ConfigError(f"must be >= 1, got {self.encoders}", path="encoders")
        if site.prefix_tokens:
            raise ConfigError("CrossViT embeds the image itself; it cannot follow class tokens (use the image stem)",
                              path="kind")
        if site.dim % sum(self.split):
            raise ConfigError(f"{' + '.join(map(str, self.split))} parts do not divide the stage width {site.dim}",
                              path="split")
        if site.block is not None:
            self._check_branch_layers(site.block, site)
        for index, (heads, width) in enumerate(zip(self.heads, self.widths(site.dim), strict=True)):
            try:
                check_heads(heads, width)
            except ConfigError as exc:
                raise ConfigError(f"branch {index}: {exc.message}", path=f"heads[{index}]") from None
        for index, (rows, cols) in enumerate(self.grids(site.height, site.width)):
            if rows < 1 or cols < 1:
                raise ConfigError(f"patch {self.patches[index]} is larger than the image branch {index} embeds",
                                  path=f"patches[{index}]")

    def _check_branch_layers(self, block: Block, site: Site) -> None:
        """The block's FFN and norm where the branch layers use them: on tokens with a class token in front."""
        for index, (width, (rows, cols)) in enumerate(zip(self.widths(site.dim), self.grids(site.height, site.width),
                                                          strict=True)):
            tokens = Site(width, width, rows, cols, None, 1, "nlc")
            for role, component in (("ffn", block.ffn), ("norm", block.norm)):
                try:
                    component.check(tokens)
                except ConfigError as exc:
                    raise ConfigError(f"branch {index}'s layers cannot use the block's {role} {component.kind!r}: "
                                      f"{exc.message}", path="kind") from None

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return 1, 1


class CrossAttention(nn.Module):
    """Multi-head attention in which only the first (class) token queries: ``(B, N, C) -> (B, 1, C)``.

    Keys and values come from every token, the class token included.
    """

    def __init__(self, dim: int, heads: int, options: CrossVitCfg, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=options.qkv_bias, **dd)
        self.key = nn.Linear(dim, dim, bias=options.qkv_bias, **dd)
        self.value = nn.Linear(dim, dim, bias=options.qkv_bias, **dd)
        self.attend = SoftmaxAttention(options, dim=dim, heads=heads, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = x[:, :1]
        query = split_heads(self.query(token), self.heads)
        key, value = split_heads(self.key(x), self.heads), split_heads(self.value(x), self.heads)
        return self.proj(self.attend(token, query, key, value))


def _projection(norm: Component, in_dim: int, dim: int, dd: dict[str, Any]) -> nn.Module:
    """CrossViT's ``f`` and ``g``: norm, GELU, linear from one branch's width to the other's."""
    return nn.Sequential(create_norm(norm, in_dim, "nlc", **dd), nn.GELU(), nn.Linear(in_dim, dim, **dd))


class ClassTokenFusion(nn.Module):
    """One branch's class token visits the other branch: ``(B, 1, C), (B, N, C') -> (B, 1, C)``.

    ``token = f(class)``; ``token + attention(norm([token; patches]))`` with ``token`` the only
    query; ``g`` of that back to the branch's width.
    """

    def __init__(self, dim: int, other_dim: int, other_heads: int, block: Block, options: CrossVitCfg,
                 drop_path: float, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.project = _projection(block.norm, dim, other_dim, dd)
        self.norm = create_norm(block.norm, other_dim, "nlc", **dd)
        self.attn = CrossAttention(other_dim, other_heads, options, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.revert = _projection(block.norm, other_dim, dim, dd)

    def forward(self, class_token: torch.Tensor, other_patches: torch.Tensor) -> torch.Tensor:
        token = self.project(class_token)
        token = token + self.drop_path(self.attn(self.norm(torch.cat([token, other_patches], dim=1))))
        return self.revert(token)


class BranchEmbedding(nn.Module):
    """The image resized to the branch's size where it differs, then the patch stem with class token and positions."""

    def __init__(self, in_dim: int, dim: int, patch: int, size: tuple[int, int], image: tuple[int, int], *,
                 device: Any = None, dtype: Any = None):
        super().__init__()
        self.size = None if size == image else size
        stem = PatchStemCfg(patch=patch, dim=dim, class_token=True, pos_embed=True)
        self.patch = PatchStem(stem, in_dim=in_dim, size=size, device=device, dtype=dtype)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            image = F.interpolate(image, size=self.size, mode="bicubic", align_corners=False)
        return self.patch(image)


class MultiScaleEncoder(nn.Module):
    """Each branch's transformer layers, then each branch's class token fused with the other's patch tokens."""

    def __init__(self, block: Block, cfg: CrossVitCfg, widths: tuple[int, ...], grids: tuple[tuple[int, int], ...],
                 drop_path: float, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.branches = nn.ModuleList()
        for width, grid, depth, heads in zip(widths, grids, cfg.depths, cfg.heads, strict=True):
            attention = AttentionCfg(heads=heads, qkv_bias=cfg.qkv_bias, clip_zeta=cfg.clip_zeta,
                                     clip_gamma=cfg.clip_gamma, gated=cfg.gated)  # the options reach every layer
            layer = Block(mixer=attention, ffn=block.ffn, norm=block.norm, layer_scale=block.layer_scale)
            context = BlockContext(in_dim=width, dim=width, size=grid, prefix_tokens=1, drop_path=drop_path)
            self.branches.append(nn.Sequential(*(create_block(layer, context, **dd) for _ in range(depth))))
        self.fusions = nn.ModuleList(
            ClassTokenFusion(width, other, other_heads, block, cfg, drop_path, **dd)
            for width, other, other_heads in zip(widths, widths[::-1], cfg.heads[::-1], strict=True))

    def forward(self, tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        tokens = [branch(x) for branch, x in zip(self.branches, tokens, strict=True)]
        return [torch.cat([fusion(own[:, :1], other[:, 1:]), own[:, 1:]], dim=1)
                for fusion, own, other in zip(self.fusions, tokens, tokens[::-1], strict=True)]


@register("mixer", "crossvit", CrossVitCfg)
class CrossVit(FusedBlock):
    """The image ``(B, C, H, W)`` to both branches' class tokens, interleaved: ``(B, dim, 1, 1)``.

    Every layer gets the block's drop-path rate (the builder's ramp is per block of the Arch).
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg: CrossVitCfg = block.mixer  # type: ignore[assignment]
        widths, image = cfg.widths(context.dim), context.size
        self.split = cfg.split
        self.groups = context.dim // sum(cfg.split)
        self.embeds = nn.ModuleList(
            BranchEmbedding(context.in_dim, width, patch, size, image, **dd)
            for width, patch, size in zip(widths, cfg.patches, cfg.image_sizes(*image), strict=True))
        self.encoders = nn.ModuleList(
            MultiScaleEncoder(block, cfg, widths, cfg.grids(*image), context.drop_path, **dd)
            for _ in range(cfg.encoders))
        self.norms = nn.ModuleList(create_norm(block.norm, width, "nlc", **dd) for width in widths)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        tokens = [embed(image) for embed in self.embeds]
        for encoder in self.encoders:
            tokens = encoder(tokens)
        classes = [norm(x[:, :1])[:, 0].unflatten(-1, (self.groups, share))
                   for norm, x, share in zip(self.norms, tokens, self.split, strict=True)]
        return torch.cat(classes, dim=-1).flatten(1)[:, :, None, None]
