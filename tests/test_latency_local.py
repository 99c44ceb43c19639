"""The local target: `nas profile --target local` measures, fits, validates and writes a target that predicts."""

from __future__ import annotations

import importlib.util
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas.cli import main
from nas.errors import NasError, UnknownKindError
from nas.latency import get_target, list_targets, predict
from nas.latency.local import ProfileOptions, profile_local
from nas.latency.measure import Protocol, Timing
from nas.latency.targets import local_target_path
from tests.conftest import ROOT, TINY_DIR

TINY = ("mixer_pooling", "mixer_convnext", "mixer_attention", "mixer_mbconv", "stem_conv", "mixer_lka",
        "mixer_window_attention", "stem_patch")
PEAKS = {"gemm_tflops": 0.1, "copy_gbs": 10.0}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def archs() -> tuple[list[nas.Arch], list[nas.Arch]]:
    loaded = [nas.Arch.load(TINY_DIR / f"{name}.yaml") for name in TINY]
    return loaded[:4], loaded[4:]


def _fake_timing(arch: nas.Arch) -> Timing:
    """A latency that depends on the model's work and on its id only (no clock)."""
    report = nas.profile(arch)
    jitter = 1.0 + (zlib.crc32(arch.id.encode()) % 100) / 1000
    ms = (0.3 + report.macs / 2e8 + len(report.ops) * 0.004) * jitter
    return Timing((ms, ms * 1.01, ms * 0.99), (ms, ms, ms), 0.5, 0.5)


def _fake(chunk: Sequence[nas.Arch], protocol: Protocol) -> list[Timing]:
    return [_fake_timing(arch) for arch in chunk]


def test_missing_local_target_says_how_to_make_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "local" not in list_targets()
    with pytest.raises(UnknownKindError, match=r"nas profile --target local"):
        get_target("local")
    assert main(["predict", "poolformer_s12", "--target", "local"]) == 2
    assert "run `nas profile --target local`" in capsys.readouterr().err


def test_tiny_profile_writes_a_loadable_target_that_predicts(home: Path, archs) -> None:
    fit, held = archs
    options = ProfileOptions(protocol=Protocol(warmup=1, repeats=2, chunk=4), resume=False)
    result = profile_local(options, archs=(fit, held))
    assert result.path == local_target_path() == home / "predictors" / "local.yaml"
    assert "local" in list_targets()
    target = get_target("local")
    setting = target.setting()
    assert setting.name == result.setting == "torch_fp32_1t"
    measurement = setting.measurement
    assert measurement["machine"]["cpu_model"] and measurement["versions"]["torch"] == str(torch.__version__)
    assert measurement["protocol"]["threads"] == 1 and measurement["protocol"]["runtime"] == "torch"
    assert measurement["peaks"]["gemm_tflops"] > 0 and measurement["timed_now"] == len(fit) + len(held)
    validation = setting.validation
    assert validation["held_out"]["rows"] == len(held) and validation["fit_rows"] == len(fit)
    # `--target local` predicts, and what it predicts for a held-out model is what the profile stored.
    stored = {row[0]: row[3] for row in validation["predictions"]}
    for arch in held:
        assert predict(arch, target="local").latency_ms == pytest.approx(stored[arch.id], rel=1e-5)
    assert set(stored) == {arch.id for arch in held}


def test_fit_is_deterministic_given_fixed_measurements(home: Path, archs) -> None:
    options = ProfileOptions(resume=False)
    first = profile_local(options, archs=archs, measurer=_fake, peaks=PEAKS)
    text = first.path.read_text()
    second = profile_local(options, archs=archs, measurer=_fake, peaks=PEAKS)
    assert second.fit == first.fit and second.held_out == first.held_out and second.xeon == first.xeon
    coefficients = get_target("local").setting().coefficients
    assert coefficients is not None and coefficients != get_target("local").setting().priors
    strip = [line for line in text.splitlines() if "wall_s" not in line and "load_1min" not in line]
    again = [line for line in second.path.read_text().splitlines() if "wall_s" not in line and "load_1min" not in line]
    assert strip == again
    assert set(first.xeon) and all(-1 <= row["spearman_rho"] <= 1 and row["scale"] > 0 for row in first.xeon.values())


def test_a_killed_profile_resumes_from_its_cached_timings(home: Path, archs) -> None:
    options = ProfileOptions(protocol=Protocol(chunk=2))
    calls: list[int] = []

    def dies_after_one_chunk(chunk: Sequence[nas.Arch], protocol: Protocol) -> list[Timing]:
        if calls:
            raise KeyboardInterrupt
        calls.append(len(chunk))
        return _fake(chunk, protocol)

    with pytest.raises(KeyboardInterrupt):
        profile_local(options, archs=archs, measurer=dies_after_one_chunk, peaks=PEAKS)
    assert not local_target_path().exists()
    timed: list[str] = []

    def counting(chunk: Sequence[nas.Arch], protocol: Protocol) -> list[Timing]:
        timed.extend(arch.id for arch in chunk)
        return _fake(chunk, protocol)

    result = profile_local(options, archs=archs, measurer=counting, peaks=PEAKS)
    fit, held = archs
    everything = [*fit, *held]
    assert options.protocol.passes == 2 and len(timed) == 2 * len(everything) - 2, "the first chunk's pass was kept"
    assert [timed.count(arch.id) for arch in everything] == [1, 1] + [2] * (len(everything) - 2)
    assert result.measured == len(everything), "every model was timed now, the first two in their second pass"


def test_passes_time_every_model_before_timing_any_again_and_say_how_far_they_agree(home: Path, archs) -> None:
    order: list[str] = []
    slow = {archs[1][0].id}  # one model's second pass runs 30% slower than its first

    def measurer(chunk: Sequence[nas.Arch], protocol: Protocol) -> list[Timing]:
        out = []
        for arch in chunk:
            timing = _fake_timing(arch)
            if arch.id in slow and arch.id in order:
                timing = Timing(tuple(ms * 1.3 for ms in timing.samples_ms), timing.wall_ms, 0.5, 0.5)
            order.append(arch.id)
            out.append(timing)
        return out

    everything = [*archs[0], *archs[1]]
    result = profile_local(ProfileOptions(protocol=Protocol(chunk=3, passes=2)), archs=archs, measurer=measurer,
                           peaks=PEAKS)
    assert order == [arch.id for arch in everything] * 2
    assert result.passes_agree_pct == pytest.approx(100.0 * (len(everything) - 1) / len(everything))
    single = profile_local(ProfileOptions(protocol=Protocol(passes=1), resume=False), archs=archs,
                           measurer=_fake, peaks=PEAKS)
    assert single.passes_agree_pct is None


def test_profile_rejects_overlapping_sets_and_bad_options(home: Path, archs) -> None:
    fit, held = archs
    with pytest.raises(NasError, match="must not be fitted"):
        profile_local(archs=(fit, [fit[0], *held]), measurer=_fake, peaks=PEAKS)
    with pytest.raises(NasError, match="threads"):
        Protocol(threads=2, clock="cpu")
    with pytest.raises(NasError, match="runtime"):
        Protocol(runtime="tvm")
    assert not local_target_path().exists()


def test_cli_targets_lists_local_with_its_held_out_figures(home: Path, archs, capsys) -> None:
    profile_local(ProfileOptions(resume=False), archs=archs, measurer=_fake, peaks=PEAKS)
    assert main(["targets", "--json"]) == 0
    rows = {row["target"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["local"]["validation"]["held_out"]["rows"] == len(archs[1])
    assert main(["predict", str(TINY_DIR / "mixer_pooling.yaml"), "--target", "local"]) == 0
    assert "held out 4 models never fitted" in capsys.readouterr().out


def test_predictors_bench_validates_only_calibrated_targets_once_local_exists(home: Path, archs, capsys) -> None:
    """`local` has no published rows: listing it made the bench's leave-one-family-out pass crash."""
    spec = importlib.util.spec_from_file_location("bench_predictors", ROOT / "bench" / "predictors.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    profile_local(ProfileOptions(resume=False), archs=archs, measurer=_fake, peaks=PEAKS)
    assert "local" in list_targets()
    assert "local" not in bench.calibrated_targets()
    assert set(bench.calibrated_targets()) == {"iphone12", "v100", "xeon", "zcu104"}
    with pytest.raises(SystemExit) as raised:
        bench.main(["--targets", "local", "--skip-validation"])
    assert raised.value.code == 2
    assert "--local profiles this machine" in capsys.readouterr().err


def test_the_profile_draws_float_models_from_a_space_with_precision_choices() -> None:
    """metaformer offers fp16 and int8 blocks; eager torch would time their fake quantisation and the local target
    cannot price them, so the draw is float32 (the onnxruntime profile makes its mixed models from these)."""
    from nas.latency.local import sample_archs
    from nas.space import load_space

    space = load_space("metaformer")
    rng = np.random.default_rng(0)
    assert any(not block.precision.formats("block")[0].is_float32 for _ in range(20)
               for stage in space.sample(rng).stages for block in stage.blocks), "the space offers other precisions"
    drawn = sample_archs("metaformer", 12, 128, seed=0)
    assert len({arch.id for arch in drawn}) == 12
    assert all(block.precision == nas.Precision() for arch in drawn for stage in arch.stages for block in stage.blocks)
