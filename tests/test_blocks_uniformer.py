"""UniFormer's blocks: the dynamic position embedding comes first, the local MHRA is local, the global one global.

References are spelled out by hand: the depthwise position convolution as a
sum over shifted copies of the map, attention as one softmax per head.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nas
from nas.arch import Block, parse_component
from nas.blocks import BlockContext, create_block
from nas.blocks.uniformer import GlobalMhra, GlobalMhraCfg, LocalMhraCfg, PositionConv
from nas.errors import ConfigError
from nas.space import load_space


def _block(mixer: dict, norm: str) -> Block:
    return Block(mixer=parse_component("mixer", mixer, "mixer"),
                 ffn=parse_component("ffn", {"kind": "mlp", "ratio": 2}, "ffn"),
                 norm=parse_component("norm", norm, "norm"))


def _shifted_sum(grid: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A zero-padded depthwise convolution as a sum of shifted, weighted copies of the map."""
    kernel = weight.shape[-1]
    half = kernel // 2
    height, width = grid.shape[-2:]
    padded = F.pad(grid, (half, half, half, half))
    out = bias.view(1, -1, 1, 1).expand_as(grid).clone()
    for row in range(kernel):
        for column in range(kernel):
            out += weight[:, 0, row, column].view(1, -1, 1, 1) * padded[:, :, row:row + height, column:column + width]
    return out


@pytest.mark.parametrize(("mixer", "norm", "layout"), [
    ({"kind": "local_mhra", "kernel": 5}, "batchnorm", "nchw"),
    ({"kind": "global_mhra", "heads": 2}, "layernorm", "nlc"),
])
def test_position_conv_comes_before_the_template_block(mixer: dict, norm: str, layout: str) -> None:
    """``block(x) == template(x + dwconv(x))``, where the template is the same block without the DPE."""
    torch.manual_seed(0)
    size, dim = (5, 6), 8
    context = BlockContext(in_dim=dim, dim=dim, size=size)
    with_dpe = create_block(_block({**mixer, "pos_kernel": 3}, norm), context).eval()
    without = create_block(_block({**mixer, "pos_kernel": 0}, norm), context).eval()
    position, body = with_dpe[0], with_dpe[1]
    assert isinstance(position, PositionConv)
    without.load_state_dict(body.state_dict())
    grid = torch.randn(2, dim, *size)
    conv = position.conv if layout == "nchw" else position.conv[1]
    shifted = grid + _shifted_sum(grid, conv.weight, conv.bias)
    to_layout = (lambda t: t) if layout == "nchw" else (lambda t: t.flatten(2).transpose(1, 2))
    with torch.no_grad():
        torch.testing.assert_close(with_dpe(to_layout(grid)), without(to_layout(shifted)), rtol=1e-5, atol=1e-5)


def test_position_conv_is_the_same_in_both_layouts() -> None:
    torch.manual_seed(1)
    size, dim = (4, 7), 6
    on_map = PositionConv(dim, 3, "nchw", size=size)
    on_tokens = PositionConv(dim, 3, "nlc", size=size)
    on_tokens.conv[1].load_state_dict(on_map.conv.state_dict())
    grid = torch.randn(2, dim, *size)
    with torch.no_grad():
        torch.testing.assert_close(on_tokens(grid.flatten(2).transpose(1, 2)),
                                   on_map(grid).flatten(2).transpose(1, 2), rtol=1e-6, atol=1e-6)


def _changes_at(block: torch.nn.Module, grid: torch.Tensor, to_layout, source: tuple[int, int],
                target: tuple[int, int]) -> bool:
    """Whether changing the input at ``source`` changes the output at ``target``."""
    changed = grid.clone()
    changed[:, :, source[0], source[1]] += torch.linspace(-5.0, 5.0, grid.shape[1])  # not a constant: LayerNorm
    width = grid.shape[-1]
    with torch.no_grad():
        before, after = block(to_layout(grid)), block(to_layout(changed))
    if before.dim() == 4:
        return not torch.allclose(before[..., target[0], target[1]], after[..., target[0], target[1]])
    index = target[0] * width + target[1]
    return not torch.allclose(before[:, index], after[:, index])


def test_local_mhra_relates_only_a_neighbourhood_and_global_mhra_every_token() -> None:
    """Without the DPE, a local block with a 3x3 aggregator sees one step away; a global block sees everything."""
    torch.manual_seed(2)
    size, dim = (7, 7), 8
    context = BlockContext(in_dim=dim, dim=dim, size=size)
    grid = torch.randn(1, dim, *size)
    local = create_block(_block({"kind": "local_mhra", "kernel": 3, "pos_kernel": 0}, "batchnorm"), context).eval()
    identity = lambda t: t  # noqa: E731
    assert _changes_at(local, grid, identity, (3, 4), (3, 3))
    assert not _changes_at(local, grid, identity, (3, 5), (3, 3))
    assert not _changes_at(local, grid, identity, (0, 0), (3, 3))
    attention = create_block(_block({"kind": "global_mhra", "heads": 2, "pos_kernel": 0}, "layernorm"), context).eval()
    tokens = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    assert _changes_at(attention, grid, tokens, (0, 0), (6, 6))


def test_global_mhra_matches_per_head_softmax() -> None:
    torch.manual_seed(3)
    dim, heads, tokens = 12, 3, 10
    mixer = GlobalMhra(GlobalMhraCfg(heads=heads), dim=dim, size=(2, 5)).eval()
    x = torch.randn(2, tokens, dim)
    query, key, value = mixer.qkv(x).chunk(3, dim=-1)
    head_dim = dim // heads
    outputs = []
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        scores = query[..., part] @ key[..., part].transpose(1, 2) / head_dim ** 0.5
        outputs.append(torch.softmax(scores, dim=-1) @ value[..., part])
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), mixer.proj(torch.cat(outputs, dim=-1)), rtol=1e-5, atol=1e-5)


def test_bad_settings_name_the_field() -> None:
    site = nas.arch.Site(8, 8, 7, 7)
    for cfg, path in ((LocalMhraCfg(kernel=4), "kernel"), (LocalMhraCfg(pos_kernel=2), "pos_kernel"),
                      (GlobalMhraCfg(heads=3), "heads"), (GlobalMhraCfg(pos_kernel=-1), "pos_kernel")):
        with pytest.raises(ConfigError) as error:
            cfg.check(site)
        assert error.value.path == path
    with pytest.raises(ConfigError, match="class token") as error:
        GlobalMhraCfg(heads=2).check(site._replace(prefix_tokens=1))
    assert error.value.path == "pos_kernel"
    GlobalMhraCfg(heads=2, pos_kernel=0).check(site._replace(prefix_tokens=1))  # attention alone takes class tokens


def test_metaformer_samples_draw_local_mhra_early_and_global_mhra_late() -> None:
    space = load_space("metaformer")
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(0), 300)]
    stages: dict[str, set[int]] = {"local_mhra": set(), "global_mhra": set()}
    for arch in archs:
        for index, stage in enumerate(arch.stages):
            for block in stage.blocks:
                stages.get(block.mixer.kind, set()).add(index)
    assert stages == {"local_mhra": {0, 1}, "global_mhra": {2, 3}}
