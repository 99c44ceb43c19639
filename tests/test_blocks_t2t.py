"""T2T-ViT (arXiv:2101.11986): the soft split against ``unfold`` and a patch-by-patch reference, the token
layers against their formulas, and the whole tokens-to-token stem against a step-by-step reference."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.arch import parse_component
from nas.blocks.t2t import SoftSplit, T2TStem, TokenPerformer, TokenTransformer
from nas.export import ONNX_TOLERANCE, export
from tests.conftest import TINY_DIR, randomise, seeded_generator


def _reference_soft_split(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Patch by patch: zero-pad, cut each ``kernel x kernel`` window (row-major over positions), and make it one
    token of its channels' pixels, channel by channel, row by row."""
    padded = F.pad(x, (padding,) * 4)
    rows = (x.shape[2] + 2 * padding - kernel) // stride + 1
    columns = (x.shape[3] + 2 * padding - kernel) // stride + 1
    tokens = []
    for row in range(rows):
        for column in range(columns):
            window = padded[:, :, row * stride:row * stride + kernel, column * stride:column * stride + kernel]
            tokens.append(window.reshape(x.shape[0], -1))
    return torch.stack(tokens, dim=1)


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [(7, 4, 2, (16, 20)), (3, 2, 1, (7, 8)),
                                                                 (3, 1, 1, (5, 5))])
def test_soft_split_matches_unfold_and_a_patch_by_patch_reference(kernel: int, stride: int, padding: int,
                                                                   size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size, generator=seeded_generator())
    split = SoftSplit(kernel, stride, padding)(x)
    unfolded = torch.nn.functional.unfold(x, kernel, padding=padding, stride=stride)
    torch.testing.assert_close(split, unfolded.transpose(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(split, _reference_soft_split(x, kernel, stride, padding), rtol=0, atol=0)


def test_soft_split_tokens_overlap_where_their_windows_do() -> None:
    # kernel 3, stride 2: horizontally neighbouring tokens share a column of pixels (the "soft" in soft split)
    x = torch.randn(1, 1, 5, 5, generator=seeded_generator())
    tokens = SoftSplit(3, 2, 0)(x).reshape(1, 2, 2, 3, 3)
    torch.testing.assert_close(tokens[0, 0, 0, :, 2], tokens[0, 0, 1, :, 0], rtol=0, atol=0)


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _mlp(layer: TokenPerformer | TokenTransformer, x: torch.Tensor) -> torch.Tensor:
    return layer.mlp.fc2(F.gelu(layer.mlp.fc1(_layer_norm(x, layer.norm2))))


def _reference_performer(layer: TokenPerformer, x: torch.Tensor) -> torch.Tensor:
    """Token by token: ``y_i = sum_j (phi(q_i) . phi(k_j)) v_j / sum_j phi(q_i) . phi(k_j)`` with
    ``phi(x)_r = exp(w_r . x - |x|^2 / 2) / sqrt(m)``; then the value residual, the projection and the MLP."""
    dim = layer.proj.weight.shape[0]
    query, key, value = layer.qkv(_layer_norm(x, layer.norm1)).split(dim, dim=-1)
    features = layer.features
    count = features.shape[0]

    def phi(vector: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.exp(features[r] @ vector - vector @ vector / 2) for r in range(count)]) / count ** 0.5

    out = torch.empty_like(value)
    for batch in range(x.shape[0]):
        for i in range(x.shape[1]):
            weights = torch.stack([phi(query[batch, i]) @ phi(key[batch, j]) for j in range(x.shape[1])])
            out[batch, i] = weights @ value[batch] / weights.sum()
    y = value + layer.proj(out)
    return y + _mlp(layer, y)


def _reference_token_transformer(layer: TokenTransformer, x: torch.Tensor) -> torch.Tensor:
    """Token by token: softmax over ``q_i . k_j / sqrt(in_dim)``; then the value residual, projection and MLP."""
    dim = layer.proj.weight.shape[0]
    query, key, value = layer.qkv(_layer_norm(x, layer.norm1)).split(dim, dim=-1)
    out = torch.empty_like(value)
    for batch in range(x.shape[0]):
        for i in range(x.shape[1]):
            weights = torch.softmax(key[batch] @ query[batch, i] / math.sqrt(x.shape[-1]), dim=0)
            out[batch, i] = weights @ value[batch]
    y = value + layer.proj(out)
    return y + _mlp(layer, y)


def test_token_performer_matches_its_formula_token_by_token() -> None:
    layer = randomise(TokenPerformer(12, 8))
    with torch.no_grad():
        layer.qkv.weight.mul_(0.2)  # keep exp() of the features in a comfortable range
        x = torch.randn(2, 6, 12, generator=seeded_generator())
        torch.testing.assert_close(layer(x), _reference_performer(layer, x))


def test_performer_features_are_fixed_orthogonal_and_saved() -> None:
    layer = TokenPerformer(12, 8)
    count = layer.features.shape[0]
    assert count == 4 and not any(name == "features" for name, _ in layer.named_parameters())
    torch.testing.assert_close(layer.features @ layer.features.t(), count * torch.eye(count))
    assert "features" in layer.state_dict()


def test_token_transformer_matches_its_formula_token_by_token() -> None:
    layer = randomise(TokenTransformer(12, 8))
    x = torch.randn(2, 6, 12, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference_token_transformer(layer, x))


def _reference_stem(stem: T2TStem, x: torch.Tensor, cfg: nas.arch.Component) -> torch.Tensor:
    """Step by step: split patch by patch, run the token layer, put token ``(row, column)`` back at pixel
    ``(row, column)`` of a map, split again; project; class token first; position embedding."""
    kernels, strides, paddings = cfg.kernels, cfg.strides, cfg.paddings  # type: ignore[attr-defined]
    tokens = _reference_soft_split(x, kernels[0], strides[0], paddings[0])
    height, width = x.shape[2:]
    for index, layer in enumerate(stem.layers):
        height = (height + 2 * paddings[index] - kernels[index]) // strides[index] + 1
        width = (width + 2 * paddings[index] - kernels[index]) // strides[index] + 1
        out = layer(tokens)
        grid = torch.empty(x.shape[0], out.shape[-1], height, width)
        for row in range(height):
            for column in range(width):
                grid[:, :, row, column] = out[:, row * width + column]
        tokens = _reference_soft_split(grid, kernels[index + 1], strides[index + 1], paddings[index + 1])
    tokens = stem.project(tokens)
    tokens = torch.cat([stem.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
    return tokens + stem.pos_embed


@pytest.mark.parametrize("token_layer", ["performer", "transformer"])
def test_t2t_stem_matches_a_step_by_step_reference(token_layer: str) -> None:
    cfg = parse_component("stem", {"kind": "t2t", "dim": 16, "token_dim": 4, "token_layer": token_layer,
                                   "class_token": True, "pos_embed": True}, "stem")
    stem = randomise(T2TStem(cfg, in_dim=3, size=(32, 40)))
    with torch.no_grad():
        for layer in stem.layers:
            layer.qkv.weight.mul_(0.1)
        x = torch.randn(2, 3, 32, 40, generator=seeded_generator())
        out = stem(x)
        assert out.shape == (2, 1 + 2 * 3, 16)  # 32x40 -> 8x10 -> 4x5 -> 2x3 tokens, class token first
        torch.testing.assert_close(out, _reference_stem(stem, x, cfg))


def test_t2t_vit_14_splits_224_pixels_into_56_28_then_14_tokens_a_side() -> None:
    stem = nas.zoo.get("t2t_vit_14").stem
    assert stem.split_sizes(224, 224) == [(56, 56), (28, 28), (14, 14)]  # type: ignore[attr-defined]
    assert stem.paddings == (2, 1, 1)  # type: ignore[attr-defined]


def test_t2t_stem_exports_to_onnx_with_the_same_outputs(tmp_path: Path) -> None:
    # the unfold (im2col) and the performer; the transformer token layer is plain attention, exported elsewhere
    pytest.importorskip("onnxruntime")
    result = export(nas.Arch.load(TINY_DIR / "stem_t2t.yaml"), tmp_path, format="onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= ONNX_TOLERANCE


def test_t2t_stem_refuses_an_input_its_soft_splits_cannot_cut() -> None:
    # the first split leaves nothing, though the second (kernel 2, stride 1, padding 1) would put out a 1x1 map
    arch = nas.Arch.load(TINY_DIR / "stem_t2t.yaml")
    stem = dataclasses.replace(arch.stem, kernels=(7, 2), strides=(4, 1))
    with pytest.raises(nas.ConfigError, match=r"stem.kernels\[0\]: soft split 0 reduces the 2x2 input to 0x0"):
        arch.replace(stem=stem).with_resolution(2)
