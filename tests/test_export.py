"""nas.export: config round trips, torch.export programs, ONNX checked in onnxruntime, CoreML and its guard,
atomic writes, and the `nas export` command."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
import nas.export as export_module
from nas.cli import main
from nas.errors import NasError, UnknownKindError
from nas.export import ONNX_TOLERANCE, RANDOM_INIT_NOTE, export, export_many
from tests.conftest import TINY_DIR

POOLING = TINY_DIR / "mixer_pooling.yaml"
ATTENTION = TINY_DIR / "mixer_attention.yaml"


def _arch(path: Path) -> nas.Arch:
    return nas.Arch.load(path)


def _images(arch: nas.Arch, batch: int, seed: int = 7) -> torch.Tensor:
    spec = arch.input
    return torch.randn(batch, spec.channels, spec.resolution, spec.resolution,
                       generator=torch.Generator().manual_seed(seed))


def _seeded_model(arch: nas.Arch) -> torch.nn.Module:
    """What an export without a checkpoint holds: ``build`` under seed 0."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nas.build(arch).eval()


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


# -- yaml / json ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("source", ["mixer_pooling.yaml", "mixer_window_attention.yaml", "poolformer_s12"])
def test_config_round_trip_keeps_the_arch_id(tmp_path: Path, fmt: str, source: str) -> None:
    arch = _arch(TINY_DIR / source) if source.endswith(".yaml") else nas.zoo.get(source)
    result = export(arch, tmp_path / "out", format=fmt)
    assert result.files == (tmp_path / "out" / f"{arch.name}.{fmt}",)
    loaded = nas.Arch.load(result.files[0])
    assert loaded.id == arch.id == result.arch_id
    assert loaded == arch
    assert result.notes == () and result.max_abs_diff is None
    assert _leftovers(tmp_path / "out") == []


def test_file_stem_defaults_to_the_id_and_is_sanitised(tmp_path: Path) -> None:
    arch = _arch(POOLING).replace(name=None)
    assert export(arch, tmp_path, format="yaml").files[0].name == f"{arch.id}.yaml"
    assert export(arch, tmp_path, format="yaml", name="a/b c").files[0].name == "a_b_c.yaml"
    with pytest.raises(NasError, match="no usable character"):
        export(arch, tmp_path, format="yaml", name="//")


def test_unknown_format_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnknownKindError, match="unknown export format 'onx'; known: onnx"):
        export(_arch(POOLING), tmp_path / "out", format="onx")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(NasError, match="is not a folder"):
        export(_arch(POOLING), target, format="yaml")
    assert target.read_text() == "x"


# -- atomic writes ---------------------------------------------------------------------------------------


def test_failure_midway_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    calls = []

    def failing_json(job) -> None:
        calls.append(job.stem)
        job.path(f"{job.stem}.json").write_text("{}")
        if len(calls) == 2:
            raise NasError("second export failed")

    monkeypatch.setattr(export_module.EXPORT_FORMATS.get("json"), "write", failing_json)
    with pytest.raises(NasError, match="second export failed"):
        export_many([_arch(POOLING), _arch(ATTENTION)], out, format="json")
    assert calls == ["tiny_pooling", "tiny_attention"]
    assert sorted(path.name for path in out.iterdir()) == ["keep.txt"]

    fresh = tmp_path / "fresh"
    calls.clear()
    with pytest.raises(NasError):
        export_many([_arch(POOLING), _arch(ATTENTION)], fresh, format="json")
    assert not fresh.exists()


def test_export_many_refuses_repeated_names(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="same files: x"):
        export_many([_arch(POOLING), _arch(ATTENTION)], tmp_path / "out", format="yaml", names=["x", "x"])
    assert not (tmp_path / "out").exists()


def test_exporting_again_replaces_the_files(tmp_path: Path) -> None:
    arch = _arch(POOLING)
    export(arch, tmp_path, format="yaml", name="model")
    (tmp_path / "model.yaml").write_text("stale")
    export(arch, tmp_path, format="yaml", name="model")
    assert nas.Arch.load(tmp_path / "model.yaml").id == arch.id
    assert _leftovers(tmp_path) == []


# -- torch.export ------------------------------------------------------------------------------------------


def test_torch_program_loads_runs_and_matches(tmp_path: Path) -> None:
    arch = _arch(POOLING)
    result = export(arch, tmp_path, format="torch")
    assert [path.name for path in result.files] == ["tiny_pooling.pt2"]  # no checkpoint: no state_dict file
    assert RANDOM_INIT_NOTE in result.notes
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5
    extra = {"arch.yaml": "", "note.txt": ""}
    program = torch.export.load(result.files[0], extra_files=extra)
    assert nas.Arch.from_yaml(extra["arch.yaml"]).id == arch.id
    assert "random initialisation" in extra["note.txt"]
    images = _images(arch, 3)  # another batch size than the one traced: the batch dimension is dynamic
    with torch.no_grad():
        expected = _seeded_model(arch)(images)
        torch.testing.assert_close(program.module()(images), expected, rtol=0, atol=1e-5)


def test_torch_with_checkpoint_writes_the_weights(tmp_path: Path) -> None:
    arch = _arch(POOLING)
    trained = nas.build(arch).eval()
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    checkpoint = tmp_path / "weights.pt"
    torch.save(trained.state_dict(), checkpoint)
    result = export(arch, tmp_path / "out", format="torch", checkpoint=checkpoint)
    assert [path.name for path in result.files] == ["tiny_pooling.pt2", "tiny_pooling.state_dict.pt"]
    assert RANDOM_INIT_NOTE not in result.notes
    images = _images(arch, 2)
    with torch.no_grad():
        program = torch.export.load(result.files[0]).module()
        torch.testing.assert_close(program(images), trained(images), rtol=0, atol=1e-5)
    reloaded = nas.build(arch)
    reloaded.load_state_dict(torch.load(result.files[1], weights_only=True))


def test_checkpoint_of_another_arch_is_refused_before_writing(tmp_path: Path) -> None:
    other = nas.build(_arch(ATTENTION)).state_dict()
    with pytest.raises(NasError, match="checkpoint does not fit Arch"):
        export(_arch(POOLING), tmp_path / "out", format="torch", checkpoint=other)
    assert not (tmp_path / "out").exists()
    with pytest.raises(NasError, match="cannot read checkpoint"):
        export(_arch(POOLING), tmp_path / "out", format="torch", checkpoint=tmp_path / "missing.pt")


# -- ONNX --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [POOLING, ATTENTION], ids=["pooling", "attention"])
def test_onnx_matches_torch_in_onnxruntime(tmp_path: Path, path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    arch = _arch(path)
    result = export(arch, tmp_path, format="onnx")
    assert [file.name for file in result.files] == [f"{arch.name}.onnx"]
    assert result.max_abs_diff is not None and result.max_abs_diff <= ONNX_TOLERANCE
    session = onnxruntime.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    images = _images(arch, 3)
    (logits,) = session.run(["logits"], {"image": images.numpy()})
    with torch.no_grad():
        expected = _seeded_model(arch)(images).numpy()
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ONNX_TOLERANCE)


def _without(monkeypatch, missing: str) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None):
        if name == missing:
            raise ImportError(f"No module named {missing!r}")
        return real(name, package)

    monkeypatch.setattr(export_module.importlib, "import_module", fake)


@pytest.mark.parametrize(("fmt", "missing", "hint"), [("onnx", "onnxruntime", 'pip install "nas[onnx]"'),
                                                       ("coreml", "coremltools", 'pip install "nas[coreml]"')])
def test_missing_optional_package_gives_the_install_hint(tmp_path: Path, monkeypatch, fmt: str, missing: str,
                                                         hint: str) -> None:
    _without(monkeypatch, missing)
    with pytest.raises(NasError, match=f"optional package '{missing}'") as caught:
        export(_arch(POOLING), tmp_path / "out", format=fmt)
    assert hint in str(caught.value)
    assert not (tmp_path / "out").exists()


# -- CoreML ------------------------------------------------------------------------------------------------


def test_coreml_writes_an_mlpackage(tmp_path: Path) -> None:
    pytest.importorskip("coremltools")
    result = export(_arch(POOLING), tmp_path, format="coreml")
    package = result.files[0]
    assert package.name == "tiny_pooling.mlpackage" and package.is_dir()
    assert (package / "Manifest.json").is_file()
    assert any("needs macOS" in note for note in result.notes)
    assert _leftovers(tmp_path) == []


# -- the command -------------------------------------------------------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_exports_an_arch_file(capsys, tmp_path: Path) -> None:
    status, out, err = run_cli(capsys, "export", str(POOLING), "--format", "yaml", "--out", str(tmp_path))
    assert status == 0, err
    assert nas.Arch.load(tmp_path / "tiny_pooling.yaml").id == _arch(POOLING).id
    assert str(tmp_path / "tiny_pooling.yaml") in out


def test_cli_exports_a_zoo_model_as_json(capsys, tmp_path: Path) -> None:
    status, out, _ = run_cli(capsys, "export", "poolformer_s12", "--format", "json", "--out", str(tmp_path),
                             "--json")
    assert status == 0
    (result,) = json.loads(out)
    assert result["arch_id"] == nas.zoo.get("poolformer_s12").id
    assert Path(result["files"][0]).name == "poolformer_s12.json"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--format", "onx"], "unknown export format 'onx'"),
        (["--format", "yaml", "--top", "2"], "--top applies to a run directory"),
    ],
)
def test_cli_bad_input_one_line_status_2_nothing_written(capsys, tmp_path: Path, argv: list[str],
                                                         expected: str) -> None:
    out = tmp_path / "out"
    status, stdout, err = run_cli(capsys, "export", str(POOLING), *argv, "--out", str(out))
    assert status == 2 and stdout == ""
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_unknown_run_or_arch(capsys, tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "export", str(tmp_path / "no-such-run"), "--format", "yaml")
    assert status == 2 and "no such run directory" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli(capsys, "export", "poolformer_s13", "--format", "yaml", "--out", str(tmp_path / "o"))
    assert status == 2 and "unknown zoo model" in err
    assert not (tmp_path / "o").exists()
