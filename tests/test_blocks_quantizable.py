"""The attention options of "Quantizable Transformers" (arXiv:2306.12929): clipped softmax and gated heads.

Exactness against textbook formulas, the gate's no-op, ids kept at the defaults, and, for every softmax
attention kind that declares the options (found through the registry, so a new kind is covered by its
declaration and its tiny arch), the explicit path equal to the fused one and an open gate equal to none.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import nas
from nas.arch import Block, config_type, list_kinds, parse_component
from nas.blocks.attention import Attention, AttentionCfg
from nas.blocks.efficientformer import EfficientFormerAttention, EfficientFormerAttentionCfg
from nas.blocks.quantizable import HeadGate, QuantizableAttention, clipped_softmax
from nas.blocks.swin import WindowAttention, WindowAttentionCfg
from nas.blocks.template import BlockContext, create_block
from nas.cost import profile
from nas.errors import ConfigError
from tests.conftest import randomise, seeded_generator, tiny_files

QUANTIZABLE_KINDS = sorted(kind for kind in list_kinds("mixer")
                           if issubclass(config_type("mixer", kind), QuantizableAttention))


def _with_options(arch: nas.Arch, **options: object) -> nas.Arch:
    """``arch`` with ``options`` set on every mixer that takes them."""
    def block(item: Block) -> Block:
        if not isinstance(item.mixer, QuantizableAttention):
            return item
        return dataclasses.replace(item, mixer=dataclasses.replace(item.mixer, **options))

    return arch.replace(stages=tuple(dataclasses.replace(stage, blocks=tuple(block(item) for item in stage.blocks))
                                     for stage in arch.stages))


def _tiny_with(kind: str) -> Path:
    for path in tiny_files():
        arch = nas.Arch.load(path)
        if any(item.mixer.kind == kind for stage in arch.stages for item in stage.blocks):
            return path
    raise AssertionError(f"no tiny arch uses {kind}")


# ---------------------------------------------------------------------------- clipped softmax


def test_clipped_softmax_with_identity_stretch_is_softmax() -> None:
    scores = torch.randn(3, 5, 7, generator=seeded_generator()) * 4
    assert torch.equal(clipped_softmax(scores, 1.0, 0.0), scores.softmax(-1))


def test_clipped_softmax_reaches_exact_zero_and_one() -> None:
    scores = torch.tensor([[9.0, 0.0, -1.0, 0.5], [0.1, 0.0, 0.2, -0.1]])
    out = clipped_softmax(scores, 1.1, -0.1)
    reference = ((1.1 + 0.1) * scores.softmax(-1) - 0.1).clamp(0, 1)
    torch.testing.assert_close(out, reference)
    assert out[0, 0].item() == 1.0  # a dominant score: probability exactly 1 with finite scores
    assert (out[0, 1:] == 0.0).all()  # the rest exactly 0
    assert ((out[1] > 0) & (out[1] < 1)).all()  # near-uniform scores stay inside (0, 1)
    torch.testing.assert_close(clipped_softmax(scores, 1.0, 0.0), scores.softmax(-1))


def test_clipped_attention_matches_a_textbook_reference() -> None:
    dim, heads, zeta, gamma = 12, 3, 1.05, -0.08
    cfg = AttentionCfg(heads=heads, clip_zeta=zeta, clip_gamma=gamma)
    mixer = randomise(Attention(cfg, dim=dim, size=(3, 3), prefix_tokens=1)).eval()
    x = torch.randn(2, 10, dim, generator=seeded_generator())
    query, key, value = mixer.qkv(x).chunk(3, dim=-1)
    heads_out = []
    for head in range(heads):
        part = slice(head * dim // heads, (head + 1) * dim // heads)
        scores = query[..., part] @ key[..., part].transpose(-1, -2) / (dim // heads) ** 0.5
        weights = ((zeta - gamma) * scores.softmax(-1) + gamma).clamp(0, 1)
        heads_out.append(weights @ value[..., part])
    torch.testing.assert_close(mixer(x), mixer.proj(torch.cat(heads_out, dim=-1)))


@pytest.mark.parametrize(("field", "value", "rule"), [("clip_zeta", 0.9, ">= 1"), ("clip_gamma", 0.1, "<= 0")])
def test_stretch_out_of_range_is_refused_with_its_path(field: str, value: float, rule: str) -> None:
    arch = nas.Arch.load(_tiny_with("attention"))
    with pytest.raises(ConfigError, match=rule) as caught:
        _with_options(arch, **{field: value})
    assert caught.value.path.endswith(f"mixer.{field}")


# ---------------------------------------------------------------------------- gated attention


def test_head_gate_matches_a_per_head_linear_reference() -> None:
    dim, heads = 12, 3
    gate = randomise(HeadGate(dim, heads))
    x, out = torch.randn(2, 5, dim, generator=seeded_generator()), torch.randn(2, 5, dim)
    expected = []
    for head in range(heads):
        part = slice(head * 4, head * 4 + 4)
        logit = x[..., part] @ gate.weight[part] + gate.bias[head]  # Linear(head_dim -> 1) of head h
        expected.append(out[..., part] * torch.sigmoid(logit)[..., None])
    torch.testing.assert_close(gate(x, out), torch.cat(expected, dim=-1))


def _closed(module: torch.nn.Module) -> None:
    """Every head gate shut: sigmoid(-inf) is exactly 0."""
    for gate in (item for item in module.modules() if isinstance(item, HeadGate)):
        with torch.no_grad():
            gate.bias.fill_(float("-inf"))


@pytest.mark.parametrize("cfg", [AttentionCfg(heads=2, gated=True),
                                 WindowAttentionCfg(heads=2, window=2, gated=True, clip_gamma=-0.05)], ids=str)
def test_closed_gate_is_a_no_op_on_the_residual(cfg: AttentionCfg | WindowAttentionCfg) -> None:
    dim, size = 8, (4, 4)
    block = Block(mixer=cfg, ffn=parse_component("ffn", "none", "ffn"), norm=parse_component("norm", "layernorm", ""))
    module = randomise(create_block(block, BlockContext(in_dim=dim, dim=dim, size=size))).eval()
    _closed(module)
    x = torch.randn(2, 16, dim, generator=seeded_generator())
    mixer = module.fn
    assert isinstance(mixer, (Attention, WindowAttention))
    torch.testing.assert_close(module(x), x + mixer.proj.bias, rtol=0, atol=0)  # only the output bias is left
    with torch.no_grad():
        mixer.proj.bias.zero_()
    assert torch.equal(module(x), x)


def test_gate_adds_its_parameters_and_is_priced() -> None:
    arch = nas.zoo.get("deit_tiny")
    gated = _with_options(arch, gated=True)
    dim, heads, blocks = arch.stages[0].dim, arch.stages[0].blocks[0].mixer.heads, arch.num_blocks
    assert profile(gated).params - profile(arch).params == blocks * (dim + heads)  # Linear(head_dim, 1) per head
    for options in ({"gated": True}, {"clip_zeta": 1.003, "clip_gamma": -0.025}):
        ops = profile(_with_options(arch, **options)).ops
        assert not [op.name for op in ops if op.op_class == "other"], options
    for target in nas.latency.list_targets():
        before, after = (nas.latency.predict(item, target=target) for item in (arch, gated))
        assert after.latency_ms > before.latency_ms, target


# ---------------------------------------------------------------------------- every kind that declares the options


def test_defaults_keep_every_existing_id_and_file() -> None:
    arch = nas.zoo.get("deit_tiny")
    assert _with_options(arch, clip_zeta=1.0, clip_gamma=0.0, gated=False).id == arch.id
    assert "gated" not in arch.to_yaml() and "clip_" not in arch.to_yaml()
    assert "gated: true" in _with_options(arch, gated=True).to_yaml()
    assert _with_options(arch, gated=True).id != arch.id


def test_every_softmax_attention_kind_declares_the_options() -> None:
    expected = {"attention", "window_attention", "spatial_reduction_attention", "grid_attention",
                "efficientformer_attention", "efficientvit", "channel_attention", "davit_spatial", "davit_channel",
                "global_context", "global_mhra", "conv_projection_attention", "neighbourhood_attention",
                "local_value_attention", "class_attention", "gpsa", "outlook_attention", "crossvit"}
    assert expected <= set(QUANTIZABLE_KINDS)


@pytest.mark.parametrize("kind", QUANTIZABLE_KINDS)
def test_explicit_softmax_and_open_gate_equal_the_plain_kind(kind: str) -> None:
    """A stretch within 1e-7 of the identity (the explicit path) and a gate held open equal the fused, ungated
    kind with the same weights: every kind wires the shared core where its softmax was."""
    arch = nas.Arch.load(_tiny_with(kind))
    torch.manual_seed(0)
    plain = nas.build(arch).eval()
    try:
        optioned_arch = _with_options(arch, clip_gamma=-1e-7, gated=True)
    except ConfigError as exc:  # EfficientFormer's tiny arch has heads that do not divide its width
        assert exc.path.endswith("mixer.gated")
        optioned_arch = _with_options(arch, clip_gamma=-1e-7)
        assert kind == "efficientformer_attention"
    optioned = nas.build(optioned_arch).eval()
    missing, unexpected = optioned.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(isinstance(optioned.get_submodule(name.rpartition(".")[0]), HeadGate)
                                  for name in missing)
    for gate in (item for item in optioned.modules() if isinstance(item, HeadGate)):
        with torch.no_grad():
            gate.bias.fill_(float("inf"))
    x = torch.randn(2, arch.input.channels, arch.input.resolution, arch.input.resolution,
                    generator=seeded_generator())
    with torch.no_grad():
        torch.testing.assert_close(optioned(x), plain(x), rtol=1e-5, atol=1e-5)


def test_efficientformer_open_gate_equals_no_gate_where_heads_divide_the_width() -> None:
    dim, size = 16, (4, 4)
    cfg = EfficientFormerAttentionCfg(key_dim=4, heads=2, attn_ratio=2)
    plain = randomise(EfficientFormerAttention(cfg, dim=dim, size=size)).eval()
    gated = EfficientFormerAttention(dataclasses.replace(cfg, gated=True), dim=dim, size=size).eval()
    gated.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        gated.gate.bias.fill_(float("inf"))
    x = torch.randn(2, 16, dim, generator=seeded_generator())
    torch.testing.assert_close(gated(x), plain(x))
    _closed(gated)
    torch.testing.assert_close(gated(x), plain.proj.bias.expand(2, 16, dim), rtol=0, atol=0)
