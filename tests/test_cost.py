"""nas.cost: hand-computed MACs, the trace cache, agreement with the built model and FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import nas
from nas import cost
from nas.build import plan
from nas.lru import LruCache
from tests.conftest import TINY_DIR, tiny_files


def test_conv2d_macs_and_params_are_hand_computed() -> None:
    report = cost.profile_module(nn.Conv2d(3, 16, 3, stride=2, padding=1), (3, 32, 32))
    assert report.macs == 16 * 16 * 16 * (3 * 3 * 3)  # out channels * out pixels * (in channels * kernel)
    assert report.params == 16 * 3 * 3 * 3 + 16
    (op,) = report.ops
    assert (op.name, op.op_class, op.out_shapes) == ("aten.convolution", "conv", ((1, 16, 16, 16),))
    assert op.bytes_read == 4 * (3 * 32 * 32 + 16 * 27 + 16)
    assert op.bytes_written == 4 * 16 * 16 * 16


def test_linear_macs_per_token() -> None:
    assert cost.profile_module(nn.Linear(64, 10), (64,)).macs == 64 * 10
    assert cost.profile_module(nn.Linear(64, 10), (5, 64)).macs == 5 * 64 * 10


def test_tiny_mlp_macs_flops_and_units() -> None:
    mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8))
    report = cost.profile_module(mlp, (32,))
    assert report.macs == 32 * 64 + 64 * 8
    assert report.flops == 2 * report.macs + 64  # the GELU: one FLOP per output element
    assert report.params == sum(p.numel() for p in mlp.parameters())
    assert report.by_class() == {"view": 0, "matmul": 2 * report.macs, "activation": 64}
    assert [op.unit for op in report.ops if op.op_class != "view"] == ["0", "1", "2"]


def test_profile_module_on_sequential_leaves_the_module_alone() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 10))
    net.train()
    before = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    report = cost.profile_module(net, (3, 16, 16))
    assert report.macs == 8 * 16 * 16 * 27 + 8 * 10
    assert {op.op_class for op in report.ops} >= {"conv", "norm", "activation", "reduce", "view", "matmul"}
    assert net.training and all(module.training for module in net.modules())
    assert all(torch.equal(before[name], tensor) for name, tensor in net.state_dict().items())
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_views_move_no_bytes_and_copies_do() -> None:
    class Fold(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(2).transpose(1, 2).contiguous().view(x.shape[0], -1)

    report = cost.profile_module(Fold(), (4, 6, 6))
    views = [op for op in report.ops if op.op_class == "view"]
    assert len(views) >= 3
    assert all(op.bytes_read == op.bytes_written == op.flops == 0 for op in views)
    (copy,) = [op for op in report.ops if op.op_class != "view"]
    assert (copy.op_class, copy.bytes_read, copy.bytes_written, copy.flops) == ("movement", 4 * 144, 4 * 144, 0)


def test_batch_four_is_four_times_batch_one(tiny_pooling: nas.Arch) -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, groups=8))
    one, four = (cost.profile_module(net, (3, 16, 16), batch=batch) for batch in (1, 4))
    assert four.flops == 4 * one.flops and four.macs == 4 * one.macs
    one, four = (cost.profile(tiny_pooling, batch=batch) for batch in (1, 4))
    assert four.flops == 4 * one.flops and four.macs == 4 * one.macs
    assert four.params == one.params and four.batch == 4


def test_falls_back_to_cpu_for_data_dependent_modules() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return y.relu() if bool(y.sum() > -1.0) else y  # .item() on meta raises

    report = cost.profile_module(Gate(), (4,))
    assert report.macs == 16
    assert [op.name for op in report.ops][-1] == "aten.relu"


def test_repeated_blocks_are_traced_once(monkeypatch: pytest.MonkeyPatch) -> None:
    arch = nas.zoo.get("poolformer_s12")
    units = plan(arch).units
    distinct = {unit.key for unit in units}
    assert len(distinct) < len(units)
    traced: list[tuple[int, ...]] = []
    original = cost._trace

    def counting(module: nn.Module, shape: tuple[int, ...], *args: object, **kwargs: object) -> object:
        traced.append(shape)
        return original(module, shape, *args, **kwargs)

    monkeypatch.setattr(cost, "_trace", counting)
    cost.CACHE.clear()
    first = cost.profile(arch)
    assert len(traced) == cost.CACHE.info().misses == len(distinct)
    second = cost.profile(arch)
    assert len(traced) == len(distinct)
    assert cost.CACHE.info().hits == len(units) + len(units) - len(distinct)
    assert first == second
    per_block = [[op.name for op in first.ops if op.unit == f"stages[2].blocks[{n}]"] for n in range(6)]
    assert per_block[0] and all(names == per_block[0] for names in per_block)


def test_cache_is_keyed_by_dtype_and_batch(tiny_pooling: nas.Arch) -> None:
    full = cost.profile(tiny_pooling)
    half = cost.profile(tiny_pooling, dtype=torch.float16)
    convs = [(a, b) for a, b in zip(full.ops, half.ops, strict=True) if a.op_class == "conv"]
    assert convs and all(b.dtype == "float16" and 2 * b.bytes_read == a.bytes_read for a, b in convs)
    assert half.macs == full.macs and half.params == full.params
    assert cost.profile(tiny_pooling, batch=2).macs == 2 * full.macs
    for unit in plan(tiny_pooling).units:
        settings = ((1, torch.float32), (1, torch.float16), (2, torch.float32))
        assert all((unit.key, *key) in cost.CACHE for key in settings)


def test_cache_evicts_least_recently_used() -> None:
    cache = LruCache[tuple[str, int, torch.dtype], cost._UnitCost](maxsize=2)
    entry = cost._summarise([], -1, 0)
    for name in ("a", "b"):
        cache.put((name, 1, torch.float32), entry)
    assert cache.get(("a", 1, torch.float32)) is entry
    cache.put(("c", 1, torch.float32), entry)
    assert cache.get(("b", 1, torch.float32)) is None
    assert cache.info() == cost.CacheInfo(hits=1, misses=1, size=2, maxsize=2)
    cache.clear()
    assert cache.info() == cost.CacheInfo(hits=0, misses=0, size=0, maxsize=2)


def test_report_views_add_up(tiny_pooling: nas.Arch) -> None:
    report = cost.profile(tiny_pooling)
    frame = report.to_frame()
    assert list(frame.columns) == ["unit", "name", "op_class", "in_shapes", "out_shapes", "dtype", "flops",
                                   "bytes_read", "bytes_written", "precision"]
    assert len(frame) == len(report.ops) and frame["flops"].sum() == report.flops
    assert sum(report.by_class().values()) == report.flops
    assert sum(report.by_class("bytes").values()) == report.bytes_read + report.bytes_written
    assert list(report.by_unit()) == [unit.path for unit in plan(tiny_pooling).units]
    assert report.macs * 2 == sum(report.by_class()[name] for name in cost.MAC_CLASSES if name in report.by_class())
    assert report.params_m == report.params / 1e6 and report.gmacs == report.macs / 1e9


def test_every_registered_flop_formula_counts_as_macs() -> None:
    names = [str(packet) for packet in flop_registry if isinstance(packet, torch._ops.OpOverloadPacket)]
    assert names and all(cost.op_class(name) in cost.MAC_CLASSES for name in names)
    assert cost.op_class("aten.add_") == "elementwise" and cost.op_class("aten.made_up") == "other"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_batch_is_refused(bad: object, tiny_pooling: nas.Arch) -> None:
    with pytest.raises(nas.NasError, match="batch must be an int >= 1"):
        cost.profile(tiny_pooling, batch=bad)  # type: ignore[arg-type]


def test_bad_input_shape_and_metric_are_refused(tiny_pooling: nas.Arch) -> None:
    with pytest.raises(nas.NasError, match="input_shape must be positive ints"):
        cost.profile_module(nn.Linear(4, 4), (0, 4))
    with pytest.raises(nas.NasError, match="metric must be one of"):
        cost.profile(tiny_pooling).by_class("joules")  # type: ignore[arg-type]


CASES = [f"zoo:{name}" for name in nas.zoo.list_zoo()] + [f"tiny:{path.name}" for path in tiny_files()]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_params_and_macs_match_the_built_model(case: str) -> None:
    kind, name = case.split(":")
    arch = nas.zoo.get(name) if kind == "zoo" else nas.Arch.load(TINY_DIR / name)
    report = cost.profile(arch)
    model = nas.build(arch, device="meta").eval()
    assert report.params == sum(p.numel() for p in model.parameters())
    size = arch.input.resolution
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, arch.input.channels, size, size, device="meta"))
    assert report.macs * 2 == counter.get_total_flops()
