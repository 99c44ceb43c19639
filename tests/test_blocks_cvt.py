"""CvT's convolutional projection and attention against slow references built on ``unfold``.

The references spell the depthwise convolution out as patches times weights
(``F.unfold``), BatchNorm as its inference formula, and attention as one softmax
per head, so they share no code path with the module.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.blocks.cvt import (
    ConvEmbedding,
    ConvEmbeddingCfg,
    ConvProjection,
    ConvProjectionAttention,
    ConvProjectionAttentionCfg,
)
from nas.errors import ConfigError
from nas.space import load_space


def _randomise_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial running statistics and affine parameters, so BatchNorm is not the identity."""
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            channels = norm.num_features
            norm.running_mean.copy_(torch.randn(channels, generator=generator))
            norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.randn(channels, generator=generator))
            norm.bias.data.copy_(torch.randn(channels, generator=generator))


def _unfold_projection(tokens: torch.Tensor, projection: ConvProjection, size: tuple[int, int], prefix: int,
                       kernel: int, stride: int) -> torch.Tensor:
    """Depthwise conv as ``sum(patch * weight)`` over unfolded patches, then BatchNorm's inference formula."""
    conv, norm = projection.conv[0], projection.conv[1]
    batch, _, channels = tokens.shape
    grid = tokens[:, prefix:].transpose(1, 2).reshape(batch, channels, *size)
    patches = F.unfold(grid, kernel, padding=kernel // 2, stride=stride)  # (B, C * k * k, L)
    patches = patches.view(batch, channels, kernel * kernel, -1)
    convolved = (patches * conv.weight.view(1, channels, kernel * kernel, 1)).sum(2)  # (B, C, L)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    normed = (convolved - norm.running_mean[:, None]) * scale[:, None] + norm.bias[:, None]
    return torch.cat([tokens[:, :prefix], normed.transpose(1, 2)], dim=1)


@pytest.mark.parametrize(("kernel", "stride", "prefix", "size"),
                         [(3, 1, 0, (7, 5)), (3, 2, 0, (7, 5)), (5, 2, 1, (6, 6)), (3, 3, 1, (5, 8)),
                          (1, 2, 0, (4, 4))])
def test_projection_matches_unfold_reference(kernel: int, stride: int, prefix: int, size: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(kernel * 10 + stride)
    dim = 6
    projection = ConvProjection(dim, kernel, stride, size=size, prefix_tokens=prefix)
    with torch.no_grad():
        projection.conv[0].weight.copy_(torch.randn(projection.conv[0].weight.shape, generator=generator))
        _randomise_batchnorm(projection, generator)
    projection.eval()
    tokens = torch.randn(2, prefix + size[0] * size[1], dim, generator=generator)
    with torch.no_grad():
        got = projection(tokens)
        want = _unfold_projection(tokens, projection, size, prefix, kernel, stride)
    reduced = -(-size[0] // stride) * -(-size[1] // stride)  # ceil per side: padded by kernel // 2
    assert got.shape == (2, prefix + reduced, dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if prefix:
        # the class token skips the convolution
        torch.testing.assert_close(got[:, :prefix], tokens[:, :prefix], rtol=0, atol=0)


def _reference_attention(mixer: ConvProjectionAttention, tokens: torch.Tensor, cfg: ConvProjectionAttentionCfg,
                         size: tuple[int, int], prefix: int) -> torch.Tensor:
    """One softmax per head over the unfolded projections, scaled by the whole width as CvT does."""
    dim = tokens.shape[-1]
    head_dim = dim // cfg.heads
    query = mixer.q(_unfold_projection(tokens, mixer.q_conv, size, prefix, cfg.kernel, 1))
    key = mixer.k(_unfold_projection(tokens, mixer.k_conv, size, prefix, cfg.kernel, cfg.kv_stride))
    value = mixer.v(_unfold_projection(tokens, mixer.v_conv, size, prefix, cfg.kernel, cfg.kv_stride))
    heads = []
    for head in range(cfg.heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        scores = query[..., part] @ key[..., part].transpose(1, 2) * dim ** -0.5
        heads.append(torch.softmax(scores, dim=-1) @ value[..., part])
    return mixer.proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize(("heads", "kv_stride", "prefix"), [(1, 2, 0), (2, 2, 1), (4, 1, 0), (2, 3, 1)])
def test_attention_matches_slow_reference(heads: int, kv_stride: int, prefix: int) -> None:
    generator = torch.Generator().manual_seed(heads * 7 + kv_stride)
    size, dim = (5, 7), 8
    cfg = ConvProjectionAttentionCfg(heads=heads, kernel=3, kv_stride=kv_stride)
    mixer = ConvProjectionAttention(cfg, dim=dim, size=size, prefix_tokens=prefix)
    with torch.no_grad():
        for conv in (mixer.q_conv, mixer.k_conv, mixer.v_conv):
            conv.conv[0].weight.copy_(torch.randn(conv.conv[0].weight.shape, generator=generator))
        _randomise_batchnorm(mixer, generator)
    mixer.eval()
    tokens = torch.randn(3, prefix + size[0] * size[1], dim, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(mixer(tokens), _reference_attention(mixer, tokens, cfg, size, prefix),
                                   rtol=1e-5, atol=1e-5)


def test_keys_and_values_come_from_the_strided_map() -> None:
    """With stride 2, a query attends to the tokens of the reduced map only: changing a position that no
    3x3 stride-2 window covers changes nothing."""
    generator = torch.Generator().manual_seed(3)
    size, dim = (4, 4), 4
    mixer = ConvProjectionAttention(ConvProjectionAttentionCfg(heads=1, kernel=1, kv_stride=2), dim=dim, size=size)
    mixer.eval()
    tokens = torch.randn(1, 16, dim, generator=generator)
    changed = tokens.clone()
    changed[:, 1] += 1.0  # row 0, column 1: a 1x1 kernel at stride 2 samples only even rows and columns
    with torch.no_grad():
        keys, keys_changed = mixer.k_conv(tokens), mixer.k_conv(changed)
    assert keys.shape == (1, 4, dim)
    torch.testing.assert_close(keys, keys_changed, rtol=0, atol=0)


def test_bad_settings_name_the_field() -> None:
    site = nas.arch.Site(8, 8, 7, 7)
    with pytest.raises(ConfigError, match="odd") as error:
        ConvProjectionAttentionCfg(kernel=4).check(site)
    assert error.value.path == "kernel"
    with pytest.raises(ConfigError) as error:
        ConvProjectionAttentionCfg(kv_stride=0).check(site)
    assert error.value.path == "kv_stride"
    with pytest.raises(ConfigError) as error:
        ConvProjectionAttentionCfg(heads=3).check(site)
    assert error.value.path == "heads"


def test_embedding_is_conv_then_norm_with_the_class_token_first() -> None:
    torch.manual_seed(4)
    size, in_dim, dim = (7, 6), 4, 8
    embedding = ConvEmbedding(ConvEmbeddingCfg(class_token=True), in_dim=in_dim, dim=dim, size=size)
    tokens = torch.randn(2, size[0] * size[1], in_dim)
    grid = tokens.transpose(1, 2).reshape(2, in_dim, *size)
    convolved = F.conv2d(grid, embedding.conv.weight, embedding.conv.bias, stride=2, padding=1)  # 4x3
    normed = F.layer_norm(convolved.flatten(2).transpose(1, 2), (dim,), embedding.norm.weight, embedding.norm.bias)
    with torch.no_grad():
        out = embedding(tokens)
    assert out.shape == (2, 1 + 4 * 3, dim)
    torch.testing.assert_close(out[:, 1:], normed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, :1], embedding.class_token.expand(2, -1, -1), rtol=0, atol=0)


CVT_LIKE = """
schema: 1
input: {resolution: 32, channels: 3}
stem: {kind: overlap, kernel: 7, stride: 4, padding: 2, norm: layernorm, dim: 8}
stages:
  - dim: 8
    downsample: null
    blocks: {repeat: 1, block: {mixer: {kind: conv_projection_attention}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}}
  - dim: 16
    downsample: {kind: conv_embedding, class_token: true}
    blocks: {repeat: 1, block: {mixer: {kind: conv_projection_attention}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}}
%s
head: {kind: linear, pool: cls, num_classes: 5}
"""


def test_a_class_token_from_a_downsampler_reaches_the_head_and_leaves_the_feature_maps() -> None:
    arch = nas.Arch.from_yaml(CVT_LIKE % "")
    walked = list(nas.walk.steps(arch))
    assert [step.after.prefix_tokens for step in walked if step.role == "block"] == [0, 1]
    model = nas.build(arch).eval()
    images = torch.randn(2, 3, 32, 32)
    assert model(images).shape == (2, 5)
    assert [tuple(out.shape) for out in model.forward_features(images)] == [(2, 8, 8, 8), (2, 16, 4, 4)]
    without = nas.Arch.from_yaml((CVT_LIKE % "").replace("class_token: true", "class_token: false")
                                 .replace("pool: cls", "pool: avg"))
    assert nas.cost.profile(arch).params - nas.cost.profile(without).params == 16  # the class token alone


def test_a_class_token_cannot_be_downsampled_again() -> None:
    third = """  - dim: 32
    downsample: {kind: conv_embedding}
    blocks: {repeat: 1, block: {mixer: conv_projection_attention, ffn: {kind: mlp, ratio: 2}, norm: layernorm}}"""
    with pytest.raises(ConfigError, match="class tokens") as error:
        nas.Arch.from_yaml(CVT_LIKE % third)
    assert error.value.path == "stages[2].downsample.kind"


def test_metaformer_samples_draw_cvt_attention_in_every_stage_and_its_embedding() -> None:
    space = load_space("metaformer")
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(0), 300)]
    stages = {index for arch in archs for index, stage in enumerate(arch.stages)
              if any(block.mixer.kind == "conv_projection_attention" for block in stage.blocks)}
    assert stages == {0, 1, 2, 3}
    assert any(stage.downsample is not None and stage.downsample.kind == "conv_embedding"
               for arch in archs for stage in arch.stages)
