"""MaxViT's multi-axis attention against slow references written with index loops.

Block attention (``window_attention`` without a shift) and grid attention must partition
the map into the right groups, put it back exactly, and let each token attend to the
tokens of its own group only, with the relative bias of their offset inside the group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import nas
from nas.blocks.maxvit import (
    GridAttention,
    GridAttentionCfg,
    MaxViTStem,
    MaxViTStemCfg,
    MBConvDownsample,
    MBConvDownsampleCfg,
    grid_partition,
    grid_reverse,
)
from nas.blocks.swin import WindowAttention, WindowAttentionCfg, window_partition, window_reverse
from nas.errors import ConfigError

Cell = tuple[int, int]
SIZES = [(8, 8), (8, 12), (12, 4)]


def _block_layout(size: tuple[int, int], side: int) -> tuple[Callable[[Cell], Cell], Callable[[Cell], Cell]]:
    """Block partition: the group of a cell is its window, its coordinates are its place in the window."""
    return (lambda cell: (cell[0] // side, cell[1] // side)), (lambda cell: (cell[0] % side, cell[1] % side))


def _grid_layout(size: tuple[int, int], side: int) -> tuple[Callable[[Cell], Cell], Callable[[Cell], Cell]]:
    """Grid partition: cells ``H / side`` apart share a group; the coordinates are the place on that coarse grid."""
    step_y, step_x = size[0] // side, size[1] // side
    return (lambda cell: (cell[0] % step_y, cell[1] % step_x)), (lambda cell: (cell[0] // step_y, cell[1] // step_x))


def _slow_partition(x: torch.Tensor, side: int, layout: Callable) -> torch.Tensor:
    """``(B, H, W, C) -> (B, groups, side**2, C)`` by visiting every cell: group and place from ``layout``."""
    batch, height, width, channels = x.shape
    group_of, coords_of = layout((height, width), side)
    groups_x = width // side  # windows per row, or the step between grid members along a row
    out = torch.full((batch, (height * width) // side**2, side * side, channels), float("nan"))
    for row in range(height):
        for col in range(width):
            group_row, group_col = group_of((row, col))
            row_in, col_in = coords_of((row, col))
            out[:, group_row * groups_x + group_col, row_in * side + col_in] = x[:, row, col]
    return out


def test_slow_grid_layout_is_the_papers() -> None:
    """The reference itself: on an 8x8 map with grid 4, group (0, 0) holds rows and columns 0, 2, 4, 6."""
    x = torch.arange(64.0).reshape(1, 8, 8, 1)
    groups = _slow_partition(x, 4, _grid_layout)
    expected = torch.tensor([[row * 8 + col for row in (0, 2, 4, 6) for col in (0, 2, 4, 6)]], dtype=torch.float)
    assert torch.equal(groups[0, 0, :, 0], expected[0])
    assert torch.equal(groups[0, 3, :, 0], expected[0] + 9)  # group (1, 1): every cell one down, one right


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("partition", "reverse", "layout"), [
    (window_partition, window_reverse, _block_layout),
    (grid_partition, grid_reverse, _grid_layout),
], ids=["block", "grid"])
def test_partition_and_inverse_match_index_loops(size: tuple[int, int], partition: Callable, reverse: Callable,
                                                 layout: Callable) -> None:
    side = 4
    x = torch.randn(2, *size, 3)
    groups = partition(x, side)
    assert torch.equal(groups, _slow_partition(x, side, layout))
    assert torch.equal(reverse(groups, side, size), x)
    other = torch.randn_like(groups)  # the inverse puts any grouped tensor back where the loops take it from
    assert torch.equal(partition(reverse(other, side, size), side), other)


def _slow_attention(mixer: torch.nn.Module, x: torch.Tensor, size: tuple[int, int], side: int,
                    layout: Callable) -> torch.Tensor:
    """Attention of every token over the tokens of its group, one score at a time, bias by offset in the group."""
    height, width = size
    channels = x.shape[-1]
    heads = mixer.heads
    head_dim = channels // heads
    group_of, coords_of = layout(size, side)
    query, key, value = mixer.qkv(x[0]).split(channels, dim=-1)
    cells = [(row, col) for row in range(height) for col in range(width)]
    out = torch.zeros(height * width, channels)
    for position, cell in enumerate(cells):
        members = [other for other, peer in enumerate(cells) if group_of(peer) == group_of(cell)]
        for head in range(heads):
            part = slice(head * head_dim, (head + 1) * head_dim)
            scores = []
            for other in members:
                (row, col), (peer_row, peer_col) = coords_of(cell), coords_of(cells[other])
                offset = (row - peer_row + side - 1) * (2 * side - 1) + col - peer_col + side - 1
                scores.append(query[position, part] @ key[other, part] * head_dim**-0.5
                              + mixer.relative_position_bias[offset, head])
            weights = torch.softmax(torch.stack(scores), dim=0)
            mixed = [weight * value[other, part] for weight, other in zip(weights, members, strict=True)]
            out[position, part] = torch.stack(mixed).sum(0)
    return mixer.proj(out)[None]


def _mixers(size: tuple[int, int], side: int) -> list[tuple[torch.nn.Module, Callable]]:
    torch.manual_seed(0)
    block = WindowAttention(WindowAttentionCfg(heads=2, window=side, shift=0), dim=8, size=size)
    grid = GridAttention(GridAttentionCfg(heads=2, grid=side), dim=8, size=size)
    for mixer in (block, grid):
        torch.nn.init.normal_(mixer.relative_position_bias)  # a bias large enough to matter
    return [(block, _block_layout), (grid, _grid_layout)]


@pytest.mark.parametrize("size", SIZES)
def test_attention_matches_slow_reference(size: tuple[int, int]) -> None:
    x = torch.randn(1, size[0] * size[1], 8)
    for mixer, layout in _mixers(size, 4):
        with torch.no_grad():
            torch.testing.assert_close(mixer(x), _slow_attention(mixer, x, size, 4, layout), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_a_token_sees_exactly_its_group(size: tuple[int, int]) -> None:
    """Changing one token moves the outputs of its group's tokens and of no other."""
    height, width = size
    x = torch.randn(1, height * width, 8)
    source = (height - 1) * width + 1  # a token in the last row
    changed = x.clone()
    changed[0, source] += 1.0
    for mixer, layout in _mixers(size, 4):
        group_of, _ = layout(size, 4)
        with torch.no_grad():
            moved = (mixer(changed) - mixer(x)).abs().amax(-1)[0] > 1e-6
        same_group = torch.tensor([group_of(divmod(token, width)) == group_of(divmod(source, width))
                                   for token in range(height * width)])
        assert torch.equal(moved, same_group)


def test_grid_is_clamped_to_a_small_map_and_must_divide_a_larger_one() -> None:
    mixer = GridAttention(GridAttentionCfg(heads=2, grid=7), dim=8, size=(4, 4))
    assert mixer.grid == 4  # one group: attention over the whole map
    arch = nas.Arch.load("tests/tiny/mixer_grid_attention.yaml").to_dict()
    arch["stages"][0]["blocks"][1]["mixer"]["grid"] = 3
    with pytest.raises(ConfigError, match="grid 3 does not divide the 16x16 feature map"):
        nas.Arch.from_dict(arch)


def _slow_avg_pool_ceil(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling that keeps the last row/column of an odd map, averaging only the cells it has."""
    batch, channels, height, width = x.shape
    out = torch.empty(batch, channels, (height + 1) // 2, (width + 1) // 2)
    for row in range(out.shape[2]):
        for col in range(out.shape[3]):
            out[:, :, row, col] = x[:, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2].mean((2, 3))
    return out


@pytest.mark.parametrize(("in_dim", "size"), [(4, (8, 8)), (4, (7, 9)), (8, (7, 7))])
def test_strided_mbconv_shortcut_is_pool_then_projection(in_dim: int, size: tuple[int, int]) -> None:
    """With the residual branch's projection zeroed, the downsampler is ``Proj(Pool(x))`` (identity projection when
    the width is kept), also on odd maps, where both branches give ``ceil(H / 2)``."""
    cfg = MBConvDownsampleCfg()
    module = MBConvDownsample(cfg, in_dim=in_dim, dim=8, size=size).eval()
    torch.nn.init.zeros_(module.project.weight)
    torch.nn.init.zeros_(module.project.bias)
    x = torch.randn(2, in_dim, *size)
    pooled = _slow_avg_pool_ceil(x)
    expected = pooled if in_dim == 8 else torch.nn.functional.conv2d(pooled, module.shortcut.weight,
                                                                      module.shortcut.bias)
    with torch.no_grad():
        out = module(x)
    assert out.shape[-2:] == cfg.output_size(*size)
    torch.testing.assert_close(out, expected)


def test_stem_reaches_quarter_resolution_on_odd_inputs() -> None:
    cfg = MaxViTStemCfg(dim=16, hidden=8)
    for resolution in (56, 57, 63):
        stem = MaxViTStem(cfg, in_dim=3, size=(resolution, resolution)).eval()
        with torch.no_grad():
            out = stem(torch.randn(1, 3, resolution, resolution))
        assert out.shape == (1, 16, *cfg.output_size(resolution, resolution))
        assert out.shape[-1] == -(-resolution // 4)


def test_sampling_metaformer_draws_every_maxvit_kind() -> None:
    """Each MaxViT kind is reachable in the metaformer space: a seeded sample draws all of them."""
    space = nas.space.load_space("metaformer")
    drawn: set[tuple[str, str]] = set()
    for vector in space.sample_vectors(np.random.default_rng(0), 200):
        arch = space.decode(vector)
        drawn |= {("stem", arch.stem.kind), ("head", arch.head.kind)}
        for stage in arch.stages:
            drawn |= {("mixer", block.mixer.kind) for block in stage.blocks}
            if stage.downsample is not None:
                drawn.add(("downsample", stage.downsample.kind))
    wanted = {("stem", "maxvit"), ("downsample", "mbconv"), ("mixer", "grid_attention"), ("head", "pre_logits")}
    assert wanted <= drawn, f"never drawn: {sorted(wanted - drawn)}"


def test_zoo_listing_names_the_paper() -> None:
    from nas.commands.catalog import _paper

    assert _paper(nas.zoo.get("maxvit_tiny").published.source) == "arXiv:2204.01697"  # type: ignore[union-attr]
    assert _paper("microsoft/Cream README.md") == ""
