"""The weight-sharing supernet: proxy scale, slicing rules, extract == supernet, sandwich ends, BN recalibration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.supernet import (
    CapacityError,
    ChunkRule,
    ConvKernel,
    EvalBatches,
    ProxyError,
    ProxyScale,
    RelativeTableRule,
    Supernet,
    evaluate,
    proxy,
    recalibrate_batchnorm,
)
from nas.supernet.elastic import Layouts

# Every registered mixer, stem and downsample kind, at tiny widths; heads, kernels, windows, ratios,
# depths and the mixer itself vary. Full width (the proxy keeps it), so the slicing itself is under test.
KITCHEN = """
schema: 1
name: kitchen
input: {resolution: 32, channels: 3}
stem:
  choice:
    - {kind: overlap, kernel: 3, stride: 4, padding: 1, norm: batchnorm}
    - {kind: patch, patch: 4, norm: layernorm}
    - {kind: conv, hidden: {ordinal: [[8], [12]]}, kernel: 3, stride: 2}
stages:
  - dim: {ordinal: [16, 24]}
    downsample: null
    blocks:
      choice:
        - repeat: {range: [1, 2]}
          block:
            mixer:
              choice:
                - identity
                - {kind: pooling, pool_size: 3}
                - {kind: convnext, kernel: {ordinal: [3, 5]}}
                - {kind: lka, kernel: 9, dilation: 2}
                - {kind: spatial_reduction_attention, heads: {choice: [2, 4]}, sr_ratio: {ordinal: [1, 2]}}
            ffn: {choice: [{kind: mlp, ratio: {ordinal: [2, 4]}}, {kind: conv_mlp, ratio: 2}]}
            norm: {choice: [batchnorm, layernorm]}
            layer_scale: {choice: [null, 1.0e-2]}
        - repeat: {range: [1, 2]}
          block: {mixer: {kind: mbconv, expand_ratio: {ordinal: [2, 4]}, kernel: {ordinal: [3, 5]}},
                  ffn: none, norm: batchnorm}
  - dim: {ordinal: [32, 48]}
    downsample:
      choice:
        - {kind: conv, kernel: 3, stride: 2, padding: 1, norm: batchnorm}
        - patch_merging
        - {kind: efficientvit_merging, expansion: 2}
    blocks:
      choice:
        - repeat: {range: [1, 2]}
          block:
            mixer:
              choice:
                - {kind: attention, heads: {choice: [2, 4]}}
                - {kind: efficientformer_attention, key_dim: {ordinal: [8, 16]}, heads: {ordinal: [2, 4]},
                   attn_ratio: 2}
            ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}
            norm: layernorm
            layer_scale: 1.0e-2
        - repeat: {range: [1, 2]}
          pattern:
            - {mixer: {kind: window_attention, heads: {choice: [2, 4], id: heads}, window: {choice: [2, 4], id: w},
                       shift: 0}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}
            - {mixer: {kind: window_attention, heads: {same: heads}, window: {same: w}, shift: 1},
               ffn: {kind: mlp, ratio: 2}, norm: layernorm}
        - repeat: {range: [1, 2]}
          block: {mixer: {kind: efficientvit, heads: 2, key_dim: 8, kernels: [3, 3], window: 4},
                  ffn: {kind: mlp, ratio: 2, act: relu, bias: false, batchnorm: true}, norm: none}
head: {kind: linear, pool: avg, norm: layernorm, distillation: {choice: [false, true]}, num_classes: 10}
"""

# Ordered decisions only: the largest and smallest subnets are known by hand.
ORDINAL = """
schema: 1
name: ordinal
input: {resolution: 32, channels: 3}
stem: {kind: patch, patch: 4, norm: layernorm}
stages:
  - dim: {ordinal: [16, 24, 32]}
    downsample: null
    blocks:
      repeat: {range: [1, 3]}
      block: {mixer: {kind: convnext, kernel: {ordinal: [3, 5, 7]}}, ffn: {kind: mlp, ratio: {ordinal: [2, 3, 4]}},
              norm: layernorm, layer_scale: 1.0e-6}
  - dim: {ordinal: [32, 48]}
    downsample: {kind: conv, kernel: 2, stride: 2, norm: layernorm, norm_first: true}
    blocks:
      repeat: {range: [1, 2]}
      block: {mixer: {kind: attention, heads: 4}, ffn: {kind: mlp, ratio: {ordinal: [2, 4]}}, norm: layernorm}
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 10}
"""


# A stage body (GC ViT's global context, three layers in one block) or a stack of up to three ConvNeXt blocks.
BODY_OR_STACK = """
schema: 1
name: body_or_stack
input: {resolution: 32, channels: 3}
stem: {kind: patch, patch: 4, norm: layernorm}
stages:
  - dim: 16
    downsample: null
    blocks:
      choice:
        - repeat: 1
          block: {mixer: {kind: global_context, depth: 3, heads: 2, window: 4}, ffn: {kind: mlp, ratio: 2},
                  norm: layernorm}
        - repeat: {range: [1, 3]}
          block: {mixer: {kind: convnext, kernel: 3}, ffn: {kind: mlp, ratio: 2}, norm: layernorm}
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 10}
"""


def _write(tmp_path_factory: pytest.TempPathFactory, name: str, text: str) -> str:
    path = tmp_path_factory.mktemp("spaces") / f"{name}.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory: pytest.TempPathFactory) -> Supernet:
    return Supernet.create(_write(tmp_path_factory, "kitchen", KITCHEN), scale=ProxyScale(width=1.0, resolution=32),
                           scan=48)


@pytest.fixture(scope="module")
def ordinal(tmp_path_factory: pytest.TempPathFactory) -> Supernet:
    return Supernet.create(_write(tmp_path_factory, "ordinal", ORDINAL), scale=ProxyScale(width=1.0, resolution=32),
                           scan=16)


def _kinds(arch: nas.Arch) -> set[str]:
    kinds = {arch.stem.kind} | {block.mixer.kind for stage in arch.stages for block in stage.blocks}
    return kinds | {stage.downsample.kind for stage in arch.stages if stage.downsample is not None}


# ---------------------------------------------------------------------------- proxy


def test_proxy_scales_widths_and_keeps_heads_dividing() -> None:
    small = proxy(nas.zoo.get("poolformer_s12"), width=0.25, resolution=32, num_classes=10)
    assert [stage.dim for stage in small.stages] == [16, 32, 80, 128]
    assert small.input.resolution == 32 and small.head.num_classes == 10
    assert small.stem.dim == 16
    deit = proxy(nas.zoo.get("deit_small"), width=0.25, resolution=32)  # 384 * 0.25 = 96, heads 6
    assert deit.stages[0].dim % deit.stages[0].blocks[0].mixer.heads == 0
    assert proxy(deit, width=1.0, resolution=None) == deit


def test_proxy_moves_a_width_to_the_nearest_one_heads_divide() -> None:
    arch = proxy(nas.zoo.get("deit_tiny"), width=1.0, resolution=32)  # 192 wide, 3 heads
    narrow = proxy(arch, width=0.1, resolution=None)  # 19.2 -> 20 would not take 3 heads
    assert narrow.stages[0].dim % 3 == 0 and abs(narrow.stages[0].dim - 19.2) <= 6


def test_proxy_lowers_windows_and_reductions_to_fit_the_map() -> None:
    swin = proxy(nas.zoo.get("swin_tiny"), width=0.25, resolution=32)  # window 7 on an 8x8 stage-1 map
    first = swin.stages[0].blocks
    assert (first[0].mixer.window, first[0].mixer.shift) == (4, 0) and (first[1].mixer.window, first[1].mixer.shift) \
        == (4, 2)
    assert proxy(nas.zoo.get("swin_tiny"), width=0.25, resolution=224).stages[0].blocks[1].mixer.window == 7
    pvt = proxy(nas.zoo.get("pvt_tiny"), width=0.25, resolution=32)  # sr_ratio 8 on the 8x8 map stays
    assert [stage.blocks[0].mixer.sr_ratio for stage in pvt.stages] == [8, 4, 2, 1]
    full = nas.zoo.get("pvt_tiny")
    third = full.stages[2]
    wider = dataclasses.replace(third, blocks=tuple(dataclasses.replace(block, mixer=dataclasses.replace(
        block.mixer, sr_ratio=4)) for block in third.blocks))  # fits 14x14 at 224 px, not 2x2 at 32 px
    lowered = proxy(dataclasses.replace(full, stages=(*full.stages[:2], wider, full.stages[3])), resolution=32)
    assert {block.mixer.sr_ratio for block in lowered.stages[2].blocks} == {2}


def test_proxy_rejects_what_it_cannot_fit() -> None:
    with pytest.raises(ProxyError, match="even feature map"):  # 8 px: a 1x1 map left for patch merging
        proxy(nas.zoo.get("swin_tiny"), width=0.25, resolution=8)
    with pytest.raises(nas.NasError, match="width"):
        ProxyScale(width=0.0)


# ---------------------------------------------------------------------------- slicing rules


def test_rules_cut_parts_kernels_and_tables() -> None:
    stored = torch.arange(6 * 3, dtype=torch.float32).view(6, 3)  # rows [q q k k v v] of width 2, 3 inputs
    cut = ChunkRule(3).view(stored, (3, 2))
    assert torch.equal(cut, stored[[0, 2, 4]][:, :2])
    merged = torch.arange(2 * 8, dtype=torch.float32).view(2, 8)  # 4 neighbours x 2 channels in, 2 out
    assert torch.equal(ChunkRule(4, axis=1).view(merged, (1, 4)), merged[:1, [0, 2, 4, 6]])
    kernel = torch.arange(5 * 5, dtype=torch.float32).view(1, 1, 5, 5)
    assert torch.equal(ConvKernel().view(kernel, (1, 1, 3, 3)), kernel[:, :, 1:4, 1:4])
    table = torch.arange(25 * 2, dtype=torch.float32).view(25, 2)  # window 3: 5x5 offsets, 2 heads
    small = RelativeTableRule().view(table, (9, 1))  # window 2: the centred 3x3 offsets, first head
    assert torch.equal(small, table.view(5, 5, 2)[1:4, 1:4, :1].reshape(9, 1))


def test_patch_merging_keeps_each_neighbours_weights_at_every_width(kitchen: Supernet) -> None:
    rng = np.random.default_rng(0)
    narrow = next(arch for arch in (kitchen.sample(rng) for _ in range(400))
                  if arch.stages[1].downsample.kind == "patch_merging" and arch.stages[0].dim == 16)
    wide = narrow.replace(stages=(dataclasses.replace(narrow.stages[0], dim=24), *narrow.stages[1:]))
    assert not kitchen.check(wide)
    weights = [kitchen.extract(arch).state_dict() for arch in (narrow, wide)]
    key = next(name for name in weights[0] if name.endswith("reduction.weight"))
    small, large = weights[0][key], weights[1][key]  # (dim, 4 x 16) and (dim, 4 x 24)
    for neighbour in range(4):
        assert torch.equal(small[:, 16 * neighbour:16 * (neighbour + 1)], large[:, 24 * neighbour:24 * neighbour + 16])


# ---------------------------------------------------------------------------- extract == supernet


def test_extract_equals_supernet_for_every_kind(kitchen: Supernet) -> None:
    rng = np.random.default_rng(0)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    wanted = {"identity", "pooling", "convnext", "lka", "spatial_reduction_attention", "mbconv", "attention",
              "efficientformer_attention", "window_attention", "efficientvit", "overlap", "patch", "conv",
              "patch_merging", "efficientvit_merging"}
    seen: set[str] = set()
    for _ in range(80):
        arch = kitchen.sample(rng)
        kinds = _kinds(arch)
        if kinds <= seen:
            continue
        seen |= kinds
        model = kitchen.extract(arch)
        assert type(model) is nas.Model and model.arch == kitchen.proxy(arch)
        for training in (False, True):
            kitchen.train(training)
            model.train(training)
            with torch.no_grad():
                torch.testing.assert_close(kitchen(images, arch), model(images), rtol=0, atol=1e-5)
        if wanted <= seen:
            break
    kitchen.eval()
    assert wanted <= seen, f"never sampled: {sorted(wanted - seen)}"


def test_gradients_reach_only_the_slices_a_subnet_uses(kitchen: Supernet) -> None:
    arch = kitchen.smallest
    kitchen.zero_grad(set_to_none=True)
    kitchen.train()
    kitchen(torch.randn(4, 3, 32, 32), arch).square().mean().backward()
    kitchen.eval()
    used = {slot.key: slot for layout in kitchen.layout(arch) for slot in layout.slots if slot.parameter}
    touched = {key for key, parameter in kitchen.store.named_parameters() if parameter.grad is not None}
    assert touched == set(used)
    slot = next(slot for slot in used.values() if len(slot.shape) == 2 and slot.rule.name == "prefix")
    grad = kitchen.store.tensor(slot.key).grad
    rows, cols = slot.shape
    assert grad[rows:].abs().sum() == 0 and grad[:, cols:].abs().sum() == 0
    kitchen.zero_grad(set_to_none=True)


def test_a_point_beyond_the_allocated_tensors_is_a_clear_error(kitchen: Supernet) -> None:
    arch = kitchen.largest
    stage = arch.stages[1]
    wider = arch.replace(stages=(arch.stages[0], nas.Stage(dim=96, downsample=stage.downsample,
                                                           blocks=stage.blocks)))
    with pytest.raises(CapacityError, match="allocated"):
        kitchen.set_active(wider)
    with pytest.raises(nas.NasError, match="no active subnet"):
        Supernet(kitchen.spec, space=kitchen.space)(torch.randn(1, 3, 32, 32))


def test_a_stage_body_is_allocated_only_where_it_was_met(tmp_path_factory: pytest.TempPathFactory) -> None:
    net = Supernet.create(_write(tmp_path_factory, "body_or_stack", BODY_OR_STACK),
                          scale=ProxyScale(width=1.0, resolution=32), scan=16)
    positions: dict[str, set[str]] = {}
    for record in net.spec.storage:
        position, group = record.key.split("|")[:2]
        positions.setdefault(position, set()).add(group)
    assert any(group.startswith("mixer=global_context") for group in positions["stages:0:blocks:0"])
    assert {"ffn0", "ffn1", "ffn2"} <= positions["stages:0:blocks:0"]
    for deeper in ("stages:0:blocks:1", "stages:0:blocks:2"):
        assert any(group.startswith("mixer=convnext") for group in positions[deeper])
        assert positions[deeper].isdisjoint({"ffn1", "ffn2"})  # no copy of the body's second and third layers
        assert not any(group.startswith("mixer=global_context") for group in positions[deeper])
    body = next(arch for arch in (net.sample(np.random.default_rng(seed)) for seed in range(32))
                if arch.stages[0].blocks[0].mixer.kind == "global_context")
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x, body), net.extract(body).eval()(x))
    two_bodies = body.replace(stages=(dataclasses.replace(body.stages[0], blocks=body.stages[0].blocks * 2),))
    assert "allocated" in net.check(two_bodies)


def test_a_large_skeleton_gives_its_freed_memory_back(tmp_path_factory: pytest.TempPathFactory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr("nas.supernet.elastic._return_freed_memory", lambda: trims.append(1))
    space = nas.space.load_space(_write(tmp_path_factory, "ordinal", ORDINAL))
    small = space.decode(space.sample_vectors(np.random.default_rng(0), 1)[0])
    Layouts().of(small)
    assert not trims  # proxy-sized skeletons are cheap: no trim per build
    wide = small.replace(stages=(small.stages[0], dataclasses.replace(small.stages[1], dim=2048)))
    Layouts().of(wide)  # a 2048-wide attention block's qkv alone is 50 MB of float32, its MLP 67 MB or more
    assert trims


# ---------------------------------------------------------------------------- sandwich


def test_varied_ends_take_extreme_sizes_and_drawn_kinds(ordinal: Supernet, kitchen: Supernet) -> None:
    rng = np.random.default_rng(2)
    assert ordinal.sample_end(rng, 1).id == ordinal.largest.id
    assert ordinal.sample_end(rng, -1).id == ordinal.smallest.id
    ends = [kitchen.sample_end(np.random.default_rng(seed), 1) for seed in range(12)]
    assert len({arch.stages[0].blocks[0].mixer.kind for arch in ends}) > 2, "kinds are drawn"
    assert len({arch.stages[1].downsample.kind for arch in ends}) > 1
    for arch in ends:
        assert not kitchen.check(arch)
        if arch is not kitchen.largest:
            assert [stage.dim for stage in arch.stages] == [24, 48] and len(arch.stages[1].blocks) in (2, 4)
    smallest = [kitchen.sample_end(np.random.default_rng(seed), -1) for seed in range(12)]
    assert all([stage.dim for stage in arch.stages] == [16, 32] for arch in smallest if arch is not kitchen.smallest)


def test_sandwich_ends_are_the_largest_and_smallest_points(ordinal: Supernet) -> None:
    largest, smallest = ordinal.largest, ordinal.smallest
    assert [stage.dim for stage in largest.stages] == [32, 48]
    assert [len(stage.blocks) for stage in largest.stages] == [3, 2]
    assert largest.stages[0].blocks[0].mixer.kernel == 7 and largest.stages[0].blocks[0].ffn.ratio == 4
    assert largest.stages[1].blocks[0].ffn.ratio == 4
    assert [stage.dim for stage in smallest.stages] == [16, 32]
    assert [len(stage.blocks) for stage in smallest.stages] == [1, 1]
    assert smallest.stages[0].blocks[0].mixer.kernel == 3 and smallest.stages[0].blocks[0].ffn.ratio == 2
    rng = np.random.default_rng(1)
    sizes = [ordinal.num_parameters(ordinal.sample(rng)) for _ in range(10)]
    assert ordinal.num_parameters(smallest) <= min(sizes) <= max(sizes) <= ordinal.num_parameters(largest)


def test_sampling_is_reproducible_from_a_local_generator(ordinal: Supernet) -> None:
    state = torch.get_rng_state()
    first = [ordinal.sample(np.random.default_rng([0, 1, 2, k])).id for k in range(3)]
    second = [ordinal.sample(np.random.default_rng([0, 1, 2, k])).id for k in range(3)]
    assert first == second
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------------------- one-shot evaluation


def test_batchnorm_recalibration_changes_running_statistics(kitchen: Supernet) -> None:
    arch = next(a for a in (kitchen.sample(np.random.default_rng(seed)) for seed in range(50))
                if a.stem.kind == "overlap")
    model = kitchen.extract(arch)
    norm = model.stem[0].norm
    before = norm.running_mean.clone()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 + 1
    count = recalibrate_batchnorm(model, [(images, torch.zeros(8, dtype=torch.long))] * 2)
    assert count >= 1 and not model.training
    assert not torch.allclose(norm.running_mean, before)
    conv = model.stem[0].proj
    expected = torch.nn.functional.conv2d(images, conv.weight, conv.bias, stride=4, padding=1)
    torch.testing.assert_close(norm.running_mean, expected.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_evaluate_scores_many_archs_without_changing_the_supernet(kitchen: Supernet) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (16,), generator=generator)
    batches = EvalBatches(calibration=[(images[:8], labels[:8])], validation=[(images, labels)])
    state = {key: value.clone() for key, value in kitchen.state_dict().items()}
    archs = [kitchen.largest, kitchen.smallest]
    scores = evaluate(kitchen, archs, batches)
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()
    for key, value in kitchen.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_spec_round_trips_through_plain_data(ordinal: Supernet, tmp_path: Path) -> None:
    from nas.supernet import SupernetSpec

    copy = Supernet(SupernetSpec.from_dict(ordinal.spec.to_dict()))
    copy.load_state_dict(ordinal.state_dict())
    images = torch.randn(2, 3, 32, 32)
    ordinal.eval()
    copy.eval()
    torch.testing.assert_close(copy(images, ordinal.largest), ordinal(images, ordinal.largest), rtol=0, atol=0)
