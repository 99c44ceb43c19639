"""The persistent unit tables: a process that reads them prices exactly as one that traces, and a table that
cannot be trusted is never used.

A "new process" is simulated by fresh tables with a fresh signature walker and an empty trace cache
(``nas.cost.CACHE``), so every number must come from the file or from a new trace.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import nas
from nas.cost import CACHE
from nas.errors import NasWarning
from nas.latency import list_targets, predict
from nas.latency.batch import BatchPredictor, CostTable, UnitSignatures
from nas.latency.optable import UnsupportedOpError
from nas.latency.predict import resolve_setting
from nas.latency.unit_store import ENV, UnitStore, open_store

TARGET = "iphone12"


@pytest.fixture(scope="module")
def space() -> nas.Space:
    return nas.space.load_space("metaformer")


@pytest.fixture(scope="module")
def archs(space: nas.Space) -> list[nas.Arch]:
    """The space's zoo models and random points of it."""
    zoo = [nas.zoo.get(name) for name in nas.zoo.list_zoo()]
    members = [arch for arch in zoo if space.contains(arch)[0]]
    assert len(members) >= 10
    return members + [space.decode(vector) for vector in space.sample_vectors(np.random.default_rng(21), 8)]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_HOME", str(tmp_path))
    monkeypatch.delenv(ENV, raising=False)
    return tmp_path


def _latencies(predictor: BatchPredictor, archs: list[nas.Arch]) -> list[float | None]:
    """Latency per Arch, None where the setting cannot run it."""
    out: list[float | None] = []
    for arch in archs:
        try:
            out.append(float(predictor([arch])[0]))
        except UnsupportedOpError:
            out.append(None)
    return out


@pytest.mark.parametrize("target", list_targets())
def test_a_new_process_prices_from_the_table_like_predict(target: str, archs: list[nas.Arch], home: Path) -> None:
    setting = resolve_setting(target)
    first = BatchPredictor(setting, 1, UnitSignatures())
    traced = _latencies(first, archs)
    costs = CostTable(UnitSignatures())
    params, macs = costs(archs)
    assert first.store is not None and costs.store is not None
    first.store.flush()
    costs.store.flush()

    CACHE.clear()
    second = BatchPredictor(setting, 1, UnitSignatures())
    again = _latencies(second, archs)
    params_again, macs_again = CostTable(UnitSignatures())(archs)
    assert CACHE.info().misses == 0, "every unit came from the tables, none was traced"
    assert again == traced
    assert params_again.tolist() == params.tolist() and macs_again.tolist() == macs.tolist()

    supported = [(arch, value) for arch, value in zip(archs, again, strict=True) if value is not None]
    assert len(supported) >= len(archs) // 2
    want = [predict(arch, target=target).latency_ms for arch, _ in supported]
    np.testing.assert_allclose([value for _, value in supported], want, rtol=1e-12, atol=0)
    for arch, value in zip(archs, again, strict=True):
        if value is None:
            with pytest.raises(UnsupportedOpError):
                predict(arch, target=target)


def _filled(archs: list[nas.Arch]) -> tuple[Path, np.ndarray]:
    predictor = BatchPredictor(resolve_setting(TARGET), 1, UnitSignatures())
    values = predictor(archs)
    assert predictor.store is not None
    predictor.store.flush()
    return predictor.store.path, values


@pytest.mark.parametrize("damage", ["truncated", "edited number", "other fingerprint"])
def test_a_damaged_table_is_set_aside_with_a_warning(damage: str, archs: list[nas.Arch], home: Path) -> None:
    path, values = _filled(archs[-3:])
    document = json.loads(path.read_text())
    if damage == "truncated":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    elif damage == "edited number":
        key = next(iter(document["entries"]))
        document["entries"][key][0] *= 2.0  # still valid JSON: only the checksum notices
        path.write_text(json.dumps(document))
    else:
        document["fingerprint"] = "0" * 64
        path.write_text(json.dumps(document))
    CACHE.clear()
    predictor = BatchPredictor(resolve_setting(TARGET), 1, UnitSignatures())
    with pytest.warns(NasWarning, match=r"unit cost table .*(not JSON|checksum|fingerprint).*\.corrupt"):
        again = predictor(archs[-3:])
    np.testing.assert_array_equal(again, values)
    assert CACHE.info().misses > 0, "the units were traced again, not read from the damaged file"
    assert path.with_name(path.name + ".corrupt").is_file()


def test_writers_sharing_a_file_keep_each_others_entries(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    one = UnitStore(path, fingerprint="f", width=2)
    two = UnitStore(path, fingerprint="f", width=2)
    assert one.get("a") is None and two.get("b") is None  # both read the (missing) file first
    one.put({"a": (1, 2.5)})
    two.put({"b": (3, 4.25)})
    one.flush()
    two.flush()
    reader = UnitStore(path, fingerprint="f", width=2)
    assert reader.get("a") == (1, 2.5) and reader.get("b") == (3, 4.25) and len(reader) == 2


def test_numbers_round_trip_exactly(tmp_path: Path) -> None:
    numbers = (0.1 + 0.2, 1e-300, 2.0**-52, 123456789012345)
    store = UnitStore(tmp_path / "table.json", fingerprint="f", width=4)
    store.put({"k": numbers})
    store.flush()
    assert UnitStore(tmp_path / "table.json", fingerprint="f", width=4).get("k") == numbers


def test_tables_depend_on_the_setting_and_can_be_turned_off(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = open_store("latency", "setting A", "1", width=3)
    other = open_store("latency", "setting B", "1", width=3)
    assert first is not None and other is not None and first.path != other.path
    assert first.path.parent == home / "unit_costs"
    monkeypatch.setenv(ENV, "off")
    assert open_store("latency", "setting A", "1", width=3) is None
    predictor = BatchPredictor(resolve_setting(TARGET), 1, UnitSignatures())
    assert predictor.store is None


def test_a_table_that_cannot_be_written_keeps_its_units_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    store = UnitStore(blocker / "table.json", fingerprint="f", width=1, flush_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.put({"k": (1.5,)})
        store.put({"j": (2.5,)})
        store.flush()
    assert any(issubclass(w.category, NasWarning) and "not written" in str(w.message) for w in caught)
    assert store.get("k") == (1.5,) and store.get("j") == (2.5,)
