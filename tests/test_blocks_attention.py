"""The attention family: global attention (DeiT), shifted-window attention and patch merging (Swin),
spatial-reduction attention (PVT), each checked against a naive reference on tiny inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.arch import Site
from nas.blocks.attention import Attention, AttentionCfg
from nas.blocks.downsample import ConvDownsample, ConvDownsampleCfg
from nas.blocks.pvt import SpatialReductionAttention, SpatialReductionAttentionCfg
from nas.blocks.swin import (
    PatchMerging,
    PatchMergingCfg,
    WindowAttention,
    WindowAttentionCfg,
    relative_position_index,
    shifted_window_mask,
)
from nas.errors import ConfigError
from tests.conftest import randomise, seeded_generator


def _softmax_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       bias: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Textbook attention for one head: ``softmax(q k^T / sqrt(d) + bias) v``."""
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5 + bias
    return scores.softmax(-1) @ value


# ---------------------------------------------------------------------------
# attention (ViT / DeiT)


def test_attention_matches_reference_with_class_token() -> None:
    dim, heads, tokens = 12, 3, 1 + 4 * 4
    mixer = randomise(Attention(AttentionCfg(heads=heads), dim=dim, size=(4, 4), prefix_tokens=1))
    x = torch.randn(2, tokens, dim, generator=seeded_generator())
    query, key, value = mixer.qkv(x).split(dim, dim=-1)
    head_dim = dim // heads
    outs = [_softmax_attention(*(t[..., h * head_dim:(h + 1) * head_dim] for t in (query, key, value)))
            for h in range(heads)]
    expected = mixer.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(mixer(x), expected)


def test_attention_qkv_bias_option() -> None:
    without = Attention(AttentionCfg(heads=2, qkv_bias=False), dim=8, size=(2, 2))
    assert without.qkv.bias is None
    assert Attention(AttentionCfg(heads=2), dim=8, size=(2, 2)).qkv.bias is not None


@pytest.mark.parametrize("cfg", [AttentionCfg(heads=5), WindowAttentionCfg(heads=5, window=4),
                                 SpatialReductionAttentionCfg(heads=5)])
def test_heads_must_divide_dim(cfg: object) -> None:
    with pytest.raises(ConfigError, match="5 does not divide dim 32") as caught:
        cfg.check(Site(32, 32, 8, 8))  # type: ignore[attr-defined]
    assert caught.value.path == "heads"


@pytest.fixture
def tiny_arch_text() -> str:
    from tests.conftest import TINY_DIR

    return (TINY_DIR / "mixer_attention.yaml").read_text()


def test_heads_error_carries_the_field_path(tiny_arch_text: str) -> None:
    text = tiny_arch_text.replace("heads: 2", "heads: 5")
    with pytest.raises(ConfigError) as caught:
        nas.Arch.from_yaml(text)
    assert "stages[0].blocks[0].mixer.heads: 5 does not divide dim 32" in str(caught.value)


# ---------------------------------------------------------------------------
# Swin: relative position index, shift mask, window attention, patch merging


def test_relative_position_index() -> None:
    window = 3
    index = relative_position_index(window)
    assert index.shape == (9, 9)
    centre = (window - 1) * (2 * window - 1) + window - 1
    assert torch.all(index.diagonal() == centre)
    assert torch.equal(index + index.T, torch.full_like(index, 2 * centre))  # offset (a - b) mirrors (b - a)
    assert sorted(index.unique().tolist()) == list(range((2 * window - 1) ** 2))  # every table row is used
    # token 0 is the window's top-left corner, token 8 its bottom-right: offset (-2, -2) is table row 0
    assert index[0, 8] == 0 and index[8, 0] == (2 * window - 1) ** 2 - 1


def test_shift_mask_is_zero_without_shift_and_blocks_only_the_wrapped_windows() -> None:
    assert torch.all(shifted_window_mask((8, 8), 4, 0) == 0)
    mask = shifted_window_mask((8, 8), 4, 2)
    assert mask.shape == (4, 1, 16, 16)
    blocked = torch.isinf(mask).squeeze(1)
    assert not blocked[0].any()  # the top-left window holds no wrapped tokens
    assert blocked[1].any() and blocked[2].any() and blocked[3].any()
    assert not blocked.diagonal(dim1=-2, dim2=-1).any()  # a token always sees itself


def _reference_window_attention(mixer: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Token by token: a token attends to the tokens of its (shifted) window that the shift did not wrap."""
    height, width = mixer.size
    window, shift, heads = mixer.window, mixer.shift, mixer.heads
    dim = x.shape[-1]
    head_dim = dim // heads
    query, key, value = mixer.qkv(x).split(dim, dim=-1)
    table = mixer.relative_position_bias
    rows = torch.arange(height * width) // width
    cols = torch.arange(height * width) % width
    rolled_rows, rolled_cols = (rows - shift) % height, (cols - shift) % width
    out = torch.empty_like(x)
    for token in range(height * width):
        same_window = (rolled_rows // window == rolled_rows[token] // window) & (
            rolled_cols // window == rolled_cols[token] // window)
        not_wrapped = (rows - rows[token] == rolled_rows - rolled_rows[token]) & (
            cols - cols[token] == rolled_cols - rolled_cols[token])
        keys = torch.nonzero(same_window & not_wrapped).flatten()
        offset = (rows[token] - rows[keys] + window - 1) * (2 * window - 1) + cols[token] - cols[keys] + window - 1
        parts = []
        for head in range(heads):
            span = slice(head * head_dim, (head + 1) * head_dim)
            parts.append(_softmax_attention(query[:, token:token + 1, span], key[:, keys, span],
                                            value[:, keys, span], table[offset, head]))
        out[:, token:token + 1] = torch.cat(parts, dim=-1)
    return mixer.proj(out)


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_token_by_token_reference(shift: int) -> None:
    cfg = WindowAttentionCfg(heads=2, window=4, shift=shift)
    mixer = randomise(WindowAttention(cfg, dim=8, size=(8, 8)))
    x = torch.randn(2, 64, 8, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), _reference_window_attention(mixer, x))


def test_shifted_window_mask_blocks_attention_across_the_wrapped_border() -> None:
    # On an 8x8 map with window 4 and shift 2, tokens (0, 0) and (7, 7) share the last shifted window,
    # but only because the cyclic shift wrapped (0, 0) around; the mask must keep them apart.
    mixer = randomise(WindowAttention(WindowAttentionCfg(heads=2, window=4, shift=2), dim=8, size=(8, 8)))
    x = torch.randn(1, 64, 8, generator=seeded_generator())
    moved = x.clone()
    moved[:, 0] += 10.0
    with torch.no_grad():
        assert torch.allclose(mixer(x)[:, 63], mixer(moved)[:, 63])
        assert not torch.allclose(mixer(x)[:, 9], mixer(moved)[:, 9])  # (1, 1), an unwrapped neighbour, sees it
        mixer.shift_mask.zero_()  # without the mask the wrapped token would leak into (7, 7)
        assert not torch.allclose(mixer(x)[:, 63], mixer(moved)[:, 63])


def test_window_is_clamped_to_a_small_map_and_then_does_not_shift() -> None:
    cfg = WindowAttentionCfg(heads=2, window=7, shift=3)
    assert cfg.effective(56, 56) == (7, 3)
    assert cfg.effective(7, 7) == (7, 0)
    assert cfg.effective(4, 4) == (4, 0)
    cfg.check(Site(8, 8, 4, 4))
    mixer = WindowAttention(cfg, dim=8, size=(4, 4))
    assert (mixer.window, mixer.shift) == (4, 0)
    assert mixer.relative_position_bias.shape == (7 * 7, 2)
    assert mixer.shift_mask.shape == (1, 1, 16, 16) and torch.all(mixer.shift_mask == 0)


@pytest.mark.parametrize(("cfg", "site", "path", "message"), [
    (WindowAttentionCfg(heads=2, window=5), Site(8, 8, 16, 16), "window", "window 5 does not divide the 16x16"),
    (WindowAttentionCfg(heads=2, window=4, shift=4), Site(8, 8, 16, 16), "shift", "must be in [0, window=4)"),
    (WindowAttentionCfg(heads=2, window=4), Site(8, 8, 16, 16, prefix_tokens=1), "kind", "class token"),
    (PatchMergingCfg(), Site(8, 8, 7, 7), "kind", "even feature map, got 7x7"),
    (SpatialReductionAttentionCfg(sr_ratio=2), Site(8, 8, 8, 8, prefix_tokens=1), "sr_ratio", "class token"),
    (SpatialReductionAttentionCfg(sr_ratio=16), Site(8, 8, 8, 8), "sr_ratio", "larger than the 8x8"),
    (SpatialReductionAttentionCfg(sr_ratio=0), Site(8, 8, 8, 8), "sr_ratio", "must be >= 1"),
])
def test_invalid_configs_fail_precisely(cfg: object, site: Site, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cfg.check(site)  # type: ignore[attr-defined]
    assert caught.value.path == path
    assert message in caught.value.message


def test_window_attention_buffers_are_not_state_and_build_on_meta() -> None:
    mixer = WindowAttention(WindowAttentionCfg(heads=2, window=4, shift=2), dim=8, size=(8, 8), device="meta")
    assert mixer.shift_mask.device.type == "meta" and mixer.relative_position_index.device.type == "meta"
    assert set(mixer.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias", "relative_position_bias"}


def test_patch_merging_matches_swin_neighbour_order() -> None:
    merging = randomise(PatchMerging(PatchMergingCfg(), in_dim=3, dim=5, size=(4, 6)))
    x = torch.randn(2, 4 * 6, 3, generator=seeded_generator())
    grid = x.view(2, 4, 6, 3)
    neighbours = [grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]]
    expected = merging.reduction(merging.norm(torch.cat(neighbours, dim=-1).view(2, -1, 12)))
    torch.testing.assert_close(merging(x), expected)
    assert merging.reduction.bias is None
    assert PatchMergingCfg().output_size(4, 6) == (2, 3)


# ---------------------------------------------------------------------------
# PVT: spatial-reduction attention and its patch embedding


def test_spatial_reduction_attention_matches_reference() -> None:
    dim, heads, sr = 8, 2, 2
    mixer = randomise(SpatialReductionAttention(SpatialReductionAttentionCfg(heads=heads, sr_ratio=sr),
                                                 dim=dim, size=(4, 4)))
    x = torch.randn(2, 16, dim, generator=seeded_generator())
    conv, norm = mixer.reduce[1], mixer.reduce[3]
    reduced = norm(conv(x.transpose(1, 2).reshape(2, dim, 4, 4)).flatten(2).transpose(1, 2))
    assert reduced.shape == (2, 4, dim)  # keys and values come from (4 / sr)**2 tokens
    query, (key, value) = mixer.q(x), mixer.kv(reduced).split(dim, dim=-1)
    head_dim = dim // heads
    outs = [_softmax_attention(*(t[..., h * head_dim:(h + 1) * head_dim] for t in (query, key, value)))
            for h in range(heads)]
    torch.testing.assert_close(mixer(x), mixer.proj(torch.cat(outs, dim=-1)))


def test_spatial_reduction_ratio_one_is_plain_attention() -> None:
    dim = 8
    sra = randomise(SpatialReductionAttention(SpatialReductionAttentionCfg(heads=2), dim=dim, size=(3, 3),
                                               prefix_tokens=1))
    assert isinstance(sra.reduce, nn.Identity)
    plain = Attention(AttentionCfg(heads=2), dim=dim, size=(3, 3), prefix_tokens=1)
    with torch.no_grad():
        plain.qkv.weight.copy_(torch.cat([sra.q.weight, sra.kv.weight]))
        plain.qkv.bias.copy_(torch.cat([sra.q.bias, sra.kv.bias]))
        plain.proj.load_state_dict(sra.proj.state_dict())
    x = torch.randn(2, 10, dim, generator=seeded_generator())
    torch.testing.assert_close(sra(x), plain(x))


def test_pvt_patch_embedding_normalises_before_adding_the_position_embedding() -> None:
    cfg = ConvDownsampleCfg(kernel=2, stride=2, padding=0, norm="layernorm", pos_embed=True)
    embed = ConvDownsample(cfg, in_dim=4, dim=6, size=(4, 4))
    with torch.no_grad():
        embed.pos_embed.fill_(5.0)
    out = embed(torch.randn(2, 4, 4, 4, generator=seeded_generator()))
    torch.testing.assert_close(out.mean(1), torch.full((2, 2, 2), 5.0))  # LayerNorm output has zero mean


# ---------------------------------------------------------------------------
# zoo structure


def test_swin_tiny_last_stage_runs_unshifted_and_earlier_stages_shift() -> None:
    model = nas.build(nas.zoo.get("swin_tiny"), device="meta")
    shifts = [[(m.window, m.shift) for m in stage.modules() if isinstance(m, WindowAttention)]
              for stage in model.stages]
    assert shifts == [[(7, 0), (7, 3)], [(7, 0), (7, 3)], [(7, 0), (7, 3)] * 3, [(7, 0), (7, 0)]]


def test_deit_tiny_classifies_from_the_class_token() -> None:
    model = nas.build(nas.zoo.get("deit_tiny"), device="meta")
    assert model.stem[0].class_token.shape == (1, 1, 192)
    assert model.stem[0].pos_embed.shape == (1, 197, 192)
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)
