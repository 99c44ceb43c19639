"""Mixture-of-experts FFN (M3ViT, arXiv:2210.14793): routing, capacity, combine weights, the balancing loss,
task routers, weight sharing in the supernet, pricing on every target, and training with the auxiliary loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import nas
from nas.blocks.common import Mlp
from nas.blocks.moe import MoeCfg, MoeFfn, auxiliary_loss, routing_task
from nas.cli import main
from nas.errors import NasError
from nas.supernet import ProxyScale, Supernet, TrainOptions, TrainSettings, train_supernet
from tests.conftest import randomise, seeded_generator

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "tiny" / "ffn_moe.yaml"


def _layer(dim: int = 8, **fields: object) -> MoeFfn:
    return randomise(MoeFfn(MoeCfg(**fields), dim=dim, layout="nlc", size=(4, 4)))  # type: ignore[arg-type]


def _tokens(count: int, dim: int = 8) -> torch.Tensor:
    return torch.randn(1, count, dim, generator=seeded_generator())


def _reference(layer: MoeFfn, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Token by token: the router's probabilities, the k best experts, their probabilities renormalised, and
    each kept assignment's expert MLP added with its weight; an expert takes assignments first choices first,
    tokens in order, until its capacity is full. Returns the output and the number of dropped assignments."""
    cfg = layer.cfg
    experts, k = cfg.experts, cfg.top_k
    capacity = max(1, math.ceil(cfg.capacity_factor * k * len(tokens) / experts))
    probs = torch.softmax(tokens @ layer.router_weight[layer.task].T + layer.router_bias[layer.task], dim=-1)
    ranked = [sorted(range(experts), key=lambda e, row=row: -float(row[e]))[:k] for row in probs]
    out = torch.zeros_like(tokens)
    used = [0] * experts
    dropped = 0
    for choice in range(k):
        for token, chosen in enumerate(ranked):
            expert = chosen[choice]
            if used[expert] == capacity:
                dropped += 1
                continue
            used[expert] += 1
            weight = probs[token, expert] / sum(probs[token, e] for e in chosen)
            hidden = layer.act(layer.w1[expert] @ tokens[token] + layer.b1[expert])
            out[token] += weight * (layer.w2[expert] @ hidden + layer.b2[expert])
    return out, dropped


@pytest.mark.parametrize(("top_k", "capacity_factor"), [(1, 4.0), (2, 4.0), (1, 0.5), (2, 0.75)])
def test_moe_matches_the_token_by_token_reference(top_k: int, capacity_factor: float) -> None:
    layer = _layer(experts=4, top_k=top_k, ratio=2.0, capacity_factor=capacity_factor)
    x = _tokens(24)
    with torch.no_grad():
        out = layer(x)
        expected, dropped = _reference(layer, x[0])
    torch.testing.assert_close(out[0], expected)
    assert layer.dropped == dropped
    assert (dropped > 0) == (capacity_factor < 1)  # the small capacities do overflow


@pytest.mark.parametrize("top_k", [1, 2])
def test_every_token_goes_to_exactly_k_experts_or_is_dropped_and_counted(top_k: int) -> None:
    layer = _layer(experts=4, top_k=top_k, capacity_factor=0.5)
    tokens = _tokens(40)[0]
    with torch.no_grad():
        routing = layer.route(tokens)
        layer(tokens[None])
    experts = routing.experts
    assert experts.shape == (40, top_k)
    assert all(len(set(row.tolist())) == top_k for row in experts)  # k distinct experts per token
    capacity = routing.capacity
    kept_slots = routing.slots[routing.kept]
    assert len(set(kept_slots.tolist())) == len(kept_slots)  # no two assignments share a slot
    owners = kept_slots // capacity
    assert torch.equal(owners, experts.t().reshape(-1)[routing.kept])  # a slot lies in its expert's block
    assert torch.all(routing.slots[~routing.kept] == 4 * capacity)  # dropped: the overflow row
    assert int((~routing.kept).sum()) == layer.dropped > 0
    assert torch.bincount(owners, minlength=4).max() <= capacity


def test_a_dropped_token_contributes_nothing_and_goes_on_through_the_residual() -> None:
    layer = _layer(experts=2, top_k=1, capacity_factor=0.25)
    tokens = _tokens(16)
    with torch.no_grad():
        routing = layer.route(tokens[0])
        out = layer(tokens)[0]
    dropped = ~routing.kept
    assert dropped.any()
    assert torch.all(out[dropped] == 0)
    assert torch.all(out[~dropped].abs().sum(dim=-1) > 0)


@pytest.mark.parametrize("top_k", [1, 2])
def test_combine_weights_sum_to_one_per_token(top_k: int) -> None:
    layer = _layer(experts=6, top_k=top_k)
    with torch.no_grad():
        gates = layer.route(_tokens(30)[0]).gates
    assert gates.shape == (30, top_k) and torch.all(gates > 0)
    torch.testing.assert_close(gates.sum(dim=-1), torch.ones(30))


@pytest.mark.parametrize("layout", ["nlc", "nchw"])
def test_one_expert_top_1_is_the_dense_mlp_with_the_same_weights(layout: str) -> None:
    layer = randomise(MoeFfn(MoeCfg(experts=1, top_k=1, ratio=3.0), dim=8, layout=layout, size=(4, 5)))  # type: ignore[arg-type]
    dense = Mlp(8, 24, layout)  # type: ignore[arg-type]
    with torch.no_grad():
        for fc, weight, bias in ((dense.fc1, layer.w1[0], layer.b1[0]), (dense.fc2, layer.w2[0], layer.b2[0])):
            fc.weight.copy_(weight.reshape(fc.weight.shape))
            fc.bias.copy_(bias)
        x = torch.randn(2, 20, 8, generator=seeded_generator())
        if layout == "nchw":
            x = x.transpose(1, 2).reshape(2, 8, 4, 5)
        torch.testing.assert_close(layer(x), dense(x))
    assert layer.dropped == 0


def test_the_balancing_loss_is_lower_for_a_uniform_router_than_a_collapsed_one() -> None:
    tokens = _tokens(64)
    uniform, collapsed = _layer(experts=4, top_k=2), _layer(experts=4, top_k=2)
    with torch.no_grad():
        uniform.router_weight.zero_()
        uniform.router_bias.copy_(torch.tensor([[0.0, 1e-3, 2e-3, 3e-3]]))  # ties broken; still uniform
        collapsed.router_weight.zero_()
        collapsed.router_bias.copy_(torch.tensor([[8.0, 4.0, 0.0, 0.0]]))  # every token to experts 0 and 1
    for layer in (uniform, collapsed):
        layer.train()
        layer(tokens)
    assert uniform.auxiliary_loss is not None and collapsed.auxiliary_loss is not None
    assert float(uniform.auxiliary_loss.detach()) < float(collapsed.auxiliary_loss.detach())
    uniform.eval()
    uniform(tokens)
    assert uniform.auxiliary_loss is None  # only a training forward leaves a loss to add


def test_task_routing_picks_the_router_of_the_task() -> None:
    layer = _layer(experts=4, top_k=1, tasks=3, capacity_factor=4.0)
    model = nn.Sequential(layer)
    tokens = _tokens(32)
    with torch.no_grad():
        chosen = []
        for task in range(3):
            with routing_task(model, task):
                assert layer.task == task
                chosen.append(layer.route(tokens[0]).experts)
                out, _ = _reference(layer, tokens[0])
                torch.testing.assert_close(layer(tokens)[0], out)
        assert layer.task == 0  # restored
    assert not torch.equal(chosen[0], chosen[1]) and not torch.equal(chosen[1], chosen[2])
    with pytest.raises(NasError, match="tasks 0..2"), routing_task(model, 3):
        pass


def test_bad_settings_are_refused_with_the_field() -> None:
    text = TINY.read_text()
    for bad, field in (("top_k: 2, ratio: 2, capacity", "top_k: 3, ratio: 2, capacity"),
                       ("experts: 4, top_k: 1", "experts: 0, top_k: 1")):
        with pytest.raises(nas.ConfigError, match=r"ffn\.(top_k|experts)"):
            nas.Arch.from_yaml(text.replace(bad, field))


# ---------------------------------------------------------------------------- the supernet


SPACE = """
schema: 1
name: moe_small
input: {resolution: 16, channels: 3}
stem: {kind: patch, patch: 4}
stages:
  - dim: {ordinal: [16, 32]}
    downsample: null
    blocks:
      repeat: {range: [1, 2]}
      block:
        mixer: {kind: attention, heads: 2}
        ffn: {choice: [{kind: mlp, ratio: 2},
                       {kind: moe, experts: {ordinal: [2, 4]}, top_k: {ordinal: [1, 2]}, ratio: {ordinal: [1, 2]}}]}
        norm: layernorm
head: {kind: linear, pool: avg, norm: layernorm, num_classes: 4}
"""


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moe") / "moe_small.yaml"
    path.write_text(SPACE)
    return path


def _point(experts: int, ratio: float, dim: int = 32) -> nas.Arch:
    return nas.Arch.from_yaml(SPACE.replace("{ordinal: [16, 32]}", str(dim)).replace(
        "{choice: [{kind: mlp, ratio: 2},\n                       {kind: moe, experts: {ordinal: [2, 4]}, top_k: "
        "{ordinal: [1, 2]}, ratio: {ordinal: [1, 2]}}]}", f"{{kind: moe, experts: {experts}, top_k: 1, ratio: {ratio}}}"
    ).replace("{range: [1, 2]}", "1"))


def test_supernet_shares_experts_hidden_units_and_router_outputs_as_prefixes(space_file: Path) -> None:
    supernet = Supernet.create(str(space_file), scale=ProxyScale(width=1.0, resolution=16, num_classes=4), scan=40)
    wide, narrow = _point(4, 2.0), _point(2, 1.0, dim=16)
    big, small = (next(sub for sub in supernet.extract(arch).modules() if isinstance(sub, MoeFfn))
                  for arch in (wide, narrow))
    assert small.w1.shape == (2, 16, 16) and big.w1.shape == (4, 64, 32)
    torch.testing.assert_close(small.w1, big.w1[:2, :16, :16], rtol=0, atol=0)
    torch.testing.assert_close(small.w2, big.w2[:2, :16, :16], rtol=0, atol=0)
    torch.testing.assert_close(small.router_weight, big.router_weight[:, :2, :16], rtol=0, atol=0)
    torch.testing.assert_close(small.router_bias, big.router_bias[:, :2], rtol=0, atol=0)
    images = torch.randn(2, 3, 16, 16, generator=seeded_generator())
    supernet.eval()
    model = supernet.extract(narrow).eval()
    with torch.no_grad():
        torch.testing.assert_close(supernet(images, narrow), model(images), rtol=0, atol=1e-5)


def test_the_supernet_trains_with_moe_choices_and_adds_their_balancing_loss(space_file: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = (rng.random((64, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8)
    data = space_file.parent / "data.npz"
    np.savez(data, x=images, y=labels)
    settings = TrainSettings(epochs=1, batch_size=16, num_random=2, seed=1)
    result = train_supernet(str(space_file), nas.data.load_dataset(str(data)), settings, width=1.0, resolution=16,
                            scan=40, options=TrainOptions(progress=False, evaluate=False))
    extras = [record.get("auxiliary_losses") for record in result.history]
    assert all(extra is not None and len(extra) == 4 for extra in extras)  # one per subnet of the sandwich
    assert any(value > 0 for extra in extras for value in extra)  # some subnets routed through experts


def test_the_supernet_reports_its_subnets_auxiliary_loss(space_file: Path) -> None:
    supernet = Supernet.create(str(space_file), scale=ProxyScale(width=1.0, resolution=16, num_classes=4), scan=40)
    images = torch.randn(4, 3, 16, 16, generator=seeded_generator())
    supernet.train()
    supernet(images, _point(4, 2.0))
    first = supernet.auxiliary_loss()
    assert first is not None and float(first.detach()) > 0
    model = supernet.extract(_point(4, 2.0)).train()
    model(images)
    torch.testing.assert_close(model.auxiliary_loss(), first)
    model.eval()
    model(images)
    assert model.auxiliary_loss() is None and auxiliary_loss(model) is None


# ---------------------------------------------------------------------------- training


def test_nas_train_on_an_moe_point_records_the_auxiliary_loss(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "moe"
    assert main(["train", str(TINY), "--epochs", "1", "--batch-size", "16", "--max-steps", "3", "--out", str(out),
                 "--json"]) == 0  # the default data
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and len(summary["final_auxiliary_losses"]) == 1
    history = torch.load(out / "checkpoint.pt", weights_only=False)["history"]
    assert [len(record["auxiliary_losses"]) for record in history] == [1, 1, 1]
    assert all(record["auxiliary_losses"][0] > 0 for record in history)


def test_a_completed_moe_run_writes_its_auxiliary_loss(space_file: Path, tmp_path: Path) -> None:
    data = space_file.parent / "data.npz"
    if not data.exists():
        pytest.skip("needs the supernet training test's data")
    arch = _point(4, 2.0)
    result = nas.supernet.train_model(arch, nas.data.load_dataset(str(data)), TrainSettings(epochs=1, batch_size=32),
                                      width=1.0, resolution=16, out=tmp_path / "run",
                                      options=TrainOptions(progress=False, eval_calibration=1))
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result.completed and written["auxiliary_loss"] > 0


# ---------------------------------------------------------------------------- pricing


def _vit(experts: int, top_k: int) -> nas.Arch:
    ffn = "none" if experts == 0 else f"{{kind: moe, experts: {experts}, top_k: {top_k}}}"
    return nas.Arch.from_yaml(f"""
schema: 1
input: {{resolution: 224, channels: 3}}
stem: {{kind: patch, patch: 16, dim: 192}}
stages:
  - dim: 192
    downsample: null
    blocks: {{repeat: 4, block: {{mixer: {{kind: attention, heads: 3}}, ffn: {ffn}, norm: layernorm}}}}
head: {{kind: linear, pool: avg, norm: layernorm, num_classes: 1000}}
""")


def test_traced_moe_compute_grows_with_k_not_with_the_number_of_experts() -> None:
    without = nas.profile(_vit(0, 1)).macs
    ffn = {(e, k): nas.profile(_vit(e, k)).macs - without for e in (4, 8, 16) for k in (1, 2)}
    for experts in (4, 8, 16):
        assert 1.9 < ffn[(experts, 2)] / ffn[(experts, 1)] < 2.1
    for k in (1, 2):  # what grows with E: the router's outputs, and capacity rounded up per expert (197 tokens)
        assert max(ffn[(e, k)] for e in (4, 8, 16)) < 1.1 * min(ffn[(e, k)] for e in (4, 8, 16))
    report = nas.profile(_vit(8, 2))
    classes = report.by_class()
    assert classes["routing"] > 0 and "other" not in classes
    assert report.params > nas.profile(_vit(4, 2)).params  # the experts' weights do grow with their number


def _stage(experts: int, top_k: int) -> nas.Arch:
    """A 56 x 56 stage of pooling blocks with MoE FFNs (a MetaFormer's first stage)."""
    return nas.Arch.from_yaml(f"""
schema: 1
input: {{resolution: 224, channels: 3}}
stem: {{kind: patch, patch: 4, dim: 64}}
stages:
  - dim: 64
    downsample: null
    blocks: {{repeat: 4, block: {{mixer: {{kind: pooling, pool_size: 3}}, ffn: {{kind: moe, experts: {experts},
                                 top_k: {top_k}}}, norm: groupnorm1}}}}
head: {{kind: linear, pool: avg, norm: layernorm, num_classes: 1000}}
""")


@pytest.mark.parametrize("target", nas.latency.list_targets())
def test_predicted_latency_is_monotone_in_k_and_nearly_flat_in_the_experts(target: str) -> None:
    # Nearly flat where each expert gets many tokens (3136 here). With few tokens per expert (a ViT-Ti's 197
    # over 16 experts) reading every expert's weights takes longer than the products, and that does grow with E.
    latency = {(e, k): nas.latency.predict(_stage(e, k), target=target).latency_ms for e in (4, 8, 16) for k in (1, 2)}
    for experts in (4, 8, 16):
        assert latency[(experts, 2)] > 1.1 * latency[(experts, 1)]
    for k in (1, 2):
        values = [latency[(e, k)] for e in (4, 8, 16)]
        assert max(values) < 1.1 * min(values), f"{target}: {values}"
    for experts in (4, 16):
        assert nas.latency.predict(_vit(experts, 2), target=target).latency_ms > nas.latency.predict(
            _vit(experts, 1), target=target).latency_ms


def test_zcu104_runs_the_routing_on_its_cpu() -> None:
    prediction = nas.latency.predict(_vit(8, 2), target="zcu104")
    breakdown = prediction.breakdown
    assert breakdown.get("routing", 0) > 0 and breakdown.get("transfer", 0) > 0


# ---------------------------------------------------------------------------- search


@pytest.mark.parametrize("target", ["zcu104", "iphone12"])
def test_a_metaformer_search_evaluates_moe_points(target: str, tmp_path: Path) -> None:
    # The acceptance run is --budget 300 with the zoo start; this is its first random generation.
    assert main(["search", "--space", "metaformer", "--accuracy", "proxy", "--budget", "24", "--population", "24",
                 "--no-zoo-start", "--target", target, "--out", str(tmp_path), "--no-plot", "--json"]) == 0
    (folder,) = tmp_path.iterdir()
    run = nas.runs.Run.open(folder)
    history = run.history()
    moe = [arch_id for arch_id in history["arch_id"]
           if any(block.ffn.kind == "moe" for stage in run.arch(arch_id).stages for block in stage.blocks)]
    assert len(history) == 24 and moe
    assert history.set_index("arch_id").loc[moe, "latency_ms"].gt(0).all()
