"""The local onnxruntime setting's int8 rates: mixed-precision models sampled, fitted and validated by
`nas profile --runtime onnxruntime`, with timings injected (no clock), and float predictions unchanged."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

import nas
from nas.errors import NasError
from nas.latency import get_target, measure, predict
from nas.latency.local import MIXED_HELD_OUT_DEFAULT, ProfileOptions, profile_local
from nas.latency.local_int8 import MIXED_PRECISION, mixed_archs, within_pct
from nas.latency.measure import Protocol, Timing
from nas.qdq import export_qdq, int8_kernels
from tests.conftest import TINY_DIR

FLOAT = ("mixer_pooling", "mixer_convnext", "mixer_attention", "mixer_mbconv", "stem_conv", "mixer_lka",
         "mixer_window_attention", "stem_patch")
PEAKS = {"gemm_tflops": 0.1, "copy_gbs": 10.0}
ORT = Protocol(runtime="onnxruntime", warmup=1, repeats=2, chunk=4)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NAS_HOME", str(tmp_path))
    return tmp_path


def _archs() -> list[nas.Arch]:
    return [nas.Arch.load(TINY_DIR / f"{name}.yaml") for name in FLOAT]


def _fake_timing(arch: nas.Arch) -> Timing:
    """A latency from the model's work: int8 MACs at a third of the fp32 cost, a little id-dependent jitter."""
    report = nas.profile(arch)
    macs = sum(op.flops for op in report.ops if op.op_class in ("conv", "linear", "matmul")) / 2
    int8 = sum(op.flops for op in report.ops if op.op_class in ("conv", "linear", "matmul")
               and op.precision == "int8") / 2
    jitter = 1.0 + (zlib.crc32(arch.id.encode()) % 50) / 1000
    ms = (0.3 + (macs - int8) / 2e8 + int8 / 6e8 + len(report.ops) * 0.004) * jitter
    return Timing((ms, ms * 1.01), (ms, ms), 0.5, 0.5)


def _fake(chunk: Sequence[nas.Arch], protocol: Protocol) -> list[Timing]:
    return [_fake_timing(arch) for arch in chunk]


def test_mixed_archs_make_some_blocks_int8_and_keep_some_fp32() -> None:
    made = mixed_archs(_archs(), seed=3)
    assert made == mixed_archs(_archs(), seed=3)  # deterministic
    for plain, mixed in zip(_archs(), made, strict=True):
        precisions = [block.precision for stage in mixed.stages for block in stage.blocks]
        assert MIXED_PRECISION in precisions
        if len(precisions) > 1:
            assert nas.arch.Precision() in precisions
        assert mixed.id != plain.id and mixed.with_precision(nas.arch.Precision()).id == plain.id


def test_profile_fits_an_int8_processor_on_mixed_models_and_leaves_float_predictions_alone(home: Path) -> None:
    floats = _archs()
    fit, held = floats[:5], floats[5:]
    options = ProfileOptions(protocol=ORT, resume=False)
    float_only = profile_local(options, archs=(fit, held), measurer=_fake, peaks=PEAKS)
    assert float_only.mixed is None
    before = [predict(arch, target="local").latency_ms for arch in floats]
    float_only_coefficients = get_target("local").setting(float_only.setting).coefficients

    made = mixed_archs(floats, seed=0)
    result = profile_local(options, archs=(fit, held), mixed=(made[:5], made[5:]), measurer=_fake, peaks=PEAKS)
    assert [predict(arch, target="local").latency_ms for arch in floats] == pytest.approx(before, rel=1e-9)
    setting = get_target("local").setting(result.setting)
    assert setting.device.runs("int8") == "fallback" and setting.fallback.precision == "int8"
    fitted, priors = setting.coefficients, setting.priors
    assert fitted.get("switch_us") != priors.get("switch_us")  # the int8 processor was fitted ...
    assert fitted.get("compute_efficiency.conv") == float_only_coefficients.get("compute_efficiency.conv")  # ... alone
    report = setting.validation["mixed_precision"]
    assert report["rows"] == 3 and report["fit_rows"] == 5
    stored = {row[0]: row[3] for row in report["predictions"]}
    measured = {row[0]: row[2] for row in report["predictions"]}
    for arch in made[5:]:  # what `--target local` predicts for a held-out model is what the profile stored
        assert predict(arch, target="local").latency_ms == pytest.approx(stored[arch.id], rel=1e-5)
    assert result.mixed["within_15_pct"] == pytest.approx(within_pct(list(measured.values()),
                                                                     list(stored.values())), abs=0.01)


def test_mixed_counts_default_by_runtime_and_are_refused_with_torch() -> None:
    assert ProfileOptions().mixed_fit_archs == 0
    assert ProfileOptions(protocol=ORT).mixed_held_out_archs == MIXED_HELD_OUT_DEFAULT >= 20
    with pytest.raises(NasError, match="mixed_fit_archs: mixed-precision models are timed with the onnxruntime"):
        ProfileOptions(mixed_fit_archs=4, mixed_held_out_archs=4)
    with pytest.raises(NasError, match="mixed_held_out_archs must be 0 or an int >= 3, got 2"):
        ProfileOptions(protocol=ORT, mixed_held_out_archs=2)
    with pytest.raises(NasError, match="both 0 or both set"):
        ProfileOptions(protocol=ORT, mixed_fit_archs=0)


def test_the_onnxruntime_runner_runs_a_mixed_precision_model_as_its_int8_qdq_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    exported = []

    def recording(*args: object, **kwargs: object) -> object:
        exported.append(export_qdq(*args, **kwargs))
        return exported[-1]

    monkeypatch.setattr(measure, "export_qdq", recording)
    arch = mixed_archs([nas.Arch.load(TINY_DIR / "mixer_convnext.yaml")], seed=1)[0]
    (logits,) = measure.prepare(arch, ORT)()
    assert logits.shape == (1, arch.head.num_classes)
    assert len(exported) == 1 and sum(int8_kernels(exported[0].data).values()) > 0
