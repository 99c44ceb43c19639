"""A unit is traced from a module built with meta as the default device (``nas.cost._trace_unit``); its trace
must be the one a module built the plain way gives: records, sources, output, params.

Units of every tiny arch file (one per registered kind) and of random points of every packaged space.
"""

from __future__ import annotations

import numpy as np
import torch

import nas
import nas.cost as cost
from nas.build import Unit, plan
from tests.conftest import tiny_files


def _units() -> list[Unit]:
    archs = [nas.Arch.load(path) for path in tiny_files()]
    for name in nas.space.list_spaces():
        space = nas.space.load_space(name)
        archs += [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(11), 3)]
    unique: dict[str, Unit] = {}
    for arch in archs:
        for unit in plan(arch).units:
            unique.setdefault(unit.key, unit)
    return list(unique.values())


def _plainly_built(unit: Unit, batch: int, dtype: torch.dtype) -> cost._UnitCost:
    module = unit.make(device="meta", dtype=dtype)
    records, output = cost._trace(module, (batch, *unit.in_shape), dtype, dtype, track=False, path=unit.path)
    return cost._summarise(records, output, sum(p.numel() for p in module.parameters()))


def test_units_built_on_the_meta_default_device_trace_as_plainly_built_ones() -> None:
    units = _units()
    assert len({unit.role for unit in units}) == 5 and len(units) > 50
    for unit in units:
        assert cost._trace_unit(unit, 2, torch.float32) == _plainly_built(unit, 2, torch.float32), unit.path


def test_a_constructor_that_reads_values_is_rebuilt_on_the_cpu() -> None:
    class Reads(torch.nn.Module):
        def __init__(self, *, device: object = None, dtype: object = None) -> None:
            super().__init__()
            width = int(torch.arange(4).sum())  # a value: fails on meta
            self.fc = torch.nn.Linear(3, width, device=device, dtype=dtype)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    unit = Unit("stem", -1, "reads", (3,), Reads, "stem", None, None)
    traced = cost._trace_unit(unit, 1, torch.float32)
    assert traced.params == 3 * 6 + 6 and traced.macs == 3 * 6
