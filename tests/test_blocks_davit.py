"""DaViT (arXiv:2204.03645): channel group attention, the windowed spatial attention and the dual attention
block with its conv positional encodings, checked against naive references on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nas.arch import Block, parse_component
from nas.blocks.davit import (
    ChannelAttention,
    ChannelAttentionCfg,
    DualAttentionBlock,
    DualChannelCfg,
    DualSpatialCfg,
    PlainWindowAttention,
)
from nas.blocks.template import BlockContext
from nas.space import load_space
from tests.conftest import randomise, seeded_generator


def _reference_channel_attention(mixer: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Channel by channel: channel i of a group attends to the channels j of its group, with the score
    ``<q[:, i], k[:, j]> / sqrt(C_g)`` taken over every token, and mixes their value columns."""
    dim = x.shape[-1]
    group_dim = dim // mixer.groups
    query, key, value = mixer.qkv(x).split(dim, dim=-1)
    out = torch.empty_like(x)
    for channel in range(dim):
        group = slice(channel // group_dim * group_dim, (channel // group_dim + 1) * group_dim)
        scores = torch.einsum("bn,bnj->bj", query[:, :, channel], key[:, :, group]) / group_dim ** 0.5
        out[:, :, channel] = torch.einsum("bj,bnj->bn", torch.softmax(scores, dim=-1), value[:, :, group])
    return mixer.proj(out)


def test_channel_attention_matches_channel_by_channel_reference() -> None:
    mixer = randomise(ChannelAttention(ChannelAttentionCfg(groups=3), dim=12, size=(4, 5)))
    x = torch.randn(2, 20, 12, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), _reference_channel_attention(mixer, x))


def test_channel_attention_attends_over_channels_not_tokens() -> None:
    # Tokens are only summed over inside a score, so permuting the tokens permutes the output the same way
    # (a global mixer with no notion of position), and one token reaches every token's output.
    mixer = randomise(ChannelAttention(ChannelAttentionCfg(groups=2), dim=8, size=(4, 4)))
    x = torch.randn(2, 16, 8, generator=seeded_generator())
    tokens = torch.randperm(16, generator=seeded_generator())
    with torch.no_grad():
        out = mixer(x)
        torch.testing.assert_close(mixer(x[:, tokens]), out[:, tokens])
        moved = x.clone()
        moved[:, 0] += 5.0  # one token changes every token's output: every score sees all positions
        assert not torch.isclose(mixer(moved)[:, 1:], out[:, 1:]).any(dim=-1).all()


def test_channel_attention_mixes_channels_of_a_token_not_tokens() -> None:
    # With queries and keys zeroed, every score is equal: channel attention then averages each token's own
    # value channels of its group (token attention would average the values of all tokens instead).
    mixer = randomise(ChannelAttention(ChannelAttentionCfg(groups=2), dim=8, size=(4, 4)))
    with torch.no_grad():
        mixer.qkv.weight[:16] = 0.0
        mixer.qkv.bias[:16] = 0.0
        x = torch.randn(2, 16, 8, generator=seeded_generator())
        value = mixer.qkv(x)[..., 16:]
        expected = mixer.proj(value.unflatten(-1, (2, 4)).mean(-1, keepdim=True).expand(-1, -1, -1, 4).flatten(-2))
        torch.testing.assert_close(mixer(x), expected)


def _reference_window_attention(mixer: PlainWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Token by token: attention over the tokens of the same window, no position bias."""
    height, width = mixer.size
    window, heads = mixer.window, mixer.heads
    dim = x.shape[-1]
    head_dim = dim // heads
    query, key, value = mixer.qkv(x).split(dim, dim=-1)
    rows, cols = torch.arange(height * width) // width, torch.arange(height * width) % width
    out = torch.empty_like(x)
    for token in range(height * width):
        keys = torch.nonzero((rows // window == rows[token] // window) & (cols // window == cols[token] // window))
        keys = keys.flatten()
        for head in range(heads):
            span = slice(head * head_dim, (head + 1) * head_dim)
            scores = (query[:, token, None, span] @ key[:, keys, span].transpose(1, 2)).squeeze(1) / head_dim ** 0.5
            out[:, token, span] = (torch.softmax(scores, dim=-1)[:, None] @ value[:, keys, span]).squeeze(1)
    return mixer.proj(out)


def test_spatial_window_attention_matches_token_by_token_reference() -> None:
    mixer = randomise(PlainWindowAttention(8, 2, 4, (8, 12), qkv_bias=True))
    x = torch.randn(2, 96, 8, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), _reference_window_attention(mixer, x))


def _depthwise(conv: nn.Conv2d, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The CPE's convolution, written out: each channel convolved with its own 3x3 kernel, zero padded."""
    batch, _, channels = x.shape
    grid = nn.functional.pad(x.transpose(1, 2).reshape(batch, channels, *size), (1, 1, 1, 1))
    out = conv.bias.view(1, channels, 1, 1).expand(batch, channels, *size).clone()
    for dy in range(3):
        for dx in range(3):
            out = out + conv.weight[:, 0, dy, dx].view(1, channels, 1, 1) * grid[:, :, dy:dy + size[0], dx:dx + size[1]]
    return out.flatten(2).transpose(1, 2)


@pytest.mark.parametrize("mixer", [DualSpatialCfg(heads=2, window=4), DualChannelCfg(groups=2)])
def test_dual_block_puts_a_cpe_before_each_half_outside_the_norm(mixer) -> None:
    block = Block(mixer=mixer, ffn=parse_component("ffn", {"kind": "mlp", "ratio": 2}, "ffn"),
                  norm=parse_component("norm", "layernorm", "norm"))
    size = (8, 8)
    module = randomise(DualAttentionBlock(block, BlockContext(in_dim=8, dim=8, size=size)))
    x = torch.randn(2, 64, 8, generator=seeded_generator())
    attn, (ffn_cpe, ffn) = module.attn, module.ffn
    with torch.no_grad():
        expected = x + _depthwise(module.attn_cpe.conv, x, size)
        expected = expected + attn.fn(attn.norm(expected))
        expected = expected + _depthwise(ffn_cpe.conv, expected, size)
        expected = expected + ffn.fn(ffn.norm(expected))
        torch.testing.assert_close(module(x), expected)


def test_metaformer_samples_draw_both_dual_attention_blocks() -> None:
    space = load_space("metaformer")
    seen: set[str] = set()
    for vector in space.sample_vectors(np.random.default_rng(0), 200):
        seen |= {block.mixer.kind for stage in space.decode(vector).stages for block in stage.blocks}
    assert {"davit_spatial", "davit_channel"} <= seen
