"""SMT's kinds (modulation, local-value attention, the residual conv FFN) against references written out.

The scale-aware modulation reference lays ``s`` out head by head, as SMT does,
convolves each head with its own kernel, regroups one channel of every head per
group and mixes each group with an explicit matrix; the module's interleaved
``s`` must be the same layer once its rows are permuted.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nas
from nas.arch import Site
from nas.blocks.smt import (
    LocalValueAttention,
    LocalValueAttentionCfg,
    ResidualConvMlp,
    ResidualConvMlpCfg,
    ScaleAwareModulation,
    ScaleAwareModulationCfg,
)
from nas.errors import ConfigError
from nas.space import load_space
from tests.conftest import randomise


def _modulation_reference(module: ScaleAwareModulation, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SMT's layout: head ``i`` holds rows ``i * C/h ... (i + 1) * C/h - 1`` of ``s``."""
    batch, tokens, channels = x.shape
    heads, per_head = module.heads, channels // module.heads
    interleaved_row = [channel * heads + head for head in range(heads) for channel in range(per_head)]
    s = F.linear(x, module.s.weight[interleaved_row], module.s.bias[interleaved_row])
    s = s.transpose(1, 2).reshape(batch, channels, *size)
    scaled = []
    for head, conv in enumerate(module.scales):
        part = s[:, head * per_head:(head + 1) * per_head]
        scaled.append(F.conv2d(part, conv.weight, conv.bias, padding=conv.kernel_size[0] // 2, groups=per_head))
    expand = module.aggregate.out_channels // channels
    groups = []
    for group in range(per_head):  # one channel of every head, mixed into expand * heads channels
        members = torch.stack([scaled[head][:, group] for head in range(heads)], dim=1)
        weight = module.aggregate.weight[group * expand * heads:(group + 1) * expand * heads, :, 0, 0]
        bias = module.aggregate.bias[group * expand * heads:(group + 1) * expand * heads]
        groups.append(torch.einsum("oi,bihw->bohw", weight, members) + bias[:, None, None])
    modulator = module.modulator(F.gelu(module.aggregate_norm(torch.cat(groups, dim=1))))
    return module.proj(modulator.flatten(2).transpose(1, 2) * module.v(x))


def test_modulation_matches_the_head_major_reference() -> None:
    size = (6, 7)
    module = randomise(ScaleAwareModulation(ScaleAwareModulationCfg(kernels=(3, 5, 7, 9)), dim=16, size=size))
    module.eval()
    x = torch.randn(2, size[0] * size[1], 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _modulation_reference(module, x, size), rtol=1e-4, atol=1e-4)


def test_each_head_has_its_own_kernel() -> None:
    """Head ``i`` is a depthwise convolution of kernel ``kernels[i]`` over its ``dim / heads`` channels."""
    kernels = (3, 5, 7)
    module = ScaleAwareModulation(ScaleAwareModulationCfg(kernels=kernels), dim=6, size=(15, 15))
    for head, conv in enumerate(module.scales):
        assert conv.kernel_size == (kernels[head], kernels[head]) and conv.groups == conv.in_channels == 2


def _local_value_reference(module: LocalValueAttention, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    batch, tokens, channels = x.shape
    heads, head_dim = module.heads, channels // module.heads
    query, key, value = module.qkv(x).chunk(3, dim=-1)
    mixed = torch.zeros_like(value)
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        weights = (query[..., part] @ key[..., part].transpose(1, 2) * head_dim ** -0.5).softmax(dim=-1)
        mixed[..., part] = weights @ value[..., part]
    value_map = value.transpose(1, 2).reshape(batch, channels, *size)
    padding = module.local.kernel_size[0] // 2
    local = torch.stack([F.conv2d(value_map[:, channel:channel + 1], module.local.weight[channel:channel + 1],
                                  module.local.bias[channel:channel + 1], padding=padding)[:, 0]
                         for channel in range(channels)], dim=1)
    return module.proj(mixed + local.flatten(2).transpose(1, 2))


def test_local_value_attention_matches_the_reference() -> None:
    size = (5, 6)
    module = randomise(LocalValueAttention(LocalValueAttentionCfg(heads=2, kernel=3), dim=8, size=size))
    x = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(module(x), _local_value_reference(module, x, size), rtol=1e-4, atol=1e-5)


def test_smt_stem_reduces_four_times() -> None:
    arch = nas.zoo.get("smt_tiny")
    assert arch.stem.output_size(224, 224) == (56, 56)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("changes", "field"), [({"kernels": (3, 4)}, "kernels[1]"), ({"kernels": ()}, "kernels"),
                                                ({"kernels": (3, 5, 7)}, "kernels"), ({"expand": 0}, "expand")])
def test_modulation_check_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    cfg = dataclasses.replace(ScaleAwareModulationCfg(), **changes)
    with pytest.raises(ConfigError) as caught:
        cfg.check(Site(16, 16, 8, 8))
    assert caught.value.path == field


def test_metaformer_samples_draw_every_smt_kind() -> None:
    space = load_space("metaformer")
    archs = [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(0), 200)]
    blocks = [block for arch in archs for stage in arch.stages for block in stage.blocks]
    assert {"scale_aware_modulation", "local_value_attention"} <= {block.mixer.kind for block in blocks}
    assert "residual_conv_mlp" in {block.ffn.kind for block in blocks}
    assert any(arch.stem.kind == "smt_stem" for arch in archs)


def _pointwise(layer: nn.Module) -> torch.Tensor:
    """A pointwise layer's ``out x in`` matrix, whether a linear layer or a 1x1 convolution."""
    return layer.weight.reshape(layer.weight.shape[0], -1)


@pytest.mark.parametrize("layout", ["nlc", "nchw"])
def test_residual_conv_mlp_adds_the_depthwise_input_back(layout: str) -> None:
    size = (4, 5)
    ffn = randomise(ResidualConvMlp(ResidualConvMlpCfg(ratio=2), dim=4, layout=layout, size=size))  # type: ignore[arg-type]
    conv = next(module for module in ffn.mid.modules() if isinstance(module, nn.Conv2d))
    tokens = torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(3))
    hidden = tokens @ _pointwise(ffn.fc1).T + ffn.fc1.bias
    hidden_map = hidden.transpose(1, 2).reshape(2, 8, *size)
    mixed = F.gelu(hidden_map + F.conv2d(hidden_map, conv.weight, conv.bias, padding=1, groups=8))
    expected = mixed.flatten(2).transpose(1, 2) @ _pointwise(ffn.fc2).T + ffn.fc2.bias
    x = tokens if layout == "nlc" else tokens.transpose(1, 2).reshape(2, 4, *size)
    with torch.no_grad():
        out = ffn(x)
    out = out if layout == "nlc" else out.flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-4, atol=1e-5)

