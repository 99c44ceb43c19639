"""Neighbourhood attention (DiNAT): neighbourhoods, dilation and the relative bias against a slow loop reference.

The reference defines a query's neighbours the plain way: among the positions of
its dilation group (equal to it modulo ``dilation``), the ``kernel`` nearest to it
on each axis, so at a border the neighbourhood is shifted inward, not cut.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nas.arch import Site
from nas.blocks.attention import Attention, AttentionCfg
from nas.blocks.dinat import NeighbourhoodAttention, NeighbourhoodAttentionCfg, neighbourhood, neighbourhood_2d
from nas.errors import ConfigError
from nas.space import load_space
from tests.conftest import randomise


def _nearest(position: int, length: int, kernel: int, dilation: int) -> list[int]:
    """The ``kernel`` positions of ``position``'s dilation group nearest to it, in increasing order."""
    group = [other for other in range(length) if other % dilation == position % dilation]
    return sorted(sorted(group, key=lambda other: abs(other - position))[:kernel])


def _reference(module: NeighbourhoodAttention, x: torch.Tensor, size: tuple[int, int], kernel: int,
               dilation: int) -> torch.Tensor:
    """Neighbourhood attention one query and one head at a time."""
    batch, tokens, channels = x.shape
    height, width = size
    heads = module.heads
    head_dim = channels // heads
    query, key, value = (part.reshape(batch, height, width, heads, head_dim)
                         for part in module.qkv(x).chunk(3, dim=-1))
    table = module.relative_position_bias
    out = torch.zeros(batch, height, width, heads, head_dim)
    for row in range(height):
        for col in range(width):
            neighbours = [(key_row, key_col) for key_row in _nearest(row, height, kernel, dilation)
                          for key_col in _nearest(col, width, kernel, dilation)]
            for head in range(heads):
                scores = torch.stack([
                    (query[:, row, col, head] * key[:, key_row, key_col, head]).sum(-1) * head_dim ** -0.5
                    + table[((key_row - row) // dilation + kernel - 1) * (2 * kernel - 1)
                            + (key_col - col) // dilation + kernel - 1, head]
                    for key_row, key_col in neighbours], dim=-1)
                weights = scores.softmax(dim=-1)
                out[:, row, col, head] = sum(weights[:, index, None] * value[:, key_row, key_col, head]
                                             for index, (key_row, key_col) in enumerate(neighbours))
    return module.proj(out.reshape(batch, tokens, channels))


@pytest.mark.parametrize(("length", "kernel", "dilation"),
                         [(9, 3, 1), (7, 7, 1), (12, 3, 4), (13, 3, 4), (14, 5, 2), (56, 7, 8), (30, 7, 4)])
def test_neighbourhood_is_the_nearest_members_of_the_group(length: int, kernel: int, dilation: int) -> None:
    keys, offsets = neighbourhood(length, kernel, dilation)
    for position in range(length):
        expected = _nearest(position, length, kernel, dilation)
        assert keys[position].tolist() == expected
        assert offsets[position].tolist() == [(other - position) // dilation + kernel - 1 for other in expected]


def test_every_query_sees_kernel_squared_distinct_keys_of_its_group() -> None:
    size, kernel, dilation = (13, 10), 3, 3
    keys, bias_rows = neighbourhood_2d(size, kernel, dilation)
    rows, cols = keys // size[1], keys % size[1]
    for token in range(size[0] * size[1]):
        row, col = divmod(token, size[1])
        assert len(set(keys[token].tolist())) == kernel * kernel
        assert bool(((rows[token] - row) % dilation == 0).all() and ((cols[token] - col) % dilation == 0).all())
    assert int(bias_rows.min()) >= 0 and int(bias_rows.max()) < (2 * kernel - 1) ** 2


@pytest.mark.parametrize(("size", "kernel", "dilation"), [((7, 9), 3, 1), ((9, 11), 3, 2), ((12, 10), 3, 3),
                                                          ((8, 8), 5, 1)])
def test_mixer_matches_the_loop_reference(size: tuple[int, int], kernel: int, dilation: int) -> None:
    cfg = NeighbourhoodAttentionCfg(heads=2, kernel=kernel, dilation=dilation)
    assert cfg.effective(*size) == (kernel, dilation)  # the reference knows no clamping
    module = randomise(NeighbourhoodAttention(cfg, dim=8, size=size)).eval()
    x = torch.randn(2, size[0] * size[1], 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _reference(module, x, size, kernel, dilation), rtol=1e-4, atol=1e-5)


def test_a_kernel_covering_the_map_is_global_attention() -> None:
    """With the neighbourhood clamped to the whole map and no bias, NA is plain attention."""
    size = (5, 5)
    module = randomise(NeighbourhoodAttention(NeighbourhoodAttentionCfg(heads=2, kernel=7), dim=8, size=size))
    global_attention = Attention(AttentionCfg(heads=2), dim=8, size=size)
    global_attention.load_state_dict({name: value for name, value in module.state_dict().items()
                                      if not name.startswith("relative_position_bias")})
    with torch.no_grad():
        module.relative_position_bias.zero_()
    x = torch.randn(2, 25, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(module(x), global_attention(x), rtol=1e-4, atol=1e-5)


def test_small_maps_clamp_kernel_then_dilation() -> None:
    cfg = NeighbourhoodAttentionCfg(kernel=7, dilation=8)
    assert cfg.effective(56, 56) == (7, 8)
    assert cfg.effective(48, 48) == (7, 6)  # DiNAT's rule: as many dilated steps as fit
    assert cfg.effective(6, 9) == (6, 1)


@pytest.mark.parametrize(("field", "value"), [("kernel", 4), ("kernel", 0), ("dilation", 0), ("heads", 3)])
def test_check_names_the_bad_field(field: str, value: int) -> None:
    cfg = dataclasses.replace(NeighbourhoodAttentionCfg(heads=2, kernel=3, dilation=1), **{field: value})
    with pytest.raises(ConfigError) as caught:
        cfg.check(Site(8, 8, 8, 8))
    assert caught.value.path == field


def test_metaformer_samples_draw_neighbourhood_attention_and_its_stem() -> None:
    space = load_space("metaformer")
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(0), 200)]
    dilations = {block.mixer.dilation for arch in archs for stage in arch.stages for block in stage.blocks
                 if block.mixer.kind == "neighbourhood_attention"}
    assert dilations == {1, 2, 4, 8}
    assert any(arch.stem.kind == "conv_tokenizer" for arch in archs)
