"""`nas finalists`: a run's top candidates trained alone, read back instead of retrained, compared by Kendall tau."""

from __future__ import annotations

import numpy as np
import pandas
import pytest

from nas.cli import main
from nas.errors import NasError
from nas.runs import Run
from nas.runs.finalists import FINALISTS_FILE, train_finalists
from nas.supernet import kendall_tau
from tests.test_search import write_tiny_space
from tests.test_search_cli import search_args, the_run


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, str]:
    folder = tmp_path_factory.mktemp("finalists")
    space = write_tiny_space(folder)
    assert main(search_args(str(space), "--out", str(folder / "runs"), budget=16)) == 0
    rng = np.random.default_rng(0)
    labels = np.arange(96) % 4
    images = (rng.random((96, 16, 16)) * 80 + labels[:, None, None] * 40).astype(np.uint8)
    np.savez(folder / "small.npz", x=images, y=labels)
    return Run.open(the_run(folder / "runs")), str(folder / "small.npz")


def test_kendall_tau_on_hand_checked_orders() -> None:
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 2, 3], [1, 1, 2]) == pytest.approx(2 / np.sqrt(3 * 2))  # tau-b: the tie is left out
    assert np.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))


def test_finalists_are_trained_once_and_listed(finished: tuple[Run, str], monkeypatch) -> None:
    run, data = finished
    table = train_finalists(run, count=2, epochs=1, data=data, progress=False)
    expected = [record.arch_id for record, _ in run.top(2)]
    assert list(table["arch_id"]) == expected and list(table["rank"]) == [1, 2]
    assert ((table["standalone_accuracy"] >= 0) & (table["standalone_accuracy"] <= 1)).all()
    assert all((run.path / "finalists" / arch_id / "model.pt").is_file() for arch_id in expected)
    stored = pandas.read_csv(run.path / FINALISTS_FILE)
    assert list(stored["arch_id"]) == expected and "latency_ms" in stored.columns

    def no_training(*args, **kwargs):
        raise AssertionError("a trained finalist is read back, not trained again")

    monkeypatch.setattr("nas.supernet.train_model", no_training)
    again = train_finalists(run, count=2, epochs=1, data=data, progress=False)
    assert again.equals(table)
    with pytest.raises(NasError, match="trained for 1 epoch"):
        train_finalists(run, count=1, epochs=2, data=data, progress=False)


def test_cli_prints_the_table_and_the_rank_agreement(finished: tuple[Run, str], capsys) -> None:
    run, data = finished
    assert main(["finalists", str(run.path), "--count", "2", "--epochs", "1", "--data", data]) == 0
    out = capsys.readouterr().out
    assert "standalone_accuracy" in out and "Kendall tau, proxy_score (search) vs standalone_accuracy" in out
    assert f"table: {run.path / FINALISTS_FILE}" in out
    assert main(["finalists", str(run.path / "missing")]) == 2
