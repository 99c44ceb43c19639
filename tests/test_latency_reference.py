"""Reference models and calibration rows: every model builds on meta and traces, matches its published
parameters, every calibration row resolves to a traceable model, and bad calibration files fail clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import nas
from nas.errors import ConfigError, NasError, UnknownKindError
from nas.latency.calibration import measurements
from nas.latency.calibration.measurements import CalibrationError, load_measurements, trace, trace_reference
from nas.latency.calibration.models import REFERENCE_MODELS
from nas.latency.calibration.select import (
    PARAMS_EXCEPTIONS,
    PARAMS_TOLERANCE,
    SUPPLEMENT_DIR,
    TARGETS,
    _no_slower_at_larger_input,
    reference_family,
    reference_params,
    select,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "calibration"


def _rows(target: str) -> list[measurements.Measurement]:
    return load_measurements(target)


def test_targets_are_the_four_calibration_files() -> None:
    assert measurements.list_targets() == sorted(TARGETS)


def test_reference_names_are_not_zoo_names() -> None:
    assert not set(REFERENCE_MODELS.names()) & set(nas.zoo.list_zoo())


@pytest.mark.parametrize("name", REFERENCE_MODELS.names())
def test_reference_model_builds_on_meta_traces_and_matches_published_params(name: str) -> None:
    model = REFERENCE_MODELS.get(name)
    module = model.build(device="meta")
    assert all(p.device.type == "meta" for p in module.parameters())
    report = trace_reference(name, model.resolution)
    assert report.macs > 0 and report.ops
    assert report.ops[-1].out_shapes[0] == (1, 1000)
    if model.params_m is not None:
        assert report.params / 1e6 == pytest.approx(model.params_m, rel=PARAMS_TOLERANCE), model.source


@pytest.mark.parametrize("target", TARGETS)
def test_every_row_traces_and_matches_the_published_params(target: str) -> None:
    rows = _rows(target)
    assert rows
    for row in rows:
        assert row.family == reference_family(row.reference)
        assert row.batch >= 1 and row.latency_ms > 0 and row.source
        # Meta tracing is batch-agnostic; batch 1 keeps the test fast (the predictors trace the real batch).
        report = trace_reference(row.reference, row.resolution)
        assert report.macs > 0, row.model
        published = row.published_columns.get("params_M", "")
        try:
            params_m = float(published)
        except ValueError:
            continue
        built = report.params
        if abs(built / 1e6 - params_m) <= PARAMS_TOLERANCE * params_m:
            continue
        omitted = reference_params(row.reference)[1]
        explained = [key for key, exception in PARAMS_EXCEPTIONS.items()
                     if exception.covers(row.published_columns)
                     and abs((built - omitted[key]) / 1e6 - params_m) <= PARAMS_TOLERANCE * params_m]
        assert explained, f"{target}:{row.line} {row.model}: built {built / 1e6:.2f}M vs published {params_m}M"


def test_trace_is_cached_and_matches_profile_module() -> None:
    row = next(row for row in _rows("v100") if row.reference == "resnet18" and row.batch == 4)
    first = trace(row)
    assert trace(row) is first
    direct = nas.cost.profile_module(REFERENCE_MODELS.get("resnet18").build(device="meta"), (3, 224, 224), batch=4)
    assert (first.macs, first.params, first.batch) == (direct.macs, direct.params, 4)


def test_trace_of_a_zoo_row_uses_the_arch_at_the_row_resolution() -> None:
    row = next(row for row in _rows("v100") if row.model == "DeiT_base_patch16_384" and row.batch == 1)
    report = trace(row)
    expected = nas.profile(nas.zoo.get("deit_base").with_resolution(384))
    assert report.macs == expected.macs


def test_settings_are_typed_and_regimes_separable() -> None:
    rows = _rows("xeon")
    settings = {row.setting for row in rows}
    assert ("Xeon Gold 6148", "paddle-mkldnn", "fp32", 10) in settings
    assert any(setting[2] == "int8" for setting in settings)
    derived = [row for row in rows if row.derivation]
    assert derived and all("throughput" in row.derivation for row in derived)
    v100 = _rows("v100")
    assert {row.batch for row in v100 if row.runtime == "paddle-tensorrt"} == {1, 4, 8}


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(UnknownKindError, match="known: .*v100"):
        load_measurements("v101")
    with pytest.raises(NasError):
        load_measurements("../v100")


def test_unknown_reference_lists_close_names() -> None:
    with pytest.raises(UnknownKindError, match="resnet18"):
        trace_reference("resnet181", 224)
    with pytest.raises(UnknownKindError):
        REFERENCE_MODELS.get("resnet181")


def test_bad_resolution_or_batch_is_rejected() -> None:
    with pytest.raises(NasError, match="batch"):
        trace_reference("resnet18", 224, 0)
    with pytest.raises(NasError, match="cannot run"):
        trace_reference("deit_tiny_distilled", 96)


def _write(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _good_row() -> dict[str, str]:
    return {"model": "ResNet18", "family": "resnet", "reference": "resnet18", "resolution": "224", "batch_size": "1",
            "precision": "fp32", "runtime": "paddle-tensorrt", "device": "V100", "threads": "",
            "latency_ms": "1.08", "latency_derivation": "", "source": "test", "params_M": "11.69"}


def test_a_valid_small_file_loads(tmp_path: Path) -> None:
    row = _good_row()
    rows = load_measurements("v100", path=_write(tmp_path / "ok.csv", [row], list(row)))
    assert len(rows) == 1 and rows[0].threads is None and rows[0].published_columns == {"params_M": "11.69"}


@pytest.mark.parametrize(("change", "message"), [
    ({"latency_ms": "fast"}, "latency_ms must be a number"),
    ({"latency_ms": "-1"}, "latency_ms must be finite and > 0"),
    ({"batch_size": "0"}, "batch_size must be a positive integer"),
    ({"resolution": ""}, "column 'resolution' is empty"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"reference": "resnet181"}, "unknown reference"),
])
def test_a_bad_row_names_file_line_and_field(tmp_path: Path, change: dict[str, str], message: str) -> None:
    row = _good_row()
    path = _write(tmp_path / "bad.csv", [_good_row(), {**row, **change}], list(row))
    with pytest.raises(CalibrationError, match=rf"bad\.csv:3: .*{message}"):
        load_measurements("v100", path=path)


def test_a_missing_column_a_missing_file_and_a_corrupt_file_raise(tmp_path: Path) -> None:
    row = _good_row()
    del row["runtime"]
    with pytest.raises(CalibrationError, match="missing column.*runtime"):
        load_measurements("v100", path=_write(tmp_path / "cols.csv", [row], list(row)))
    with pytest.raises(CalibrationError, match="not found"):
        load_measurements("v100", path=tmp_path / "absent.csv")
    corrupt = tmp_path / "corrupt.csv"
    corrupt.write_bytes(b"\x00\xff\xfe garbage \x00")
    with pytest.raises(CalibrationError, match="corrupt.csv"):
        load_measurements("v100", path=corrupt)
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(measurements.REQUIRED_COLUMNS) + "\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match="no measurement rows"):
        load_measurements("v100", path=empty)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(",".join(measurements.REQUIRED_COLUMNS) + "\nResNet18,resnet\n", encoding="utf-8")
    with pytest.raises(CalibrationError, match="ragged.csv:2"):
        load_measurements("v100", path=ragged)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the published tables (../shared/calibration) are not here")
@pytest.mark.parametrize("target", TARGETS)
def test_the_csvs_are_what_the_selection_script_writes(target: str) -> None:
    selection = select(target, SHARED)
    with (ROOT / "predictors" / "calibration" / f"{target}.csv").open(encoding="utf-8", newline="") as handle:
        stored = list(csv.DictReader(handle))
    assert stored == selection.rows


def test_meta_build_honours_dtype() -> None:
    module = REFERENCE_MODELS.get("mobilenetv3_small_10").build(device="meta", dtype=torch.float16)
    assert {p.dtype for p in module.parameters()} == {torch.float16}


def _row(model: str, resolution: int, batch: int, latency: float) -> dict[str, str]:
    return {"model": model, "reference": "resnet50", "resolution": str(resolution), "batch_size": str(batch),
            "precision": "fp32", "runtime": "paddle-tensorrt", "device": "V100", "threads": "",
            "latency_ms": str(latency)}


def test_a_network_published_no_slower_at_a_larger_input_is_dropped_at_every_batch() -> None:
    rows = [_row("R50", 224, 1, 2.0), _row("R50", 224, 4, 5.0), _row("R50_384", 384, 1, 1.9),
            _row("R50_384", 384, 4, 9.0), _row("R50_288", 288, 1, 3.1), _row("R50_288", 288, 4, 7.5)]
    doubtful = _no_slower_at_larger_input(rows)
    assert sorted(doubtful) == [2, 3]  # both batches of the 384 px line; the 288 px line is slower, as it must be
    assert doubtful[3].startswith("published no slower at 384 px than R50")


@pytest.mark.skipif(not SHARED.is_dir(), reason="the published tables (../shared/calibration) are not here")
def test_paddleclas_fix_resnext_at_320_px_is_skipped() -> None:
    selection = select("v100", SHARED)
    assert not [row for row in selection.rows if row["model"] == "Fix_ResNeXt101_32x48d_wsl"]
    reasons = {reason for model, reason in selection.skipped if model == "Fix_ResNeXt101_32x48d_wsl"}
    assert len(reasons) == 1 and "input size in doubt" in reasons.pop()


def _supplement_rows() -> tuple[list[str], list[dict[str, str]]]:
    with (SUPPLEMENT_DIR / "iphone12.csv").open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_supplement_rows_are_read_after_the_shared_table_with_their_sources(tmp_path: Path) -> None:
    header, supplement = _supplement_rows()
    shared = {**supplement[0], "model": "MobileNetV2 (x1.0)", "measurement_tool": "coreml-performance",
              "source_repo": "snap-research/EfficientFormer"}
    _write(tmp_path / "iphone12.csv", [shared], header)
    selection = select("iphone12", tmp_path)
    assert [row["model"] for row in selection.rows] == ["MobileNetV2 (x1.0)"] + [row["model"] for row in supplement]
    fastvit = next(row for row in selection.rows if row["model"] == "FastViT-SA12")
    assert (fastvit["reference"], fastvit["resolution"], fastvit["latency_ms"]) == ("fastvit_sa12", "256", "1.6")
    assert fastvit["source"].startswith("apple/ml-fastvit README.md @ 8af5928")
    without = select("iphone12", tmp_path, supplement_dir=None)
    assert [row["model"] for row in without.rows] == ["MobileNetV2 (x1.0)"]


def test_supplement_with_other_columns_names_the_file(tmp_path: Path) -> None:
    header, supplement = _supplement_rows()
    shared_dir, extra_dir = tmp_path / "shared", tmp_path / "extra"
    shared_dir.mkdir()
    extra_dir.mkdir()
    _write(shared_dir / "iphone12.csv", supplement[:1], header)
    _write(extra_dir / "iphone12.csv", [{k: supplement[0][k] for k in header[:-1]}], header[:-1])
    with pytest.raises(ConfigError, match="columns") as caught:
        select("iphone12", shared_dir, extra_dir)
    assert str(extra_dir / "iphone12.csv") in str(caught.value)
