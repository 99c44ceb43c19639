"""EfficientFormer and EfficientViT (MSRA): attention biases, the cascade, windows, the merging downsample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.arch import Block, Site, parse_component
from nas.blocks.common import BatchNormNLC
from nas.blocks.efficientformer import AttentionBias, EfficientFormerAttention, EfficientFormerAttentionCfg
from nas.blocks.efficientvit import (
    CascadedGroupAttention,
    EfficientVitCfg,
    EfficientVitMerging,
    EfficientVitMergingCfg,
    LocalWindowAttention,
)
from nas.build import plan
from nas.errors import ConfigError
from nas.walk import past
from tests.conftest import TINY_DIR

# Parameter counts of the official models (microsoft/Cream EfficientViT build.py, distillation=False),
# counted from the official code's layer shapes, BatchNorm unfolded.
OFFICIAL_EFFICIENTVIT_PARAMS = {
    "efficientvit_m0": 2_349_436,
    "efficientvit_m1": 2_980_560,
    "efficientvit_m2": 4_187_554,
    "efficientvit_m3": 6_900_722,
    "efficientvit_m4": 8_804_228,
    "efficientvit_m5": 12_473_772,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -- attention bias -------------------------------------------------------------


@pytest.mark.parametrize("size", [(3, 3), (2, 4), (1, 5)])
def test_attention_bias_shares_entries_by_offset(size: tuple[int, int]) -> None:
    height, width = size
    bias = AttentionBias(2, size)
    assert bias.table.shape == (2, height * width)
    index = bias.index
    assert index.shape == (height * width, height * width)
    assert torch.equal(index, index.T)
    assert sorted(index.unique().tolist()) == list(range(height * width))  # every offset used, none wasted
    positions = [(row, col) for row in range(height) for col in range(width)]
    for i, (r1, c1) in enumerate(positions):
        for j, (r2, c2) in enumerate(positions):
            assert index[i, j] == abs(r1 - r2) * width + abs(c1 - c2)
    nn.init.normal_(bias.table)
    assert bias().shape == (2, height * width, height * width)
    assert torch.equal(bias()[:, 0, 0], bias()[:, 1, 1])  # offset (0, 0)


# -- EfficientFormer attention -----------------------------------------------------


def test_efficientformer_attention_matches_a_reference() -> None:
    cfg = EfficientFormerAttentionCfg(key_dim=4, heads=3, attn_ratio=2)
    mixer = EfficientFormerAttention(cfg, dim=10, size=(2, 3))
    nn.init.normal_(mixer.bias.table)
    x = torch.randn(2, 6, 10)
    qkv = mixer.qkv(x).reshape(2, 6, 3, 16).transpose(1, 2)
    query, key, value = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    scores = query @ key.transpose(-2, -1) / 2.0 + mixer.bias.table[:, mixer.bias.index]
    expected = mixer.proj((scores.softmax(-1) @ value).transpose(1, 2).reshape(2, 6, 24))
    torch.testing.assert_close(mixer(x), expected)
    assert mixer.qkv.out_features == 3 * (4 + 4 + 8) and mixer.proj.in_features == 3 * 8


def test_efficientformer_attention_bias_gets_gradient_and_matters() -> None:
    mixer = EfficientFormerAttention(EfficientFormerAttentionCfg(key_dim=4, heads=2), dim=8, size=(3, 3))
    x = torch.randn(1, 9, 8)
    before = mixer(x)
    before.sum().backward()
    assert mixer.bias.table.grad is not None and mixer.bias.table.grad.abs().sum() > 0
    with torch.no_grad():
        mixer.bias.table.normal_()
    assert not torch.allclose(mixer(x), before)


def test_efficientformer_l7_last_stage_is_all_attention_after_one_flatten() -> None:
    arch = nas.zoo.get("efficientformer_l7")
    kinds = [block.mixer.kind for block in arch.stages[3].blocks]
    assert kinds == ["efficientformer_attention"] * 8
    units = [unit.path for unit in plan(arch).units]
    flatten = [path for path in units if path.endswith("to_nlc")]
    assert flatten == ["stages[3].blocks[0].to_nlc"]


def test_efficientformer_attention_rejects_class_tokens() -> None:
    site = Site(in_dim=16, dim=16, height=4, width=4, prefix_tokens=1)
    with pytest.raises(ConfigError, match="class token") as caught:
        EfficientFormerAttentionCfg().check(site)
    assert caught.value.path == "kind"
    with pytest.raises(ConfigError, match="attn_ratio"):
        EfficientFormerAttentionCfg(key_dim=2, attn_ratio=0.25).check(Site(16, 16, 4, 4))


# -- cascaded group attention ---------------------------------------------------------


def _cascade(heads: int = 3, dim: int = 12, size: tuple[int, int] = (3, 3)) -> CascadedGroupAttention:
    attention = CascadedGroupAttention(dim, heads, 4, (3,) * heads, size).eval()
    attention.proj = nn.Identity()  # look at the heads' outputs, concatenated
    return attention


def test_cascade_feeds_each_head_the_previous_output() -> None:
    attention = _cascade()
    x = torch.randn(1, 12, 3, 3)
    reference = attention(x)
    last = x.clone()
    last[:, 8:] += 1.0  # the last head's slice reaches only the last head
    changed = (attention(last) - reference).abs().flatten(2).amax(-1)[0]
    assert torch.all(changed[:8] == 0) and torch.all(changed[8:] > 0)
    first = x.clone()
    first[:, :4] += 1.0  # the first head's slice reaches every head through the cascade
    changed = (attention(first) - reference).abs().flatten(2).amax(-1)[0]
    assert all(changed[head * 4:(head + 1) * 4].amax() > 0 for head in range(3))


def test_cascade_has_one_query_conv_per_head_with_its_kernel() -> None:
    attention = CascadedGroupAttention(12, 3, 4, (7, 5, 3), (7, 7))
    kernels = [convnorm[0].kernel_size for convnorm in attention.query_convs]
    assert kernels == [(7, 7), (5, 5), (3, 3)]
    assert all(convnorm[0].groups == 4 for convnorm in attention.query_convs)
    assert attention.bias.table.shape == (3, 49)


# -- local windows ----------------------------------------------------------------------


def _windowed(size: tuple[int, int], window: int) -> LocalWindowAttention:
    cfg = EfficientVitCfg(heads=2, key_dim=4, kernels=(1, 1), window=window)
    return LocalWindowAttention(cfg, 8, size).eval()


def test_window_attention_stays_inside_windows() -> None:
    attention = _windowed((6, 6), 3)
    assert attention.attn.bias.table.shape == (2, 9)
    x = torch.randn(1, 8, 6, 6)
    poked = x.clone()
    poked[:, :, 0, 0] += 1.0
    delta = (attention(poked) - attention(x)).abs().sum(1)[0]
    assert delta[:3, :3].sum() > 0
    assert delta[3:, :].sum() == 0 and delta[:, 3:].sum() == 0


def test_window_attention_pads_and_crops() -> None:
    attention = _windowed((5, 4), 3)
    assert attention.pad == (1, 2)
    x = torch.randn(2, 8, 5, 4)
    assert attention(x).shape == (2, 8, 5, 4)


def test_a_map_within_the_window_is_attended_whole() -> None:
    attention = _windowed((4, 5), 7)
    assert attention.window == (4, 5) and attention.pad == (0, 0)
    assert attention.attn.bias.table.shape == (2, 20)
    x = torch.randn(1, 8, 4, 5)
    torch.testing.assert_close(attention(x), attention.attn(x))


# -- the sandwich block and its config ---------------------------------------------------


def _block(mixer: dict, ffn: object = "none", norm: str = "none") -> Block:
    return Block(parse_component("mixer", mixer, "mixer"), parse_component("ffn", ffn, "ffn"),
                 parse_component("norm", norm, "norm"))


@pytest.mark.parametrize(("mixer", "norm", "in_dim", "path", "message"), [
    ({"kind": "efficientvit", "heads": 5, "kernels": [3] * 5}, "none", 32, "heads", "does not divide dim 32"),
    ({"kind": "efficientvit", "heads": 2, "kernels": [3]}, "none", 32, "kernels", "one kernel per head"),
    ({"kind": "efficientvit", "heads": 2, "kernels": [3, 4]}, "none", 32, "kernels[1]", "odd"),
    ({"kind": "efficientvit", "heads": 2, "kernels": [3, 3]}, "batchnorm", 32, "kind", "norm must be 'none'"),
    ({"kind": "efficientvit", "heads": 2, "kernels": [3, 3]}, "none", 16, "kind", "keeps its width"),
    ({"kind": "efficientvit", "heads": 2, "kernels": [3, 3], "window": 0}, "none", 32, "window", ">= 1"),
])
def test_efficientvit_config_errors(mixer: dict, norm: str, in_dim: int, path: str, message: str) -> None:
    block = _block(mixer, norm=norm)
    with pytest.raises(ConfigError, match=message) as caught:
        past(block.mixer, Site(in_dim, 32, 7, 7, block))  # the config's check, then the walk's width rule
    assert caught.value.path == path


def test_efficientvit_error_in_an_arch_names_the_field() -> None:
    text = (TINY_DIR / "mixer_efficientvit.yaml").read_text().replace("heads: 3,", "heads: 5,")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.blocks\[0\]\.mixer\.heads: 5 does not divide dim 48"):
        nas.Arch.from_yaml(text.replace("kernels: [3, 3, 1]", "kernels: [3, 3, 1, 1, 1]"))


def test_efficientvit_block_is_a_sandwich_of_five_residuals() -> None:
    arch = nas.Arch.load(TINY_DIR / "mixer_efficientvit.yaml")
    model = nas.build(arch).eval()
    block = model.stages[0][0]
    x = torch.randn(2, 32, 4, 4)
    step = x
    for name in ("dw0", "ffn0", "mixer", "dw1", "ffn1"):
        branch = getattr(block, name)
        step = step + branch.scale(branch.fn(step))
    torch.testing.assert_close(block(x), step)


# -- merging downsample, head ------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), [((14, 14), (7, 7)), ((7, 7), (4, 4)), ((5, 8), (3, 4))])
def test_merging_output_size(size: tuple[int, int], expected: tuple[int, int]) -> None:
    cfg = EfficientVitMergingCfg()
    assert cfg.output_size(*size) == expected
    merging = EfficientVitMerging(cfg, in_dim=8, dim=16, size=size).eval()
    assert merging(torch.randn(1, 8, *size)).shape == (1, 16, *expected)


def test_merging_widths_follow_the_official_code() -> None:
    merging = EfficientVitMerging(EfficientVitMergingCfg(), in_dim=64, dim=128, size=(14, 14))
    expand, depthwise, excite, project = merging.merge
    assert expand[0].out_channels == 256 and depthwise[0].groups == 256 and depthwise[0].stride == (2, 2)
    assert excite.reduce.out_channels == 64  # make_divisible(256 * 0.25, 8)
    assert project[0].out_channels == 128
    assert merging.pre[1].fn.fc1.out_channels == 128 and merging.post[1].fn.fc1.out_channels == 256
    no_se = EfficientVitMerging(EfficientVitMergingCfg(se_ratio=0), in_dim=64, dim=128, size=(14, 14))
    assert isinstance(no_se.merge[2], nn.Identity)


def test_merging_config_errors() -> None:
    site = Site(16, 32, 8, 8)
    with pytest.raises(ConfigError, match="must be > 0") as caught:
        EfficientVitMergingCfg(expansion=0).check(site)
    assert caught.value.path == "expansion"
    with pytest.raises(ConfigError) as caught:
        EfficientVitMergingCfg(se_ratio=1.5).check(site)
    assert caught.value.path == "se_ratio"


def test_batchnorm_head_on_a_pooled_vector() -> None:
    norm = BatchNormNLC(6)
    x = torch.randn(4, 6)
    torch.testing.assert_close(norm(x), nn.functional.batch_norm(x, None, None, norm.weight, norm.bias, True))
    assert norm(torch.randn(2, 5, 6)).shape == (2, 5, 6)


# -- zoo -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OFFICIAL_EFFICIENTVIT_PARAMS))
def test_efficientvit_zoo_matches_the_official_parameter_count(name: str) -> None:
    model = nas.build(nas.zoo.get(name), device="meta")
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_EFFICIENTVIT_PARAMS[name]


def test_efficientvit_m0_runs_at_224_in_eval() -> None:
    model = nas.build(nas.zoo.get("efficientvit_m0")).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    stage_one = model.stages[0][0].mixer.fn
    assert stage_one.window == (7, 7) and stage_one.pad == (0, 0)  # 14x14 map, four 7x7 windows
    last = model.stages[2][-1].mixer.fn
    assert last.window == (4, 4)  # 4x4 map, attended whole
