"""nas.report: the ParetoInfo computed from hand-made histories and runs; the PNG it renders; `nas plot`."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nas
from nas.cli import main
from nas.errors import NasError
from nas.report import LOG_SPAN, ParetoInfo, pareto_info, plot, render_pareto
from nas.runs import PLOT_FILE, ConstraintSpec, ObjectiveSpec, Run, RunSettings
from nas.search.records import Proposal, Record
from tests.conftest import TINY_DIR

ACCURACY = ObjectiveSpec("accuracy", "proxy_score", "maximize", "proxy score")
LATENCY = ObjectiveSpec("latency", "latency_ms", "minimize", "latency on iphone12 (ms)")
PARAMS = ObjectiveSpec("params", "params_m", "minimize", "parameters (M)")
OBJECTIVES = (ACCURACY, LATENCY)


def _frame(rows: list[tuple[str, float, float, bool]]) -> pd.DataFrame:
    """A history: (arch id, accuracy, latency, feasible) per evaluation."""
    return pd.DataFrame({
        "number": np.arange(len(rows)),
        "arch_id": [row[0] for row in rows],
        "proxy_score": [row[1] for row in rows],
        "latency_ms": [row[2] for row in rows],
        "feasible": [row[3] for row in rows],
    })


HISTORY = [
    ("a", 0.50, 1.0, True),  # front
    ("b", 0.60, 2.0, True),  # front
    ("c", 0.55, 3.0, True),  # dominated by b
    ("d", 0.90, 5.0, False),  # would lead, but infeasible
    ("e", 0.70, 4.0, True),  # front
    ("b", 0.60, 2.0, True),  # b evaluated again: counted once
    ("f", 0.95, math.nan, True),  # no latency: not plottable, not on the front
]


# -- the front, the infeasible set, the axes ------------------------------------------------------------


def test_front_infeasible_and_points() -> None:
    info = pareto_info(_frame(HISTORY), objectives=OBJECTIVES)
    assert isinstance(info, ParetoInfo)
    assert info.front.tolist() == [True, True, False, False, True, False, False]
    assert info.infeasible.tolist() == [False, False, False, True, False, False, False]
    assert (info.x, info.y) == (LATENCY, ACCURACY)  # latency across, accuracy up
    np.testing.assert_array_equal(info.points[:3], [[1.0, 0.50], [2.0, 0.60], [3.0, 0.55]])
    assert math.isnan(info.points[6, 0])
    assert info.front_order().tolist() == [0, 1, 4]  # by latency
    assert info.arch_ids[5] == "b" and info.numbers.tolist() == list(range(7))
    assert info.references == () and info.references_note == ""


def test_axes_follow_the_objectives_not_their_order() -> None:
    info = pareto_info(_frame(HISTORY), objectives=(LATENCY, ACCURACY))
    assert (info.x, info.y) == (LATENCY, ACCURACY)
    swapped = pareto_info(_frame(HISTORY), objectives=OBJECTIVES, x="proxy_score", y="latency_ms")
    assert (swapped.x, swapped.y) == (ACCURACY, LATENCY)
    np.testing.assert_array_equal(swapped.points[0], [0.50, 1.0])
    assert swapped.front.tolist() == pareto_info(_frame(HISTORY), objectives=OBJECTIVES).front.tolist()


@pytest.mark.parametrize(
    ("objectives", "options", "message"),
    [
        ((ACCURACY,), {}, "needs two objectives"),
        (OBJECTIVES, {"x": "gmacs"}, "unknown objective column 'gmacs'"),
        (OBJECTIVES, {"x": "latency_ms", "y": "latency_ms"}, "must differ"),
        ((ACCURACY, PARAMS), {}, "no column 'params_m'"),
    ],
)
def test_bad_requests_fail_clearly(objectives, options, message) -> None:
    with pytest.raises(NasError, match=message):
        pareto_info(_frame(HISTORY), objectives=objectives, **options)


def test_a_frame_needs_its_objectives() -> None:
    with pytest.raises(NasError, match="objectives are required"):
        pareto_info(_frame(HISTORY))


def test_front_uses_every_objective() -> None:
    frame = _frame([("a", 0.5, 1.0, True), ("b", 0.6, 2.0, True), ("c", 0.55, 3.0, True)])
    frame["params_m"] = [5.0, 5.0, 1.0]  # c is dominated in accuracy/latency, but the smallest
    info = pareto_info(frame, objectives=(ACCURACY, LATENCY, PARAMS))
    assert info.front.tolist() == [True, True, True]
    assert (info.x, info.y) == (LATENCY, ACCURACY)
    assert len(info.hypervolume_reference) == 3


def test_defaults_without_number_arch_id_or_feasible() -> None:
    frame = pd.DataFrame({"proxy_score": [0.5, 0.6, 0.4], "latency_ms": [1.0, 2.0, 3.0]})
    info = pareto_info(frame, objectives=OBJECTIVES)
    assert info.numbers.tolist() == [0, 1, 2]
    assert info.front.tolist() == [True, True, False]
    assert not info.infeasible.any()
    assert len(set(info.arch_ids)) == 3


def test_log_scale_only_for_a_wide_span() -> None:
    narrow = _frame([("a", 0.5, 1.0, True), ("b", 0.6, LOG_SPAN * 0.9, True)])
    wide = _frame([("a", 0.5, 1.0, True), ("b", 0.6, LOG_SPAN * 1.1, True)])
    assert not pareto_info(narrow, objectives=OBJECTIVES).x_log
    assert pareto_info(wide, objectives=OBJECTIVES).x_log


# -- hypervolume ------------------------------------------------------------------------------------------


def test_hypervolume_by_hand() -> None:
    # losses (-accuracy, latency): a (-.5, 1), b (-.6, 2), c (-.55, 3); nadir (-.5, 3), range (.1, 2),
    # reference = nadir + 10 % of the range = (-.49, 3.2).
    # after a: .01 * 2.2 = .022; after b: a + .11 * 1.2 - .01 * 1.2 = .142; c is dominated by b.
    info = pareto_info(_frame(HISTORY[:3]), objectives=OBJECTIVES)
    np.testing.assert_allclose(info.hypervolume_reference, [-0.49, 3.2])
    np.testing.assert_allclose(info.hypervolume, [0.022, 0.142, 0.142])


def test_infeasible_and_missing_points_add_no_hypervolume() -> None:
    info = pareto_info(_frame(HISTORY), objectives=OBJECTIVES)
    curve = info.hypervolume
    assert curve[3] == curve[2]  # d is infeasible
    assert curve[5] == curve[4]  # b again
    assert curve[6] == curve[5]  # f has no latency
    assert np.all(np.diff(curve) >= 0)
    # d's values do not move the reference point either: it comes from a, b, c, e
    np.testing.assert_allclose(info.hypervolume_reference, [-0.5 + 0.02, 4.0 + 0.3])


def test_no_feasible_point_means_no_reference() -> None:
    info = pareto_info(_frame([("a", 0.5, 1.0, False)]), objectives=OBJECTIVES)
    assert info.hypervolume_reference is None
    assert info.hypervolume.tolist() == [0.0]
    assert not info.front.any()


def test_empty_history() -> None:
    info = pareto_info(_frame([]), objectives=OBJECTIVES)
    assert info.points.shape == (0, 2) and info.hypervolume.shape == (0,)


# -- zoo reference points ---------------------------------------------------------------------------------

ZOO_CANDIDATES = ("convnext_tiny", "poolformer_s12")


def _zoo_info(accuracy: str) -> ParetoInfo:
    return pareto_info(_frame(HISTORY), objectives=OBJECTIVES, zoo_space="convnext", target="iphone12",
                       accuracy=accuracy, zoo_archs={name: nas.zoo.get(name) for name in ZOO_CANDIDATES})


@pytest.fixture(scope="module")
def proxy_zoo() -> ParetoInfo:
    return _zoo_info("proxy")


def test_zoo_models_of_the_space_priced_with_the_objectives(proxy_zoo: ParetoInfo) -> None:
    (point,) = proxy_zoo.references  # poolformer_s12 is not a point of the convnext space
    arch = nas.zoo.get("convnext_tiny")
    assert (point.name, point.arch_id) == ("convnext_tiny", arch.id)
    latency = nas.latency.predict(arch, target="iphone12").latency_ms
    assert point.x == pytest.approx(latency, rel=1e-9)
    assert point.y == pytest.approx(math.log10(nas.profile(arch).gmacs * 1e9), rel=1e-9)
    assert point.values == {"proxy_score": point.y, "latency_ms": point.x}
    assert proxy_zoo.references_note == "zoo models of this space"


def test_zoo_accuracy_unknown_for_an_expensive_source() -> None:
    info = _zoo_info("supernet")
    (point,) = info.references
    assert math.isfinite(point.x) and math.isnan(point.y)
    assert "not scored by the 'supernet' source" in info.references_note


def test_a_zoo_model_the_search_evaluated_takes_the_runs_accuracy() -> None:
    evaluated = nas.zoo.get("convnext_tiny").id
    info = pareto_info(_frame([*HISTORY, (evaluated, 0.42, 9.0, True)]), objectives=OBJECTIVES, zoo_space="convnext",
                       target="iphone12", accuracy="supernet",
                       zoo_archs={name: nas.zoo.get(name) for name in ZOO_CANDIDATES})
    (point,) = info.references
    assert point.y == 0.42 and point.x == pytest.approx(nas.latency.predict(nas.zoo.get("convnext_tiny"),
                                                                            target="iphone12").latency_ms)
    assert info.references_note == "zoo models of this space"


def test_zoo_references_need_a_target() -> None:
    with pytest.raises(NasError, match="need the latency target"):
        pareto_info(_frame(HISTORY), objectives=OBJECTIVES, zoo_space="convnext")


# -- a run ---------------------------------------------------------------------------------------------------


def _make_run(root: Path, history: list[tuple[str, float, float, bool]] = HISTORY[:5]) -> Run:
    """A run of the convnext space whose candidates are tiny archs with made-up objective values."""
    settings = RunSettings(space="convnext", target="iphone12", accuracy="proxy", objectives=OBJECTIVES,
                           constraints=(ConstraintSpec("max_latency", "latency_ms", 4.5, "4.5ms"),))
    run = Run.create(root, settings, name="run")
    tiny = sorted(TINY_DIR.glob("*.yaml"))
    for index, (label, accuracy, latency, _) in enumerate(history):
        arch = nas.Arch.load(tiny["abcdef".index(label)])
        key = f"0:0:{index}"
        record = Record(number=-1, key=key, worker=0, vector=np.zeros(1, dtype=np.int16), arch_id=arch.id,
                        generation=0, parents=(), values=(accuracy, latency), violations=(latency - 4.5,),
                        metrics={"latency_ms": latency}, arch_json=arch.to_json())
        run.record(Proposal(key=key, vector=record.vector), record)
    return run


def test_run_info_agrees_with_the_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    info = pareto_info(run, zoo_space=False)
    front_numbers = sorted(info.numbers[info.front].tolist())
    assert front_numbers == sorted(run.pareto()["number"].tolist()) == [0, 1, 4]
    assert info.infeasible.tolist() == [False, False, False, True, False]
    np.testing.assert_allclose(info.hypervolume, run.hypervolume())
    np.testing.assert_allclose(info.hypervolume_reference, run.reference())
    assert info.title.startswith("run: convnext on iphone12")
    assert (info.x.column, info.y.column) == ("latency_ms", "proxy_score")


# -- rendering ----------------------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_render_writes_a_png_of_the_asked_size(tmp_path: Path, proxy_zoo: ParetoInfo) -> None:
    path = render_pareto(proxy_zoo, tmp_path / "sub" / "front.png", dpi=50, size_in=(8.0, 4.0))
    assert path == tmp_path / "sub" / "front.png"
    assert _png_size(path) == (400, 200)
    assert [p.name for p in path.parent.iterdir()] == ["front.png"]  # no temporary left


def test_render_reference_lines_and_an_empty_history(tmp_path: Path) -> None:
    info = _zoo_info("supernet")
    assert _png_size(render_pareto(info, tmp_path / "lines.png", dpi=40)) == (480, 200)
    empty = pareto_info(_frame([]), objectives=OBJECTIVES)
    assert _png_size(render_pareto(empty, tmp_path / "empty.png", dpi=40)) == (480, 200)


def test_plot_writes_into_the_run(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    path, info = plot(run, zoo_space=False)
    assert path == run.path / PLOT_FILE
    assert _png_size(path) == (1200, 500)
    assert int(info.front.sum()) == 3


# -- the command ---------------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_plot_prints_the_path(capsys, tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    out_file = tmp_path / "elsewhere.png"
    status, out, err = run_cli(capsys, "plot", str(run.path), "--no-zoo", "--out", str(out_file))
    assert status == 0, err
    assert out.strip() == str(out_file)
    assert _png_size(out_file)[0] == 1200
    assert not (run.path / PLOT_FILE).exists()


def test_cli_plot_bad_run_one_line_status_2(capsys, tmp_path: Path) -> None:
    status, out, err = run_cli(capsys, "plot", str(tmp_path / "missing"))
    assert status == 2 and out == ""
    assert "no such run directory" in err and len(err.strip().splitlines()) == 1
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.yaml").write_text("schema: [unclosed\n")
    status, out, err = run_cli(capsys, "plot", str(corrupt))
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "corrupt run file" in err
    assert sorted(path.name for path in corrupt.iterdir()) == ["run.yaml"]


def test_cli_export_top_k_of_a_run(capsys, tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    out = tmp_path / "exported"
    status, stdout, err = run_cli(capsys, "export", str(run.path), "--top", "2", "--format", "yaml",
                                  "--out", str(out))
    assert status == 0, err
    top = run.top(2)
    expected = [f"{rank:02d}-{record.arch_id}.yaml" for rank, (record, _) in enumerate(top, start=1)]
    assert sorted(path.name for path in out.iterdir()) == expected
    for name, (record, _) in zip(expected, top, strict=True):
        assert nas.Arch.load(out / name).id == record.arch_id
    status, _, _ = run_cli(capsys, "export", str(run.path), "--format", "json")
    assert status == 0
    assert [path.suffix for path in (run.path / "export").iterdir()] == [".json"]


def test_cli_export_of_a_corrupt_run_writes_nothing(capsys, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "run.yaml").write_text("schema: 1\nsettings: {space: convnext}\n")
    status, out, err = run_cli(capsys, "export", str(corrupt), "--format", "yaml")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert sorted(path.name for path in corrupt.iterdir()) == ["run.yaml"]
