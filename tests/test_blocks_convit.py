"""ConViT (arXiv:2103.10697): gated positional self-attention against a query-by-query reference, its locality
initialisation, the gate's mixing, and the block that lets class tokens pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nas
from nas.arch import Block, parse_component
from nas.blocks.convit import GatedPositionalAttention, GpsaBlock, GpsaCfg, locality_centres
from nas.blocks.template import BlockContext
from nas.export import ONNX_TOLERANCE, export
from tests.conftest import TINY_DIR, randomise, seeded_generator


def _reference_gpsa(module: GatedPositionalAttention, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Head by head, query by query, from the paper's definition: content softmax over keys, positional
    softmax over ``v_pos . (dx, dy, dx^2 + dy^2)`` of each key's offset, mixed by ``sigmoid(gate)``."""
    height, width = size
    batch, tokens, dim = x.shape
    heads = module.heads
    head_dim = dim // heads
    query, key = module.qk(x).split(dim, dim=-1)
    value = module.v(x)
    weight, bias = module.pos_proj.weight, module.pos_proj.bias
    out = torch.empty(batch, tokens, dim)
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        gate = torch.sigmoid(module.gate[head])
        for i in range(tokens):
            logits = torch.einsum("bd,bjd->bj", query[:, i, part], key[:, :, part]) / head_dim ** 0.5
            content = torch.softmax(logits, dim=-1)
            scores = []
            for j in range(tokens):
                dx, dy = j % width - i % width, j // width - i // width
                scores.append(weight[head, 0] * dx + weight[head, 1] * dy + weight[head, 2] * (dx * dx + dy * dy)
                              + bias[head])
            positional = torch.softmax(torch.stack(scores), dim=-1)
            mixed = (1 - gate) * content + gate * positional
            out[:, i, part] = torch.einsum("bj,bjd->bd", mixed, value[:, :, part])
    return module.proj(out)


@pytest.mark.parametrize("size", [(3, 4), (4, 4)])
def test_gpsa_matches_query_by_query_reference(size: tuple[int, int]) -> None:
    module = randomise(GatedPositionalAttention(12, GpsaCfg(heads=3, qkv_bias=True), size))
    x = torch.randn(2, size[0] * size[1], 12, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(module(x), _reference_gpsa(module, x, size))


def _peaks(attention: torch.Tensor, width: int) -> set[tuple[int, int]]:
    """The (row, column) of every key whose weight equals the largest."""
    top = attention.max()
    return {(int(j) // width, int(j) % width) for j in torch.nonzero(torch.isclose(attention, top)).flatten()}


def test_locality_init_centres_each_head_on_its_own_offset() -> None:
    side = 7
    module = GatedPositionalAttention(18, GpsaCfg(heads=9), (side, side))
    query = 3 * side + 3  # the centre of the map: every offset up to 3 exists
    with torch.no_grad():
        positional = module.positional_attention()[:, query]
    centres = locality_centres(9)
    assert sorted(centres) == [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]  # a 3x3 "kernel"
    for head, (dx, dy) in enumerate(centres):
        assert _peaks(positional[head], side) == {(3 + int(dy), 3 + int(dx))}, f"head {head} is not at {dx, dy}"


def test_locality_init_with_an_even_grid_peaks_on_the_square_around_its_centre() -> None:
    module = GatedPositionalAttention(8, GpsaCfg(heads=4), (5, 5))
    with torch.no_grad():
        positional = module.positional_attention()[:, 2 * 5 + 2]
    for head, (dx, dy) in enumerate(locality_centres(4)):
        rows = {2 + int(dy - 0.5), 2 + int(dy + 0.5)}
        columns = {2 + int(dx - 0.5), 2 + int(dx + 0.5)}
        assert _peaks(positional[head], 5) == {(row, column) for row in rows for column in columns}


def test_locality_strength_sharpens_and_zero_strength_is_uniform() -> None:
    size = (5, 5)
    peaks = []
    for strength in (0.0, 1.0, 3.0):
        module = GatedPositionalAttention(18, GpsaCfg(heads=9, locality_strength=strength), size)
        with torch.no_grad():
            peaks.append(module.positional_attention()[:, 12].max(dim=-1).values)
    torch.testing.assert_close(peaks[0], torch.full((9,), 1 / 25))
    assert (peaks[1] > peaks[0]).all() and (peaks[2] > peaks[1]).all()


def test_locality_init_starts_from_an_identity_value_and_a_mostly_positional_gate() -> None:
    module = GatedPositionalAttention(8, GpsaCfg(heads=4), (3, 3))
    torch.testing.assert_close(module.v.weight, torch.eye(8))
    torch.testing.assert_close(torch.sigmoid(module.gate), torch.full((4,), torch.sigmoid(torch.tensor(1.0)).item()))


@pytest.mark.parametrize(("gate", "content_share"), [(-60.0, 1.0), (0.0, 0.5), (60.0, 0.0)])
def test_the_gate_mixes_content_and_positional_attention_as_defined(gate: float, content_share: float) -> None:
    size = (3, 3)
    module = randomise(GatedPositionalAttention(8, GpsaCfg(heads=2), size))
    x = torch.randn(2, 9, 8, generator=seeded_generator())
    with torch.no_grad():
        module.gate.fill_(gate)
        query, key = (part.unflatten(-1, (2, 4)).transpose(1, 2) for part in module.qk(x).chunk(2, dim=-1))
        value = module.v(x).unflatten(-1, (2, 4)).transpose(1, 2)
        content = torch.nn.functional.scaled_dot_product_attention(query, key, value)  # plain softmax attention
        positional = module.positional_attention() @ value
        expected = content_share * content + (1 - content_share) * positional
        torch.testing.assert_close(module(x), module.proj(expected.transpose(1, 2).flatten(-2)))


def _block(**mixer: object) -> Block:
    return Block(mixer=parse_component("mixer", {"kind": "gpsa", **mixer}, "mixer"),
                 ffn=parse_component("ffn", {"kind": "mlp", "ratio": 2}, "ffn"),
                 norm=parse_component("norm", "layernorm", "norm"))


def test_gpsa_block_passes_class_tokens_untouched() -> None:
    # ConViT puts its class token in front after the GPSA blocks: a token already there must leave them as it came,
    # and the map's tokens must not see it.
    size, dim = (3, 3), 8
    with_class = randomise(GpsaBlock(_block(heads=2), BlockContext(in_dim=dim, dim=dim, size=size, prefix_tokens=1)))
    without = GpsaBlock(_block(heads=2), BlockContext(in_dim=dim, dim=dim, size=size))
    without.load_state_dict(with_class.state_dict())
    x = torch.randn(2, 1 + 9, dim, generator=seeded_generator())
    with torch.no_grad():
        out = with_class(x)
        torch.testing.assert_close(out[:, :1], x[:, :1], rtol=0, atol=0)
        torch.testing.assert_close(out[:, 1:], without(x[:, 1:]))


def test_gpsa_exports_to_onnx_with_the_same_outputs(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    result = export(nas.Arch.load(TINY_DIR / "mixer_gpsa.yaml"), tmp_path, format="onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= ONNX_TOLERANCE
