"""Convolutional family: convnext, bottleneck, mbconv, lka (wiring, shortcuts, sizes, validation, zoo layout)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.arch import Block, parse_component
from nas.blocks.template import BlockContext, create_block
from nas.errors import ConfigError

TINY_YAML = """
schema: 1
input: {{resolution: 32, channels: 3}}
stem: {{kind: conv, dim: {stem_dim}, kernel: 3, stride: 2}}
stages:
  - dim: {dim}
    downsample: null
    blocks: {{mixer: {mixer}, ffn: {ffn}, norm: {norm}}}
head: {{kind: linear, num_classes: 10}}
"""


def _arch(mixer: str, *, dim: int = 16, stem_dim: int = 16, ffn: str = "none", norm: str = "batchnorm") -> nas.Arch:
    return nas.Arch.from_yaml(TINY_YAML.format(mixer=mixer, dim=dim, stem_dim=stem_dim, ffn=ffn, norm=norm))


def _block(mixer: dict, *, in_dim: int, dim: int, size: tuple[int, int] = (9, 9), ffn: str | dict = "none",
           norm: str = "batchnorm", layer_scale: float | None = None) -> nn.Module:
    block = Block(mixer=parse_component("mixer", mixer, "mixer"), ffn=parse_component("ffn", ffn, "ffn"),
                  norm=parse_component("norm", norm, "norm"), layer_scale=layer_scale)
    torch.manual_seed(0)
    return create_block(block, BlockContext(in_dim=in_dim, dim=dim, size=size)).eval()


# -- bottleneck ------------------------------------------------------------------


@pytest.mark.parametrize(("in_dim", "dim", "stride", "projected"),
                         [(32, 32, 1, False), (16, 32, 1, True), (32, 32, 2, True), (16, 64, 2, True)])
def test_bottleneck_projection_shortcut_only_when_shape_changes(in_dim: int, dim: int, stride: int,
                                                                projected: bool) -> None:
    module = _block({"kind": "bottleneck", "stride": stride}, in_dim=in_dim, dim=dim)
    assert isinstance(module.shortcut, nn.Identity) != projected
    if projected:
        conv = module.shortcut[0]
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (in_dim, dim, (1, 1),
                                                                                        (stride, stride))
    out = module(torch.randn(2, in_dim, 9, 9))
    expected = nas.arch.config_type("mixer", "bottleneck")(stride=stride).output_size(9, 9)
    assert out.shape == (2, dim, *expected)


def test_bottleneck_widths_and_stride_on_the_3x3() -> None:
    module = _block({"kind": "bottleneck", "stride": 2, "expansion": 4}, in_dim=64, dim=256)
    convs = [layer[0] for layer in module.branch]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (64, 64, 1, 1), (64, 64, 3, 2), (64, 256, 1, 1)]


def test_bottleneck_identity_block_is_relu_of_residual_sum() -> None:
    module = _block({"kind": "bottleneck"}, in_dim=16, dim=16)
    nn.init.zeros_(module.branch[-1][1].weight)  # last BN gamma = 0: the branch puts out its BN bias (0)
    x = torch.randn(2, 16, 9, 9)
    assert torch.allclose(module(x), torch.relu(x))


@pytest.mark.parametrize(("mixer", "ffn", "norm", "message"), [
    ("{kind: bottleneck}", "mlp", "batchnorm", "has no separate FFN"),
    ("{kind: bottleneck}", "none", "layernorm", "set the block's norm to batchnorm"),
    ("{kind: bottleneck, expansion: 3}", "none", "batchnorm", "3 does not divide dim 16"),
    ("{kind: bottleneck, stride: 0}", "none", "batchnorm", "must be >= 1"),
    ("{kind: mbconv}", "mlp", "batchnorm", "has no separate FFN"),
    ("{kind: mbconv, kernel: 4}", "none", "batchnorm", "odd number"),
    ("{kind: mbconv, se_ratio: 1.5}", "none", "batchnorm", "must be in [0, 1]"),
    ("{kind: mbconv, expand_ratio: 0}", "none", "batchnorm", "must be > 0"),
    ("{kind: convnext, kernel: 6}", "mlp", "layernorm", "odd number"),
    ("{kind: lka, kernel: 20, dilation: 5}", "none", "batchnorm", "must be odd"),
    ("{kind: lka, dilation: 0}", "none", "batchnorm", "must be >= 1"),
])
def test_invalid_configs_name_the_rule_and_the_block(mixer: str, ffn: str, norm: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        _arch(mixer, ffn=ffn, norm=norm)
    assert caught.value.path.startswith("stages[0].blocks[0].mixer")


def test_convnext_needs_the_stage_width_on_input() -> None:
    with pytest.raises(ConfigError, match="put a downsample before the block"):
        _arch("{kind: convnext}", dim=32, stem_dim=16, ffn="mlp", norm="layernorm")


# -- mbconv ----------------------------------------------------------------------


@pytest.mark.parametrize(("in_dim", "dim", "stride", "residual"),
                         [(16, 16, 1, True), (16, 24, 1, False), (16, 16, 2, False)])
def test_mbconv_residual_only_when_shape_is_kept(in_dim: int, dim: int, stride: int, residual: bool) -> None:
    module = _block({"kind": "mbconv", "expand_ratio": 4, "stride": stride}, in_dim=in_dim, dim=dim)
    nn.init.zeros_(module.project[1].weight)  # the branch now puts out zeros
    x = torch.randn(2, in_dim, 9, 9)
    out = module(x)
    size = nas.arch.config_type("mixer", "mbconv")(stride=stride).output_size(9, 9)
    assert out.shape == (2, dim, *size)
    assert torch.equal(out, x) if residual else torch.count_nonzero(out) == 0


def test_mbconv_expansion_is_skipped_at_ratio_one_and_project_is_linear() -> None:
    module = _block({"kind": "mbconv", "expand_ratio": 1}, in_dim=32, dim=16)
    assert isinstance(module.expand, nn.Identity)
    assert module.dwconv[0].groups == module.dwconv[0].in_channels == 32
    assert len(module.project) == 2  # conv + BN, no activation
    expanded = _block({"kind": "mbconv", "expand_ratio": 6}, in_dim=16, dim=16)
    assert expanded.expand[0].out_channels == 96


def test_mbconv_squeeze_excitation_width_and_gating() -> None:
    module = _block({"kind": "mbconv", "expand_ratio": 6, "se_ratio": 0.25}, in_dim=16, dim=16)
    se = module.se
    assert (se.reduce.in_channels, se.reduce.out_channels, se.expand.out_channels) == (96, 4, 96)
    nn.init.zeros_(se.expand.weight)
    nn.init.zeros_(se.expand.bias)
    x = torch.randn(1, 96, 5, 5)
    assert torch.allclose(se(x), x * 0.5)
    assert isinstance(_block({"kind": "mbconv"}, in_dim=16, dim=16).se, nn.Identity)


# -- convnext --------------------------------------------------------------------


def test_convnext_block_is_one_residual_with_norm_between_dwconv_and_ffn() -> None:
    module = _block({"kind": "convnext", "kernel": 7}, in_dim=16, dim=16, ffn={"kind": "mlp", "ratio": 4},
                    norm="layernorm", layer_scale=1e-6)
    assert module.dwconv.groups == 16 and module.dwconv.kernel_size == (7, 7)
    assert module.ffn.fc1.out_channels == 64
    x = torch.randn(2, 16, 9, 9)
    expected = x + module.scale(module.ffn(module.norm(module.dwconv(x))))
    assert torch.allclose(module(x), expected)
    nn.init.zeros_(module.scale.gamma)
    assert torch.equal(module(x), x)


# -- lka -------------------------------------------------------------------------


def test_lka_decomposes_21_with_dilation_3_into_5_7_1() -> None:
    mixer = _block({"kind": "lka"}, in_dim=8, dim=8).fn
    attention = mixer.attention
    assert attention.local.kernel_size == (5, 5) and attention.local.groups == 8
    assert attention.dilated.kernel_size == (7, 7) and attention.dilated.dilation == (3, 3)
    assert attention.dilated.groups == 8 and attention.pointwise.kernel_size == (1, 1)


@pytest.mark.parametrize(("kernel", "dilation"), [(21, 3), (9, 2)])
def test_lka_receptive_field(kernel: int, dilation: int) -> None:
    cfg = nas.arch.config_type("mixer", "lka")(kernel=kernel, dilation=dilation)
    radius = cfg.local_kernel // 2 + dilation * (cfg.dilated_kernel // 2)  # ~ kernel // 2
    mixer = _block({"kind": "lka", "kernel": kernel, "dilation": dilation}, in_dim=4, dim=4).fn
    size = 2 * radius + 7
    x = torch.randn(1, 4, size, size, requires_grad=True)
    centre = size // 2
    mixer(x)[0, :, centre, centre].sum().backward()
    reach = x.grad.abs().sum((0, 1))
    offsets = (torch.arange(size) - centre).abs()
    distance = torch.maximum(offsets[:, None], offsets[None, :])  # Chebyshev distance from the centre
    assert reach[distance > radius].max() == 0
    assert reach[distance == radius].max() > 0


def test_lka_mixer_keeps_the_inner_shortcut() -> None:
    mixer = _block({"kind": "lka"}, in_dim=8, dim=8).fn
    nn.init.zeros_(mixer.proj_out.weight)
    nn.init.zeros_(mixer.proj_out.bias)
    x = torch.randn(2, 8, 9, 9)
    assert torch.equal(mixer(x), x)


# -- zoo layouts -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "reductions", "blocks"), [
    ("resnet50", [4, 8, 16, 32], 16),
    ("mobilenetv2_100", [2, 4, 8, 16, 16, 32, 32], 17),
    ("convnext_tiny", [4, 8, 16, 32], 18),
    ("van_b0", [4, 8, 16, 32], 13),
])
def test_zoo_stage_strides_and_depths(name: str, reductions: list[int], blocks: int) -> None:
    arch = nas.zoo.get(name)
    model = nas.build(arch, device="meta")
    assert [info["reduction"] for info in model.feature_info] == reductions
    assert arch.num_blocks == blocks


@pytest.mark.parametrize("tiny", ["mixer_convnext", "mixer_bottleneck", "mixer_mbconv", "mixer_lka"])
def test_tiny_archs_train_with_drop_path_and_round_trip(tiny: str) -> None:
    from tests.conftest import TINY_DIR

    arch = nas.Arch.load(TINY_DIR / f"{tiny}.yaml")
    assert nas.Arch.from_yaml(arch.to_yaml()) == arch
    torch.manual_seed(0)
    model = nas.build(arch, drop_path_rate=0.5).train()
    assert any(isinstance(module, nas.blocks.DropPath) for module in model.modules())
    out = model(torch.randn(4, 3, 64, 64))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
