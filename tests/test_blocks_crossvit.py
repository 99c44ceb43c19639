"""CrossViT (arXiv:2103.14899): cross-attention in which only the class token queries, the class-token fusion and
the multi-scale encoder's wiring, checked against slow references on tiny inputs; the body's output, checks and
sharing declarations; the image stem under the proxy scale; and the zoo's Arch ids, which the branched body leaves
as they were."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.arch import Block, Site, parse_component
from nas.blocks.contract import Chunks, Prefix, declared_sharing
from nas.blocks.crossvit import ClassTokenFusion, CrossAttention, CrossVit, CrossVitCfg, MultiScaleEncoder
from nas.blocks.template import BlockContext
from nas.errors import ConfigError
from nas.supernet import ProxyScale, Supernet, proxy
from nas.supernet.elastic import Layouts
from tests.conftest import TINY_DIR, randomise, seeded_generator

# The Arch id of every zoo model before CrossViT came (main at f4e9609): the branched body is a block like any
# other, so no existing file changes its id (ids name run directories, cache entries and exported points).
ZOO_IDS = {
    "convnext_base": "03e48ad288d9", "convnext_small": "0ba9a18d364a", "convnext_tiny": "195f3c148f84",
    "cvt_13": "a214f52b0058", "davit_tiny": "62d3715856ab", "deit_base": "90115ab23cbe",
    "deit_small": "d3cf5de7e49a", "deit_tiny": "3c8aad38efbe", "dinat_mini": "a74153521c0d",
    "efficientformer_l1": "15fad89e42cc", "efficientformer_l3": "955efdbf9fa8", "efficientformer_l7": "f811c5e1e14b",
    "efficientvit_m0": "df043134881e", "efficientvit_m1": "9e9c597a835a", "efficientvit_m2": "27b000baf99e",
    "efficientvit_m3": "53703f06b1a1", "efficientvit_m4": "2aece1e00cc9", "efficientvit_m5": "5481c8e4bdd8",
    "gcvit_tiny": "e044413716fe", "gcvit_xxtiny": "bca1777c158e", "maxvit_tiny": "5200b162ddce",
    "mobilenetv2_100": "249f808aa37e", "poolformer_m36": "18cf24952633", "poolformer_m48": "072d4837f402",
    "poolformer_s12": "dca5022f2303", "poolformer_s24": "c3c5d00e4677", "poolformer_s36": "8b4b4e740260",
    "pvt_small": "950591ba8404", "pvt_tiny": "6b30f01d45e7", "resnet50": "b431a610d9af", "smt_tiny": "e7200e2443c4",
    "swin_base": "6a6d99dc838d", "swin_small": "421f9e8d4e53", "swin_tiny": "f374b8d3af4e",
    "uniformer_s": "ff26a53adfc5", "van_b0": "f4b3ecb06d63", "van_b1": "181267cc65b2", "van_b2": "602cc998705a",
    "van_b3": "367e4542dbb4",
}


def test_zoo_ids_are_unchanged() -> None:
    changed = {name: nas.zoo.get(name).id for name, expected in ZOO_IDS.items() if nas.zoo.get(name).id != expected}
    assert not changed, f"zoo models whose Arch id changed: {changed}"


# ---------------------------------------------------------------------------- cross-attention


def _reference_cross_attention(attn: CrossAttention, x: torch.Tensor) -> torch.Tensor:
    """Token 0's query against every token's key (token 0 included), head by head, with an explicit softmax."""
    batch, tokens, dim = x.shape
    head_dim = dim // attn.heads
    query, key, value = attn.query(x[:, 0]), attn.key(x), attn.value(x)
    out = torch.zeros(batch, dim)
    for image in range(batch):
        for head in range(attn.heads):
            span = slice(head * head_dim, (head + 1) * head_dim)
            scores = torch.stack([query[image, span] @ key[image, token, span] for token in range(tokens)])
            weights = (scores / head_dim ** 0.5).exp()
            weights = weights / weights.sum()
            for token in range(tokens):
                out[image, span] += weights[token] * value[image, token, span]
    return attn.proj(out)[:, None]


def test_only_the_class_token_queries() -> None:
    attn = randomise(CrossAttention(8, 2, CrossVitCfg(qkv_bias=True)))
    x = torch.randn(2, 6, 8, generator=seeded_generator())
    with torch.no_grad():
        out = attn(x)
        torch.testing.assert_close(out, _reference_cross_attention(attn, x))
        changed = x.clone()
        changed[:, 1:] = changed[:, 1:].flip(1)  # the patch tokens are keys and values only: their order is moot
        torch.testing.assert_close(attn(changed), out)
        changed[:, 0] += 1.0
        assert not torch.allclose(attn(changed), out)
    assert out.shape == (2, 1, 8)


def _block(ffn: str = "mlp") -> Block:
    return Block(mixer=CrossVitCfg(patches=(8, 16), depths=(1, 2), heads=(2, 4), encoders=2, resize=48),
                 ffn=parse_component("ffn", {"kind": ffn, "ratio": 2} if ffn == "mlp" else ffn, "ffn"),
                 norm=parse_component("norm", "layernorm", "norm"), layer_scale=0.1)


def test_the_fusion_is_the_projected_class_token_attending_over_the_other_branch() -> None:
    fusion = randomise(ClassTokenFusion(8, 12, 3, _block(), CrossVitCfg(qkv_bias=True), drop_path=0.0))
    class_token = torch.randn(2, 1, 8, generator=seeded_generator())
    other = torch.randn(2, 5, 12, generator=seeded_generator())
    norm, _, linear = fusion.project
    back_norm, _, back_linear = fusion.revert
    with torch.no_grad():
        token = linear(F.gelu(norm(class_token)))
        fused = token + _reference_cross_attention(fusion.attn, fusion.norm(torch.cat([token, other], dim=1)))
        torch.testing.assert_close(fusion(class_token, other), back_linear(F.gelu(back_norm(fused))))


def test_each_encoder_fuses_the_class_tokens_after_both_branches_and_keeps_the_patch_tokens() -> None:
    block = _block()
    encoder = randomise(MultiScaleEncoder(block, block.mixer, (8, 16), ((2, 2), (1, 2)), drop_path=0.0))
    tokens = [torch.randn(2, 5, 8, generator=seeded_generator()), torch.randn(2, 3, 16, generator=seeded_generator())]
    with torch.no_grad():
        out = encoder(tokens)
        after = [branch(x) for branch, x in zip(encoder.branches, tokens, strict=True)]
        for own, other in ((0, 1), (1, 0)):
            torch.testing.assert_close(out[own][:, 1:], after[own][:, 1:])
            torch.testing.assert_close(out[own][:, :1], encoder.fusions[own](after[own][:, :1], after[other][:, 1:]))
    assert [len(branch) for branch in encoder.branches] == [1, 2]


# ---------------------------------------------------------------------------- the body


def _body() -> CrossVit:
    return randomise(CrossVit(_block(), BlockContext(in_dim=3, dim=48, size=(64, 64))))


def test_the_body_puts_out_both_normalised_class_tokens_interleaved_by_the_split() -> None:
    body = _body()
    image = torch.randn(2, 3, 64, 64, generator=seeded_generator())
    with torch.no_grad():
        tokens = [embed(image) for embed in body.embeds]
        for encoder in body.encoders:
            tokens = encoder(tokens)
        small, large = (norm(x[:, :1])[:, 0] for norm, x in zip(body.norms, tokens, strict=True))
        out = body(image)
    assert out.shape == (2, 48, 1, 1)
    out = out.flatten(1)
    torch.testing.assert_close(out[:, 0::3], small)  # split [1, 2]: one small-branch channel, then two large
    torch.testing.assert_close(out[:, 1::3], large[:, 0::2])
    torch.testing.assert_close(out[:, 2::3], large[:, 1::2])


def test_the_second_branch_embeds_the_image_resized() -> None:
    body = _body()
    image = torch.randn(1, 3, 64, 64, generator=seeded_generator())
    first, second = body.embeds
    with torch.no_grad():
        torch.testing.assert_close(first(image), first.patch(image))
        resized = F.interpolate(image, size=(48, 48), mode="bicubic", align_corners=False)
        torch.testing.assert_close(second(image), second.patch(resized))
    assert [embed(image).shape[1] for embed in body.embeds] == [1 + 8 * 8, 1 + 3 * 3]


@pytest.mark.parametrize(("changes", "path", "fragment"), [
    ({"split": (2, 3)}, "split", "2 + 3 parts do not divide the stage width 48"),
    ({"heads": (3, 4)}, "heads[0]", "branch 0: 3 does not divide dim 16"),
    ({"resize": 80}, "resize", "within 1 and the 64x64 image"),
    ({"patches": (8, 64)}, "patches[1]", "larger than the image branch 1 embeds"),
    ({"depths": (1,)}, "depths", "must hold 2 values"),
    ({"encoders": 0}, "encoders", "must be >= 1"),
])
def test_the_body_checks_name_the_field(changes: dict[str, object], path: str, fragment: str) -> None:
    cfg = dataclasses.replace(_block().mixer, **changes)
    with pytest.raises(ConfigError, match=re.escape(fragment)) as caught:
        cfg.check(Site(3, 48, 64, 64))
    assert caught.value.path == path


def test_the_body_refuses_an_ffn_its_branch_layers_cannot_run() -> None:
    data = nas.Arch.load(TINY_DIR / "mixer_crossvit.yaml").to_dict()
    data["stages"][0]["blocks"][0]["ffn"] = {"kind": "conv_mlp", "ratio": 2}  # a depthwise conv: no class tokens
    with pytest.raises(ConfigError, match="branch 0's layers cannot use the block's ffn 'conv_mlp'") as caught:
        nas.Arch.from_dict(data)
    assert caught.value.path == "stages[0].blocks[0].mixer.kind"


@pytest.mark.parametrize("ffn", ["mlp", "none"])
def test_fused_qkv_of_every_branch_layer_is_declared_and_the_rest_are_prefixes(ffn: str) -> None:
    body = CrossVit(_block(ffn), BlockContext(in_dim=3, dim=48, size=(64, 64)), device="meta")
    names = [name for name, _ in body.named_parameters()]
    qkv = [name for name in names if ".qkv." in name]
    assert len(qkv) == 2 * 2 * (1 + 2)  # weight and bias, 2 encoders, 1 + 2 layers
    for name in names:
        expected = Chunks(3) if name in qkv else Prefix()
        assert declared_sharing(CrossVitCfg.sharing, name) == expected, name


# ---------------------------------------------------------------------------- the image stem and the proxy


def test_the_image_stem_must_be_as_wide_as_the_image() -> None:
    data = nas.Arch.load(TINY_DIR / "mixer_crossvit.yaml").to_dict()
    data["stem"]["dim"] = 4
    with pytest.raises(ConfigError, match="hands the 3-channel image on unchanged") as caught:
        nas.Arch.from_dict(data)
    assert caught.value.path == "stem.dim"


def test_the_proxy_keeps_the_image_stem_at_the_input_channels_and_shrinks_the_resize() -> None:
    arch = nas.Arch.load(TINY_DIR / "mixer_crossvit.yaml")
    small = proxy(arch, width=0.5, resolution=32, channels=1)
    assert small.stem.dim == 1 and small.stages[0].dim == 24  # type: ignore[attr-defined]
    assert small.stages[0].blocks[0].mixer.resize == 32  # type: ignore[attr-defined]
    model = nas.build(small).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_crossvit_tiny_runs_at_proxy_scale() -> None:
    small = ProxyScale().apply(nas.zoo.get("crossvit_tiny"))
    mixer = small.stages[0].blocks[0].mixer
    assert mixer.widths(small.stages[0].dim) == (24, 48) and mixer.resize == 32  # type: ignore[attr-defined]
    model = nas.build(small, device="meta")
    assert model(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 1000)


def test_each_branch_layer_keeps_its_ffn_weights_whatever_the_depths_before_it() -> None:
    arch = nas.Arch.load(TINY_DIR / "mixer_crossvit.yaml")  # depths [1, 2], two encoders
    data = arch.to_dict()
    data["stages"][0]["blocks"][0]["mixer"]["depths"] = [1, 1]
    shallow = nas.Arch.from_dict(data)

    def ffn_keys(point: nas.Arch) -> dict[str, str]:
        slots = [slot for layout in Layouts().of(point) for slot in layout.slots]
        return {slot.name: slot.key for slot in slots if slot.name.endswith(".fc1.weight")}

    deep, short = ffn_keys(arch), ffn_keys(shallow)
    assert len(deep) == 2 * (1 + 2) and len(short) == 2 * (1 + 1)
    assert set(short) < set(deep)
    assert all(short[name] == deep[name] for name in short)  # encoder 1's layers: same tensors at both depths
    assert len(set(deep.values())) == len(deep)


SPACE = """
schema: 1
name: tiny_crossvit
description: CrossViT bodies of two widths and depths.
input: {resolution: 64, channels: 3}
stem: {kind: image, dim: 3}
stages:
  - dim: {ordinal: [48, 96]}
    downsample: null
    blocks:
      mixer: {kind: crossvit, patches: [8, 16], depths: {choice: [[1, 1], [1, 2]]}, heads: [2, 4], encoders: 2,
              resize: 48}
      ffn: {kind: mlp, ratio: 2}
      norm: layernorm
head: {kind: linear, pool: avg, num_classes: 10}
"""


def test_a_crossvit_space_shares_weights_between_its_points(tmp_path: Path) -> None:
    (tmp_path / "tiny_crossvit.yaml").write_text(SPACE, encoding="utf-8")
    supernet = Supernet.create(str(tmp_path / "tiny_crossvit.yaml"), scale=ProxyScale(width=0.5, resolution=32),
                               scan=4).eval()
    images = torch.randn(2, 3, 32, 32, generator=seeded_generator())
    for arch in (supernet.largest, supernet.smallest):
        with torch.no_grad():
            torch.testing.assert_close(supernet(images, arch), supernet.extract(arch).eval()(images),
                                       rtol=0, atol=1e-5)
    token = "stages.0.0.embeds.1.patch.class_token"  # the large-patch branch's class token: a prefix of channels
    wide, narrow = (supernet.extract(arch).state_dict()[token] for arch in (supernet.largest, supernet.smallest))
    assert narrow.shape[-1] < wide.shape[-1]
    torch.testing.assert_close(narrow, wide[..., :narrow.shape[-1]])
