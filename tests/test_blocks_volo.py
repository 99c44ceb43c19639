"""VOLO's outlook attention, CaiT's class attention and VOLO's head against slow references.

The outlook reference loops over window positions as the paper's Eq. 3-5 read: the
centre token (the stride x stride average of the map there) generates the window's
weights, each position of the window gets a weighted sum of the window's values, and
positions covered by several windows add what each gave them. It uses no unfold or fold.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import nas
from nas.arch import Block, InputSpec, Site
from nas.blocks.class_attention import ClassAttentionBlock, ClassAttentionCfg, ClassTokenCfg
from nas.blocks.ffn import MlpCfg
from nas.blocks.template import BlockContext
from nas.blocks.volo import OutlookAttention, OutlookAttentionCfg, TokenLabelingHead, TokenLabelingHeadCfg, VoloStemCfg
from nas.errors import ConfigError
from tests.conftest import TINY_DIR, randomise, seeded_generator


def _outlook_reference(mixer: OutlookAttention, tokens: torch.Tensor, size: tuple[int, int],
                       cfg: OutlookAttentionCfg) -> torch.Tensor:
    batch, _, channels = tokens.shape
    height, width = size
    heads, kernel, stride, pad = cfg.heads, cfg.kernel, cfg.stride, cfg.kernel // 2
    head_dim = channels // heads
    grid = tokens.reshape(batch, height, width, channels)
    values = mixer.v(tokens).reshape(batch, height, width, channels)
    out = torch.zeros(batch, height, width, channels)
    for top in range(0, height, stride):
        for left in range(0, width, stride):
            centre = grid[:, top:top + stride, left:left + stride].mean(dim=(1, 2))  # cells inside the map
            weights = mixer.attn(centre).reshape(batch, heads, kernel * kernel, kernel * kernel)
            weights = torch.softmax(weights / math.sqrt(head_dim), dim=-1)
            cells = [(top - pad + row, left - pad + column) for row in range(kernel) for column in range(kernel)]
            for written, (row, column) in enumerate(cells):
                if not (0 <= row < height and 0 <= column < width):
                    continue  # a padded position: it receives nothing
                for head in range(heads):
                    part = slice(head * head_dim, (head + 1) * head_dim)
                    for read, (source_row, source_column) in enumerate(cells):
                        if 0 <= source_row < height and 0 <= source_column < width:  # padded values are zero
                            out[:, row, column, part] += (weights[:, head, written, read, None]
                                                          * values[:, source_row, source_column, part])
    return mixer.proj(out.reshape(batch, height * width, channels))


@pytest.mark.parametrize(("heads", "kernel", "stride", "size"),
                         [(2, 3, 2, (7, 7)), (2, 3, 2, (6, 8)), (1, 3, 1, (5, 4)), (3, 5, 1, (4, 6)),
                          (2, 5, 3, (7, 5)), (1, 1, 1, (3, 3))])
def test_outlook_attention_matches_a_loop_over_positions(heads: int, kernel: int, stride: int,
                                                         size: tuple[int, int]) -> None:
    cfg = OutlookAttentionCfg(heads=heads, kernel=kernel, stride=stride, qkv_bias=True)
    dim = 6
    cfg.check(Site(dim, dim, *size))
    mixer = randomise(OutlookAttention(cfg, dim=dim, size=size)).eval()
    tokens = torch.randn(2, size[0] * size[1], dim, generator=seeded_generator())
    with torch.no_grad():
        got = mixer(tokens)
        want = _outlook_reference(mixer, tokens, size, cfg)
    assert got.shape == tokens.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("cell", "reached"), [(4, range(3, 6)), (5, range(3, 8))])
def test_outlook_attention_reaches_exactly_the_windows_holding_a_position(cell: int, reached: range) -> None:
    """3x3 windows every 2 positions on a 9x9 map are centred on even positions: a change at an even cell moves
    the outputs of its one window per axis, at an odd cell those of the two windows holding it."""
    cfg = OutlookAttentionCfg(heads=2, kernel=3, stride=2)
    size, dim = (9, 9), 4
    mixer = randomise(OutlookAttention(cfg, dim=dim, size=size)).eval()
    tokens = torch.randn(1, 81, dim, generator=seeded_generator())
    changed = tokens.clone()
    changed[0, cell * 9 + cell] *= -2.0
    with torch.no_grad():
        moved = (mixer(changed) - mixer(tokens)).abs().sum(-1).reshape(9, 9) > 0
    want = torch.zeros(9, 9, dtype=torch.bool)
    want[reached.start:reached.stop, reached.start:reached.stop] = True
    assert torch.equal(moved, want)


@pytest.mark.parametrize(("cfg", "path", "message"), [
    (OutlookAttentionCfg(kernel=4), "kernel", "odd"),
    (OutlookAttentionCfg(kernel=3, stride=4), "stride", "outside every window"),
    (OutlookAttentionCfg(heads=5), "heads", "does not divide"),
])
def test_outlook_attention_refuses(cfg: OutlookAttentionCfg, path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        cfg.check(Site(12, 12, 8, 8))
    assert caught.value.path == path


def test_outlook_attention_refuses_a_class_token() -> None:
    with pytest.raises(ConfigError, match="class token"):
        OutlookAttentionCfg().check(Site(12, 12, 8, 8, prefix_tokens=1))


# ---------------------------------------------------------------------------- class attention


def _class_block(heads: int, layer_scale: float | None) -> tuple[ClassAttentionBlock, Block]:
    block = Block(mixer=ClassAttentionCfg(heads=heads, qkv_bias=True), ffn=MlpCfg(ratio=2.0), norm="layernorm",
                  layer_scale=layer_scale)
    module = ClassAttentionBlock(block, BlockContext(in_dim=8, dim=8, size=(3, 4), prefix_tokens=1))
    return randomise(module).eval(), block


def _class_reference(module: ClassAttentionBlock, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """The class token's query, one softmax per head over every token's key, then the FFN on the class token."""
    attn = module.attn
    normed = module.norm(tokens)
    dim = tokens.shape[-1]
    head_dim = dim // heads
    query = attn.q(normed[:, 0])  # (B, C): the class token alone
    key, value = attn.kv(normed).split(dim, dim=-1)  # (B, N, C): every token
    mixed = torch.zeros_like(query)
    for head in range(heads):
        part = slice(head * head_dim, (head + 1) * head_dim)
        logits = torch.einsum("bd,bnd->bn", query[:, part], key[:, :, part]) / math.sqrt(head_dim)
        mixed[:, part] = torch.einsum("bn,bnd->bd", torch.softmax(logits, dim=-1), value[:, :, part])
    token = tokens[:, 0] + module.scale(attn.proj(mixed))
    ffn = module.ffn
    return token + ffn.scale(ffn.fn(ffn.norm(token)))


@pytest.mark.parametrize("layer_scale", [None, 0.3])
def test_class_attention_only_the_class_token_queries_and_changes(layer_scale: float | None) -> None:
    heads = 2
    module, _ = _class_block(heads, layer_scale)
    tokens = torch.randn(2, 1 + 12, 8, generator=seeded_generator())
    with torch.no_grad():
        out = module(tokens)
        torch.testing.assert_close(out[:, 0], _class_reference(module, tokens, heads), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, 1:], tokens[:, 1:], rtol=0, atol=0)  # patch tokens pass unchanged
        changed = tokens.clone()
        changed[:, 5] *= -2.0  # a patch token is a key and a value of the class token's query
        assert not torch.allclose(module(changed)[:, 0], out[:, 0])


def test_class_attention_prices_its_ffn_at_one_token() -> None:
    """The FFN of a class-attention block runs on the class token alone: its MACs do not grow with the map."""
    arch = nas.Arch.load(TINY_DIR / "mixer_outlook_attention.yaml")
    bigger = arch.replace(input=InputSpec(resolution=112, channels=3))
    dim, hidden, tokens = 32, 64, {arch: 1 + 9, bigger: 1 + 49}  # 3x3 and 7x7 maps plus the class token
    for point, count in tokens.items():
        macs = nas.cost.profile(point).by_unit("flops")["stages[2].blocks[0]"]
        projections = count * dim * 2 * dim + 2 * dim * dim + 2 * dim * hidden  # kv on all; q, proj, FFN on one
        attention = 2 * count * dim  # one query against every key, then the weighted sum of values
        assert projections + attention <= macs / 2 < projections + attention + 40 * count * dim  # + norms, softmax


def test_class_attention_and_class_token_refuse() -> None:
    with pytest.raises(ConfigError, match="needs a class token"):
        ClassAttentionCfg().check(Site(8, 8, 3, 3))
    with pytest.raises(ConfigError, match="already carry a class token"):
        ClassTokenCfg().check(Site(8, 8, 3, 3, prefix_tokens=1))
    with pytest.raises(ConfigError, match="keep the width coming in"):
        ClassTokenCfg().check(Site(8, 16, 3, 3))


# ---------------------------------------------------------------------------- head and stem


def test_token_labeling_head_adds_half_the_largest_patch_logits() -> None:
    head = randomise(TokenLabelingHead(TokenLabelingHeadCfg(num_classes=5), in_dim=8, layout="nlc", prefix_tokens=1))
    tokens = torch.randn(3, 1 + 6, 8, generator=seeded_generator())
    with torch.no_grad():
        normed = F.layer_norm(tokens, (8,), head.norm.weight, head.norm.bias)
        patch_logits = normed[:, 1:] @ head.fc_aux.weight.T + head.fc_aux.bias  # (B, tokens, classes)
        want = normed[:, 0] @ head.fc.weight.T + head.fc.bias + 0.5 * patch_logits.max(dim=1).values
        torch.testing.assert_close(head(tokens), want, rtol=1e-5, atol=1e-5)
        head.reset_classifier(0)
        torch.testing.assert_close(head(tokens), normed[:, 0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="carry none"):
        TokenLabelingHeadCfg().check(Site(8, 8, 3, 3))


def test_volo_d1_runs_at_one_eighth_then_one_sixteenth() -> None:
    arch = nas.zoo.get("volo_d1")
    assert VoloStemCfg(dim=192).output_size(224, 224) == (28, 28)
    model = nas.build(arch, device="meta")
    assert [info["reduction"] for info in model.feature_info] == [8, 16, 16]
    assert [info["num_chs"] for info in model.feature_info] == [192, 384, 384]
    with pytest.raises(ConfigError, match="even number"):
        VoloStemCfg(dim=8, patch=6 + 1).check(Site(3, 8, 64, 64))


# ---------------------------------------------------------------------------- latency


@pytest.mark.parametrize("target", ["v100", "xeon", "iphone12", "zcu104"])
def test_outlook_attention_is_priced_on_every_target(target: str) -> None:
    """Unfold and fold (im2col, col2im), the pooled centres and the windows' batched matmul each get a price."""
    from nas.latency import predict

    mixer = OutlookAttention(OutlookAttentionCfg(heads=2, kernel=3, stride=2), dim=16, size=(7, 7))
    result = predict(mixer, (49, 16), target=target)
    assert result.latency_ms > 0 and result.breakdown.get("other", 0.0) == 0.0
    for kind in ("movement", "pool", "bmm", "softmax"):
        assert result.breakdown[kind] > 0, kind
    alone = predict(_UnfoldFold(), (16, 7, 7), target=target)  # im2col and col2im, nothing else
    assert alone.breakdown["movement"] > 0 and alone.breakdown.get("other", 0.0) == 0.0


class _UnfoldFold(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.fold(F.unfold(x, 3, padding=1, stride=2), (7, 7), 3, padding=1, stride=2)
