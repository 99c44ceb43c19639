"""EfficientViT (MSRA): the sandwich block with cascaded group attention, and its downsampler.

Paper: "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group
Attention", Liu et al., CVPR 2023, arXiv:2305.07027. Structure read from the
official code (microsoft/Cream, ``EfficientViT/classification/model/efficientvit.py``
and ``build.py``) and timm's ``efficientvit_msra.py``.

* ``efficientvit`` (mixer, a whole block): ``x += DW(x); x += FFN(x); x += CGA(x);
  x += DW(x); x += FFN(x)``, where DW is a depthwise 3x3 conv-BN and FFN is the
  block's ``ffn`` (EfficientViT's: ``mlp`` with ratio 2, ReLU, no bias, BatchNorm).
* ``efficientvit_merging`` (downsample): DW and FFN residuals at the input width,
  the patch merging (1x1 conv x4, ReLU, depthwise 3x3/2, ReLU, squeeze-excite,
  1x1 conv, each conv with BN), then DW and FFN residuals at the output width.

Published parameters and MACs (spaces/zoo/efficientvit_m*.yaml): the official
repository's ``EfficientViT/classification/README.md`` (model zoo table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from nas.arch import Block, Component, Site
from nas.blocks.common import ConvNorm, Mlp, SqueezeExcite, create_layer_scale, factory_kwargs
from nas.blocks.contract import Prefix
from nas.blocks.downsample import Downsample
from nas.blocks.efficientformer import AttentionBias
from nas.blocks.ffn import hidden_width
from nas.blocks.quantizable import OPTIONS_OFF, QuantizableAttention, create_gate, create_product
from nas.blocks.registry import register
from nas.blocks.stems import conv_out
from nas.blocks.template import BlockContext, FusedBlock, Residual, create_ffn
from nas.errors import ConfigError

__all__ = [
    "CascadedGroupAttention",
    "EfficientVitBlock",
    "EfficientVitCfg",
    "EfficientVitMerging",
    "EfficientVitMergingCfg",
    "LocalWindowAttention",
]

_SE_DIVISOR = 8  # squeeze-excite widths are rounded to multiples of 8 (timm's make_divisible)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ConfigError(f"must be > 0, got {value}", path=name)


@dataclass(frozen=True)
class EfficientVitCfg(QuantizableAttention, Component):
    """EfficientViT's sandwich block around cascaded group attention.

    Each head sees its own ``dim / heads`` slice of the channels plus the
    previous head's output, so each head's value width is ``dim / heads``
    (the official code derives ``attn_ratio = dim / (key_dim * heads)`` for
    exactly this); there is no separate value-width field.

    Attributes:
        heads: number of heads; must divide the stage width.
        key_dim: width of each head's queries and keys.
        kernels: the depthwise conv kernel on each head's queries, one per head (odd).
        window: attention runs in ``window x window`` windows when the map is larger
            in either direction (padded to a multiple), else over the whole map.
        clip_zeta, clip_gamma, gated: the attention options (:class:`~nas.blocks.quantizable.QuantizableAttention`);
            head ``i``'s gate reads that head's input (its channel slice plus the previous head's output).
    """

    layout = "nchw"

    reads_block: ClassVar[bool] = True  # check: the block's norm must be none
    width_fields = ("key_dim",)

    heads: int = 4
    key_dim: int = 16
    kernels: tuple[int, ...] = (5, 5, 5, 5)
    window: int = 7

    def check(self, site: Site) -> None:
        for name in ("heads", "key_dim", "window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", path=name)
        if site.dim % self.heads:
            raise ConfigError(f"{self.heads} does not divide dim {site.dim}", path="heads")
        if len(self.kernels) != self.heads:
            raise ConfigError(f"needs one kernel per head ({self.heads}), got {len(self.kernels)}", path="kernels")
        for index, kernel in enumerate(self.kernels):
            if kernel < 1 or kernel % 2 == 0:
                raise ConfigError(f"must be an odd number >= 1, got {kernel}", path=f"kernels[{index}]")
        if site.prefix_tokens:
            raise ConfigError("works on a feature map; a class token (stem.class_token) is not supported",
                              path="kind")
        block = site.block
        if block is not None and block.norm.kind != "none":
            raise ConfigError(f"the EfficientViT block normalises inside each branch (BatchNorm); "
                              f"block norm must be 'none', got {block.norm.kind!r}", path="kind")


@dataclass(frozen=True)
class EfficientVitMergingCfg(Component):
    """EfficientViT's downsample: DW/FFN residuals, patch merging, DW/FFN residuals.

    Attributes:
        expansion: the patch merging's hidden width is ``expansion * in_dim``.
        se_ratio: squeeze-excite width as a fraction of the hidden width (0: no squeeze-excite).
        ffn_ratio: hidden width of the FFNs, as a multiple of their input width.
        stride: stride of the depthwise 3x3 conv.
    """

    layout = "nchw"
    # expansion x in_dim hidden channels in the merging, ffn_ratio x width in the FFNs: independent channels
    sharing = {"pre": Prefix(), "merge": Prefix(), "post": Prefix()}

    expansion: float = 4.0
    se_ratio: float = 0.25
    ffn_ratio: float = 2.0
    stride: int = 2

    def check(self, site: Site) -> None:
        _check_positive(expansion=self.expansion, ffn_ratio=self.ffn_ratio)
        if self.stride < 1:
            raise ConfigError(f"must be >= 1, got {self.stride}", path="stride")
        if not 0 <= self.se_ratio <= 1:
            raise ConfigError(f"must be in [0, 1], got {self.se_ratio}", path="se_ratio")
        if site.prefix_tokens:
            raise ConfigError("cannot downsample a feature map that carries class tokens", path="kind")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_out(height, 3, self.stride, 1), conv_out(width, 3, self.stride, 1)


class CascadedGroupAttention(nn.Module):
    """Attention whose heads each see one slice of the channels plus the previous head's output.

    Head ``i`` projects ``slice_i + out_{i-1}`` (1x1 conv-BN) to its query, key
    and value, runs a depthwise conv-BN over its query, and attends over the
    ``height x width`` window with a learned bias per offset. The concatenated
    outputs go through ReLU and a 1x1 conv-BN. Input and output ``(B, C, h, w)``.
    """

    def __init__(self, dim: int, heads: int, key_dim: int, kernels: tuple[int, ...], size: tuple[int, int], *,
                 options: QuantizableAttention = OPTIONS_OFF, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        self.heads = heads
        value_dim = dim // heads
        self.split = (key_dim, key_dim, value_dim)
        self.scale = key_dim ** -0.5
        self.qkvs = nn.ModuleList(ConvNorm(value_dim, 2 * key_dim + value_dim, 1, **dd) for _ in range(heads))
        self.query_convs = nn.ModuleList(ConvNorm(key_dim, key_dim, kernel, groups=key_dim, **dd) for kernel in kernels)
        self.bias = AttentionBias(heads, size, **dd)
        self.product = create_product(options)
        self.gates = nn.ModuleList(create_gate(options, value_dim, 1, **dd) for _ in range(heads))  # one per head
        self.proj = nn.Sequential(nn.ReLU(), ConvNorm(dim, dim, 1, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        biases = self.bias().to(x.dtype)
        outputs = []
        feature = x.new_zeros(())
        for index, (chunk, qkv, query_conv, gate) in enumerate(zip(x.chunk(self.heads, dim=1), self.qkvs,
                                                                   self.query_convs, self.gates, strict=True)):
            head_input = chunk + feature
            query, key, value = qkv(head_input).split(self.split, dim=1)
            query = query_conv(query)
            attended = self.product(
                query.flatten(2).transpose(1, 2), key.flatten(2).transpose(1, 2), value.flatten(2).transpose(1, 2),
                attn_mask=biases[index], scale=self.scale)
            attended = gate(head_input.flatten(2).transpose(1, 2), attended)
            feature = attended.transpose(1, 2).reshape(batch, -1, height, width)
            outputs.append(feature)
        return self.proj(torch.cat(outputs, dim=1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention in ``window x window`` windows, or over the whole map if it fits one.

    A map larger than the window in either direction is zero-padded at the
    bottom and right to a multiple of the window, split into windows, and
    cropped back afterwards, as in the official code. Input and output ``(B, C, H, W)``.
    """

    def __init__(self, cfg: EfficientVitCfg, dim: int, size: tuple[int, int], *, device: Any = None,
                 dtype: Any = None):
        super().__init__()
        height, width = size
        windowed = height > cfg.window or width > cfg.window
        self.window = (cfg.window, cfg.window) if windowed else (height, width)
        self.pad = (-height % self.window[0], -width % self.window[1])
        self.attn = CascadedGroupAttention(dim, cfg.heads, cfg.key_dim, cfg.kernels, self.window, options=cfg,
                                           device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        (window_h, window_w), (pad_h, pad_w) = self.window, self.pad
        x = F.pad(x, (0, pad_w, 0, pad_h))
        rows, cols = (height + pad_h) // window_h, (width + pad_w) // window_w
        x = x.view(batch, channels, rows, window_h, cols, window_w).permute(0, 2, 4, 1, 3, 5)
        x = self.attn(x.reshape(batch * rows * cols, channels, window_h, window_w))
        x = x.view(batch, rows, cols, channels, window_h, window_w).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(batch, channels, height + pad_h, width + pad_w)[:, :, :height, :width]


def _depthwise_residual(dim: int, layer_scale: float | None, drop_path: float, dd: dict[str, Any]) -> nn.Module:
    """``x + DWConv3x3-BN(x)``: the local mixing of EfficientViT's sandwich."""
    return Residual(nn.Identity(), ConvNorm(dim, dim, 3, groups=dim, **dd),
                    create_layer_scale(dim, layer_scale, "nchw", **dd), drop_path)


@register("mixer", "efficientvit", EfficientVitCfg)
class EfficientVitBlock(FusedBlock):
    """The sandwich: DW, FFN, cascaded group attention, DW, FFN, each a residual branch.

    Design note: one attention layer between two FFNs (instead of one each, as
    in a ViT block) because the attention's memory traffic, not its MACs,
    dominates the latency (paper, Sec. 3.1). The block's ``layer_scale``, if
    set, scales all five branches; the paper has none. The official code
    zero-initialises the last BatchNorm of each branch; this module keeps
    PyTorch's default initialisation.
    """

    def __init__(self, block: Block, context: BlockContext, *, device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        cfg = cast(EfficientVitCfg, block.mixer)  # the registry dispatched on its kind
        dim, drop_path = context.dim, context.drop_path

        def ffn_residual() -> nn.Module:
            if block.ffn.kind == "none":
                return nn.Identity()
            return Residual(nn.Identity(), create_ffn(block.ffn, dim, "nchw", size=context.size, **dd),
                            create_layer_scale(dim, block.layer_scale, "nchw", **dd), drop_path)

        self.dw0 = _depthwise_residual(dim, block.layer_scale, drop_path, dd)
        self.ffn0 = ffn_residual()
        self.mixer = Residual(nn.Identity(), LocalWindowAttention(cfg, dim, context.size, **dd),
                              create_layer_scale(dim, block.layer_scale, "nchw", **dd), drop_path)
        self.dw1 = _depthwise_residual(dim, block.layer_scale, drop_path, dd)
        self.ffn1 = ffn_residual()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _se_width(channels: int, ratio: float) -> int:
    """timm's ``make_divisible(channels * ratio, 8, round_limit=0)``, as the official code uses."""
    return max(_SE_DIVISOR, int(channels * ratio + _SE_DIVISOR / 2) // _SE_DIVISOR * _SE_DIVISOR)


@register("downsample", "efficientvit_merging", EfficientVitMergingCfg)
class EfficientVitMerging(Downsample):
    """DW/FFN residuals at ``in_dim``, patch merging to ``dim``, DW/FFN residuals at ``dim``."""

    def __init__(self, cfg: EfficientVitMergingCfg, *, in_dim: int, dim: int, size: tuple[int, int],
                 device: Any = None, dtype: Any = None):
        super().__init__()
        dd = factory_kwargs(device, dtype)
        hidden = hidden_width(in_dim, cfg.expansion)
        self.pre = self._local(in_dim, cfg.ffn_ratio, dd)
        self.merge = nn.Sequential(
            ConvNorm(in_dim, hidden, 1, act="relu", **dd),
            ConvNorm(hidden, hidden, 3, cfg.stride, groups=hidden, act="relu", **dd),
            SqueezeExcite(hidden, _se_width(hidden, cfg.se_ratio), "relu", **dd) if cfg.se_ratio else nn.Identity(),
            ConvNorm(hidden, dim, 1, **dd),
        )
        self.post = self._local(dim, cfg.ffn_ratio, dd)

    @staticmethod
    def _local(dim: int, ffn_ratio: float, dd: dict[str, Any]) -> nn.Module:
        ffn = Mlp(dim, hidden_width(dim, ffn_ratio), "nchw", act="relu", bias=False, norm=True, **dd)
        return nn.Sequential(_depthwise_residual(dim, None, 0.0, dd),
                             Residual(nn.Identity(), ffn, nn.Identity()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.merge(self.pre(x)))
