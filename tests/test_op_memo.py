"""Replayed ops (``nas.op_memo``) give the traces a fresh run gives: records, sources, params, MACs.

Units of every tiny arch file (one per registered kind) and of random points of every packaged space, each
traced with the memo off and then with a memo that earlier traces filled (so most of its ops are replays).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nas
import nas.cost as cost
from nas.build import Unit, plan
from nas.op_memo import MEMO
from tests.conftest import tiny_files


def _units() -> list[Unit]:
    archs = [nas.Arch.load(path) for path in tiny_files()]
    for name in nas.space.list_spaces():
        space = nas.space.load_space(name)
        archs += [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(5), 3)]
    unique: dict[str, Unit] = {}
    for arch in archs:
        for unit in plan(arch).units:
            unique.setdefault(unit.key, unit)
    return list(unique.values())


def test_replayed_traces_equal_fresh_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    units = _units()
    assert len(units) > 50
    with monkeypatch.context() as patch:
        patch.setattr(cost, "key_of", lambda *_: None)
        fresh = [cost._trace_unit(unit, 2, torch.float32) for unit in units]
    MEMO.clear()
    first = [cost._trace_unit(unit, 2, torch.float32) for unit in units]  # fills the memo (and replays repeats)
    replays = MEMO.info().hits
    again = [cost._trace_unit(unit, 2, torch.float32) for unit in units]
    assert MEMO.info().hits - replays > sum(len(unit_cost.records) for unit_cost in fresh) // 2
    for unit, want, got, got_again in zip(units, fresh, first, again, strict=True):
        assert got == want, unit.path
        assert got_again == want, unit.path
