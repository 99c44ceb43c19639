"""GC ViT (arXiv:2206.09959): the global query generator, global-query window attention and the stage body,
checked against naive references on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.arch import Block, Site, parse_component
from nas.blocks.contract import Chunks, declared_sharing
from nas.blocks.gcvit import GlobalContext, GlobalContextCfg, GlobalQueryAttention, GlobalQueryGenerator, query_levels
from nas.blocks.template import BlockContext
from nas.errors import ConfigError
from nas.space import load_space
from tests.conftest import randomise, seeded_generator


@pytest.mark.parametrize(("side", "window", "levels"), [(56, 7, 3), (28, 7, 2), (14, 7, 1), (14, 14, 0),
                                                        (7, 7, 0), (64, 8, 3), (48, 6, 3)])
def test_query_levels_halve_the_map_down_to_one_window(side: int, window: int, levels: int) -> None:
    assert query_levels(side, side, window) == levels
    generator = GlobalQueryGenerator(4, levels)
    assert generator(torch.randn(1, 4, side, side)).shape == (1, window * window, 4)


@pytest.mark.parametrize(("height", "width", "window"), [(48, 48, 7), (14, 28, 7), (12, 12, 5)])
def test_query_levels_refuse_a_map_that_never_halves_to_the_window(height: int, width: int, window: int) -> None:
    with pytest.raises(ConfigError, match="never gives"):
        query_levels(height, width, window)


def test_the_body_checks_its_queries_fit() -> None:
    GlobalContextCfg(depth=2, heads=2, window=4).check(Site(8, 8, 16, 16))
    with pytest.raises(ConfigError, match="never gives") as caught:
        GlobalContextCfg(depth=2, heads=2, window=4).check(Site(8, 8, 12, 12))
    assert caught.value.path == "window"


def _reference_global_attention(mixer: GlobalQueryAttention, x: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Token by token: a token at (r, c) of its window attends, with the image's global query at (r, c),
    to the keys of its window, biased by the relative offset of the query position and the key position."""
    height, width = mixer.size
    window, heads = mixer.window, mixer.heads
    dim = x.shape[-1]
    head_dim = dim // heads
    key, value = mixer.kv(x).split(dim, dim=-1)
    table = mixer.relative_position_bias
    rows, cols = torch.arange(height * width) // width, torch.arange(height * width) % width
    out = torch.empty_like(x)
    for token in range(height * width):
        keys = torch.nonzero((rows // window == rows[token] // window) & (cols // window == cols[token] // window))
        keys = keys.flatten()
        local_row, local_col = rows[token] % window, cols[token] % window
        offset = ((local_row - rows[keys] % window + window - 1) * (2 * window - 1)
                  + local_col - cols[keys] % window + window - 1)
        own_query = query[:, local_row * window + local_col]
        for head in range(heads):
            span = slice(head * head_dim, (head + 1) * head_dim)
            scores = (own_query[:, None, span] @ key[:, keys, span].transpose(1, 2)).squeeze(1) / head_dim ** 0.5
            weights = torch.softmax(scores + table[offset, head], dim=-1)
            out[:, token, span] = (weights[:, None] @ value[:, keys, span]).squeeze(1)
    return mixer.proj(out)


def test_global_query_attention_matches_token_by_token_reference() -> None:
    mixer = randomise(GlobalQueryAttention(8, 2, 4, (8, 12), qkv_bias=True))
    x = torch.randn(2, 96, 8, generator=seeded_generator())
    query = torch.randn(2, 16, 8, generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(mixer(x, query), _reference_global_attention(mixer, x, query))


def test_each_image_attends_with_its_own_queries() -> None:
    mixer = randomise(GlobalQueryAttention(8, 2, 4, (8, 8), qkv_bias=True))
    x = torch.randn(2, 64, 8, generator=seeded_generator())
    query = torch.randn(2, 16, 8, generator=seeded_generator())
    changed = query.clone()
    changed[1] += 1.0
    with torch.no_grad():
        before, after = mixer(x, query), mixer(x, changed)
    torch.testing.assert_close(before[0], after[0])
    assert not torch.allclose(before[1], after[1])


def _body(depth: int) -> GlobalContext:
    block = Block(mixer=GlobalContextCfg(depth=depth, heads=2, window=4),
                  ffn=parse_component("ffn", {"kind": "mlp", "ratio": 2}, "ffn"),
                  norm=parse_component("norm", "layernorm", "norm"))
    return GlobalContext(block, BlockContext(in_dim=8, dim=8, size=(16, 16)))


def test_the_stage_body_makes_its_queries_once_from_its_input() -> None:
    body = randomise(_body(4))
    x = torch.randn(2, 256, 8, generator=seeded_generator())
    seen: list[torch.Tensor] = []
    calls: list[int] = []
    body.queries.register_forward_hook(lambda module, args, out: calls.append(1))
    for layer in body.layers:
        layer.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    with torch.no_grad():
        body(x)
        expected = body.queries(x.transpose(1, 2).reshape(2, 8, 16, 16))
    assert len(calls) == 2 and len(seen) == 4  # once in the forward, once above
    for query in seen:
        torch.testing.assert_close(query, expected)


def test_the_body_alternates_local_and_global_layers_around_oneseeded_generator() -> None:
    short, long = _body(2), _body(4)
    kinds = [type(layer.attn).__name__ for layer in long.layers]
    assert kinds == ["_LocalAttention", "GlobalQueryAttention"] * 2
    per_layer_pair = sum(p.numel() for layer in long.layers[:2] for p in layer.parameters())
    assert sum(p.numel() for p in long.parameters()) - sum(p.numel() for p in short.parameters()) == per_layer_pair


def test_metaformer_samples_draw_every_gcvit_kind() -> None:
    space = load_space("metaformer")
    seen: set[str] = set()
    for vector in space.sample_vectors(np.random.default_rng(0), 200):
        arch = space.decode(vector)
        seen |= {arch.stem.kind} | {block.mixer.kind for stage in arch.stages for block in stage.blocks}
        seen |= {stage.downsample.kind for stage in arch.stages if stage.downsample is not None}
    assert {"gcvit", "gcvit_downsample", "global_context"} <= seen


def test_a_sharing_pattern_covers_every_layer_and_an_exact_key_wins() -> None:
    sharing = {"layers.*.attn.qkv": Chunks(3), "layers.1.attn.qkv": Chunks(2)}
    assert declared_sharing(sharing, "layers.0.attn.qkv.weight") == Chunks(3)
    assert declared_sharing(sharing, "layers.17.attn.qkv.bias") == Chunks(3)
    assert declared_sharing(sharing, "layers.1.attn.qkv.weight") == Chunks(2)
    assert declared_sharing(sharing, "layers.0.attn.proj.weight") is None
    assert declared_sharing(sharing, "layers.0.norm.qkv.weight") is None
