"""``nas profile --target local``: measure this machine, fit its predictor, validate it on held-out models.

The job, in order:

1. **Facts.** :func:`nas.latency.machine.machine_facts` (CPU, cores, caches,
   clock, SIMD width) and :func:`~nas.latency.machine.measure_peaks` (GEMM rate
   and copy bandwidth with the threads used) become the ``local`` target's
   device, each fact with "lscpu" or "measured here" as its source.
2. **Models.** ``fit_archs + held_out_archs`` random points of a space
   (``metaformer``) drawn with ``seed``, each moved to the valid resolution
   nearest ``resolution`` (a modest one, so the profile takes minutes); the
   first ``fit_archs`` are fitted, the rest are held out and never seen by the fit.
3. **Measure** every model end to end (:mod:`nas.latency.measure`: batch 1,
   fixed threads, warm-up, minimum of interleaved repeats), in passes over the
   whole list, cached so that a killed profile resumes where it stopped
   (:mod:`nas.latency.profile_timings`); how often the passes agree is reported
   beside step 5's figures, as the measurement's own repeatability.
4. **Fit** the same per-op model as the packaged targets
   (:func:`nas.latency.calibration.solver.fit_features`) to the fit models' measurements, with
   this runtime's fusion rules and priors relative to the measured peaks.
5. **Validate** on the held-out models: Spearman rho, MAPE, within +-10% / +-20%
   (acceptance: 90% within +-10%; goal 99%), and compare the packaged ``xeon``
   predictor's settings with the same live measurements (rho, and MAPE after one
   best-fit scale factor, since the Xeons measured differ from this one).
   With ``--runtime onnxruntime`` the profile also times mixed-precision models
   (int8 and fp32 blocks, run as int8 QDQ models) and fits the setting's int8
   processor to some of them, validating on the others
   (:mod:`nas.latency.local_int8`; acceptance: 90% within +-15%).
6. **Write** the setting into ``local.yaml`` (:func:`nas.latency.targets.local_target_path`)
   atomically, with the machine, versions, protocol, load and figures; other
   settings of the file (another runtime or thread count on the same CPU) are kept.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch, Precision
from nas.atomic import write_atomic
from nas.cost import profile
from nas.errors import ConfigError, NasError
from nas.latency.calibration.solver import fit_features
from nas.latency.calibration.validate import Figures, figures
from nas.latency.local_int8 import ACCEPTANCE_BAND, fit_int8, int8_processor, mixed_archs, predict_ms, within_pct
from nas.latency.measure import Protocol
from nas.latency.opmodel import Features, compress, concat, evaluate, features, params_of
from nas.latency.optable import build_table
from nas.latency.profile_timings import (
    Measurer,
    cache_header,
    default_measurer,
    joined,
    load_summary,
    measure_passes,
    noise,
)
from nas.latency.targets import LOCAL, Setting, get_target, local_target_path, parse_target, user_dir
from nas.yamlio import dump_yaml, load_yaml

__all__ = ["ProfileOptions", "ProfileResult", "Measurer", "setting_name", "sample_archs", "profile_local",
           "fit_local", "compare_xeon", "cache_path"]

_RESOLUTIONS = tuple(range(64, 513, 8))
MIXED_FIT_DEFAULT = 40
"""Mixed-precision models a profile with the onnxruntime runtime fits the int8 processor on (about 20 coefficients:
half as many models overfitted them in bench/local_int8.py)."""
MIXED_HELD_OUT_DEFAULT = 20
"""Further mixed-precision models it validates on (the acceptance counts at least 20)."""

# Fusion a runtime applies when it builds the model: none in eager PyTorch (every aten op runs on its own);
# onnxruntime folds batch norm into convolutions and fuses activations and residual adds into the producer
# (the same rules as the packaged xeon/onnxruntime_fp32 setting).
_ORT_FUSION = {**{kind: ["batchnorm", "act", "act_special", "elementwise"] for kind in ("conv", "pwconv", "dwconv",
                                                                                       "gconv")},
               "matmul": ["act", "act_special", "elementwise"], "batchnorm": ["act", "elementwise"],
               "elementwise": ["act"]}
_FUSION = {"torch": {}, "onnxruntime": _ORT_FUSION}
# Whether the runtime runs F.scaled_dot_product_attention as one kernel (nas.latency.fused_attention): eager PyTorch
# does on a CPU (its flash kernel for 4-D inputs). onnxruntime is left off: the export writes the math path's
# MatMul, Softmax, MatMul, and nothing here shows its graph optimisations fuse that pattern into one kernel.
_FUSED_ATTENTION = {"torch": True, "onnxruntime": False}
# Per-op issue cost (us) before fitting: eager PyTorch dispatches every op through Python and the aten
# dispatcher; onnxruntime runs a prebuilt graph.
_LAUNCH_US = {"torch": {"conv": 10.0, "matmul": 6.0, "vector": 4.0, "movement": 4.0},
              "onnxruntime": {"conv": 3.0, "matmul": 2.0, "vector": 1.0, "movement": 1.0}}
_FIXED_MS = {"torch": 0.05, "onnxruntime": 0.02}
_SWITCH_US = {"onnxruntime": 2.0}  # prior cost of a switch between fp32 and int8 ops (the profile fits it)
# Op classes a runtime cannot run, whose models a profile leaves out of its draw: the TorchScript ONNX exporter
# (opset 17) has no symbolic for aten::fft_rfft2 (SpectFormer's global filter).
_CANNOT_RUN = {"torch": frozenset(), "onnxruntime": frozenset({"fft"})}
_FREE = ["compute_efficiency.*", "memory_efficiency.*", "launch_us.*", "saturation_parallelism", "fixed_ms"]
# Weak pull to the priors: a profile has many rows and the priors are guesses (a stronger pull, such as 0.1, put
# far fewer of the held-out models within +-10%).
_PRIOR_WEIGHT = 0.003


@dataclass(frozen=True)
class ProfileOptions:
    """What ``nas profile`` measures.

    Attributes:
        protocol: runtime, threads, warm-up, repeats, chunk size.
        fit_archs: random Archs the predictor is fitted on.
        held_out_archs: further random Archs it is validated on (never fitted).
        resolution: the input resolution the Archs are moved to (the nearest valid one, per Arch).
        space: the space the Archs are drawn from.
        seed: seed of the draw.
        mixed_fit_archs: further random Archs, made mixed-precision (int8 and fp32 blocks), the setting's int8
            processor is fitted on; ``None``: :data:`MIXED_FIT_DEFAULT` with the onnxruntime runtime, 0 with torch
            (eager torch computes fake quantisation in float: there is no int8 execution to time).
        mixed_held_out_archs: further mixed-precision Archs the int8 processor is validated on; ``None``:
            :data:`MIXED_HELD_OUT_DEFAULT` with the onnxruntime runtime, 0 with torch.
        resume: reuse timings cached by an earlier (e.g. killed) profile with the same machine and protocol
            (the timings of this one are cached either way).
    """

    protocol: Protocol = field(default_factory=Protocol)
    fit_archs: int = 60
    held_out_archs: int = 60
    resolution: int = 128
    space: str = "metaformer"
    seed: int = 0
    resume: bool = True
    mixed_fit_archs: int | None = None
    mixed_held_out_archs: int | None = None

    def __post_init__(self) -> None:
        for name, low in (("fit_archs", 2), ("held_out_archs", 3), ("resolution", 32)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise NasError(f"{name} must be an int >= {low}, got {value!r}")
        onnxruntime = self.protocol.runtime == "onnxruntime"
        for name, low, default in (("mixed_fit_archs", 2, MIXED_FIT_DEFAULT),
                                   ("mixed_held_out_archs", 3, MIXED_HELD_OUT_DEFAULT)):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, default if onnxruntime else 0)
            elif isinstance(value, bool) or not isinstance(value, int) or (value != 0 and value < low):
                raise NasError(f"{name} must be 0 or an int >= {low}, got {value!r}")
            elif value and not onnxruntime:
                raise NasError(f"{name}: mixed-precision models are timed with the onnxruntime runtime only (eager "
                               f"torch computes fake quantisation in float), got {value} with runtime "
                               f"{self.protocol.runtime!r}")
        if (self.mixed_fit_archs == 0) != (self.mixed_held_out_archs == 0):
            raise NasError(f"mixed_fit_archs and mixed_held_out_archs are both 0 or both set, got "
                           f"{self.mixed_fit_archs} and {self.mixed_held_out_archs}")


@dataclass(frozen=True)
class ProfileResult:
    """What a profile produced.

    Attributes:
        path: the local target file written.
        setting: the setting written, e.g. ``torch_fp32_1t``.
        fit: in-sample figures over the fit models.
        held_out: figures over the held-out models.
        xeon: per xeon setting, its figures against the held-out measurements (see :func:`compare_xeon`).
        wall_s: seconds the profile took.
        measured: models timed now (the rest came from the cache).
        load: 1-minute load average: min, median, max over the chunks.
        mixed: for the mixed-precision models (onnxruntime), the figures of the int8 processor's fit
            (``fit_rows``, ``in_sample``) and of the held-out models (``held_out``, ``within_15_pct``); ``None``
            when none were timed.
        passes_agree_pct: the share of models (%) whose timing passes agree within +-10% (near 100
            on a quiet machine; well below, noise alone moves models out of the +-10% band); ``None`` with one pass.
    """

    path: Path
    setting: str
    fit: Figures
    held_out: Figures
    xeon: dict[str, dict[str, Any]]
    wall_s: float
    measured: int
    load: dict[str, float]
    mixed: dict[str, Any] | None = None
    passes_agree_pct: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "setting": self.setting, "fit": self.fit.to_dict(),
                "held_out": self.held_out.to_dict(), "xeon": self.xeon, "wall_s": round(self.wall_s, 1),
                "measured": self.measured, "load": self.load, "mixed": self.mixed,
                "passes_agree_pct": self.passes_agree_pct}


def setting_name(protocol: Protocol) -> str:
    """The local setting a protocol measures, e.g. ``torch_fp32_1t``."""
    return f"{protocol.runtime}_fp32_{protocol.threads}t"


def cache_path(protocol: Protocol) -> Path:
    """Where the timings of a profile with ``protocol`` are cached."""
    return user_dir() / "profile" / f"{setting_name(protocol)}.json"


# -- models ----------------------------------------------------------------------------------


def _at_modest_resolution(arch: Arch, resolution: int) -> Arch:
    """``arch`` at the valid resolution nearest ``resolution`` (windows must divide the feature maps)."""
    for candidate in sorted(_RESOLUTIONS, key=lambda value: (abs(value - resolution), value)):
        try:
            return arch.with_resolution(candidate)
        except ConfigError:
            continue
    return arch


def sample_archs(space: str, count: int, resolution: int, seed: int, *,
                 skip_op_classes: frozenset[str] = frozenset()) -> list[Arch]:
    """``count`` distinct random float32 Archs of ``space``, each at the valid resolution nearest ``resolution``,
    leaving out those with an op of ``skip_op_classes`` (ones the runtime cannot run).

    A space with precision choices draws them too; they are set to float32 here, since the profile times the
    float kernels (eager torch would time fake quantisation, not low-precision execution) and makes its
    mixed-precision models from float ones (:func:`nas.latency.local_int8.mixed_archs`)."""
    from nas.space import load_space

    loaded = load_space(space)
    rng = np.random.default_rng(seed)
    out: dict[str, Arch] = {}
    for _ in range(count * 20):
        arch = _at_modest_resolution(loaded.sample(rng), resolution).with_precision(Precision())
        if skip_op_classes and any(op.op_class in skip_op_classes for op in profile(arch, batch=1).ops):
            continue
        out.setdefault(arch.id, arch)
        if len(out) == count:
            return list(out.values())
    raise NasError(f"space {space!r}: could not draw {count} distinct architectures")


# -- measuring -------------------------------------------------------------------------------


# -- fitting ---------------------------------------------------------------------------------


def _arch_features(setting: Setting, arch: Arch) -> Features:
    """The features :func:`nas.latency.predict` prices ``arch`` with (batch 1)."""
    table = build_table(profile(arch, batch=1).ops, setting, by_unit=True)
    spec = arch.input
    return compress(features(table, setting, input_bytes=4.0 * spec.channels * spec.resolution ** 2))


def fit_local(setting: Setting, fit_archs: Sequence[Arch], fit_ms: Sequence[float], held_archs: Sequence[Arch],
              held_ms: Sequence[float]) -> tuple[Any, Figures, Figures, np.ndarray]:
    """Fit ``setting`` to the fit Archs' latencies and predict the held-out ones (deterministic).

    Returns:
        ``(coefficients, in-sample figures, held-out figures, held-out predictions in ms)``.
    """
    fit_feats = concat([_arch_features(setting, arch) for arch in fit_archs])
    coefficients = fit_features(setting, fit_feats, np.asarray(fit_ms) * 1e-3, ["measured here"] * len(fit_archs))
    params = params_of(coefficients)
    in_sample = evaluate(fit_feats, params) * 1e3
    held = evaluate(concat([_arch_features(setting, arch) for arch in held_archs]), params) * 1e3
    return coefficients, figures(fit_ms, in_sample), figures(held_ms, held), held


def compare_xeon(archs: Sequence[Arch], measured_ms: Sequence[float]) -> dict[str, dict[str, Any]]:
    """How each fp32 setting of the packaged ``xeon`` target ranks and scales against live measurements.

    Per setting: Spearman rho and MAPE as predicted, then the single scale factor that best maps its
    predictions onto the measurements (the geometric mean of measured / predicted: least squares in log
    space) and the MAPE and within +-10% / +-20% after it. The measured Xeons differ from this machine
    (cores, threads, runtime), so rho and the scaled figures are the meaningful ones.
    """
    from nas.latency.predict import predict_many

    measured = np.asarray(measured_ms, dtype=np.float64)
    out = {}
    xeon = get_target("xeon")
    for name, setting in xeon.settings.items():
        if setting.precision != "fp32":
            continue
        predicted = predict_many(list(archs), target=xeon, setting=name)
        scale = float(np.exp(np.mean(np.log(measured / predicted))))
        raw = figures(measured, predicted)
        scaled = figures(measured, predicted * scale)
        out[name] = {"spearman_rho": scaled.to_dict()["spearman_rho"], "mape_pct": round(raw.mape_pct, 2),
                     "scale": round(scale, 4), "scaled_mape_pct": round(scaled.mape_pct, 2),
                     "scaled_within_10_pct": round(scaled.within_10_pct, 2),
                     "scaled_within_20_pct": round(scaled.within_20_pct, 2)}
    return out


# -- the target document -----------------------------------------------------------------------


def _peak_tops(peaks: dict[str, float]) -> dict[str, float]:
    """The device's peaks: fp32 from the GEMM measured here, and int8 where a measured int8 GEMM rate is given
    (``int8_gemm_tops``, e.g. timed through onnxruntime's int8 kernels). Without it, an int8 op cannot be
    priced on this target (:meth:`nas.latency.targets.Device.runs`): nothing here is assumed about int8."""
    out = {"fp32": float(f"{peaks['gemm_tflops']:.6g}")}
    if "int8_gemm_tops" in peaks:
        out["int8"] = float(f"{peaks['int8_gemm_tops']:.6g}")
    return out


def _device(machine: Any, peaks: dict[str, float], threads: int, clock: str) -> dict[str, Any]:
    caches = ", ".join(f"{level} {size}" for level, size in machine.caches.items())
    cores = (f"{machine.cores or '?'} cores, {machine.threads_per_core or '?'} thread(s) per core, "
             f"{machine.logical_cpus} logical CPUs; {threads} thread(s) used; {caches}")
    device: dict[str, Any] = {
        "title": f"{machine.cpu_model}, {threads} thread(s)", "kind": "cpu",
        "peak_tops": _peak_tops(peaks),
        "memory_bandwidth_gbs": float(f"{peaks['copy_gbs']:.6g}"),
        "cores": cores, "channel_tile": machine.simd_lanes,
        "sources": [
            f"lscpu / /proc/cpuinfo: {machine.cpu_model}; {cores}"
            + (f"; hypervisor {machine.hypervisor}" if machine.hypervisor else ""),
            f"measured here: torch.mm 1024 x 1024 fp32 with {threads} thread(s), best of 5 ({clock} clock): "
            f"{peaks['gemm_tflops'] * 1e3:.1f} GFLOPS (peak_tops: efficiencies are relative to a large GEMM)",
            f"measured here: Tensor.copy_ of 64 MB with {threads} thread(s), best of 5 ({clock} clock), read + "
            f"written bytes: "
            f"{peaks['copy_gbs']:.1f} GB/s (memory_bandwidth_gbs)",
            f"channel_tile {machine.simd_lanes}: float32 lanes of the widest SIMD unit in the CPU flags"],
    }
    if machine.l3_mb is not None:
        device["cache_mb"] = machine.l3_mb
    if machine.clock_ghz is not None:
        device["clock_ghz"] = machine.clock_ghz
    return device


def _priors(runtime: str, threads: int) -> dict[str, Any]:
    return {"compute_efficiency": {"conv": 0.6, "pwconv": 0.7, "dwconv": 0.1, "gconv": 0.2, "matmul": 0.8,
                                   "bmm": 0.4, "vector": 0.3, "special": 0.05},
            "memory_efficiency": dict.fromkeys(("conv", "pwconv", "dwconv", "gconv", "matmul", "bmm", "vector",
                                                "special"), 1.0),
            "launch_us": dict(_LAUNCH_US[runtime]), "kernel_us": 0.1,
            "saturation_parallelism": 64.0 * threads, "fixed_ms": _FIXED_MS[runtime], "input_ms_per_mb": 0.01}


def _setting_entry(protocol: Protocol, device_key: str, cpu_model: str, versions: dict[str, str]) -> dict[str, Any]:
    runtime = protocol.runtime
    version = versions["torch"] if runtime == "torch" else versions.get("onnxruntime", "?")
    title = {"torch": f"PyTorch {version} eager", "onnxruntime": f"ONNX Runtime {version} (CPU execution provider)"}
    return {
        "title": f"{title[runtime]}, FP32, batch 1, {protocol.threads} thread(s), measured here by nas profile",
        "device": device_key,
        "runtime": {"torch": f"torch {version}, eager, torch.inference_mode",
                    "onnxruntime": f"onnxruntime {version}, CPUExecutionProvider, ORT_ENABLE_ALL, model exported "
                                   f"with torch.onnx.export (TorchScript exporter, opset 17)"}[runtime],
        "precision": "fp32", "batch_sizes": [1],
        "calibration": {"device": cpu_model, "runtime": runtime, "precision": "fp32", "threads": protocol.threads},
        "notes": ("Fitted and validated on random architectures measured end to end on this machine "
                  "(see measurement and validation)."),
        "fusion": _FUSION[runtime], "fused_attention": _FUSED_ATTENTION[runtime], "unsupported": [],
        "fit": {"free": list(_FREE), "prior_weight": _PRIOR_WEIGHT},
        "priors": _priors(runtime, protocol.threads),
    }


def _existing(path: Path, cpu_model: str) -> dict[str, Any] | None:
    """The current local target document if it describes the same CPU (else it is replaced)."""
    if not path.is_file():
        return None
    try:
        document = json.loads(json.dumps(load_yaml(path)))
        parse_target(document, path)
    except (NasError, ValueError):
        return None
    settings = document.get("settings", {})
    same = all((entry.get("calibration") or {}).get("device") == cpu_model for entry in settings.values())
    return document if same else None


def _document(path: Path, cpu_model: str, device_key: str, device: dict[str, Any], name: str,
              entry: dict[str, Any]) -> dict[str, Any]:
    document = _existing(path, cpu_model) or {"devices": {}, "settings": {}}
    devices = {**document["devices"], device_key: device}
    settings = {**document["settings"], name: entry}
    return {"schema": 1, "name": LOCAL, "title": f"This machine: {cpu_model}",
            "description": ("Measured on this machine by `nas profile --target local`: device facts from lscpu and "
                            "measured peaks, each setting fitted to random architectures timed here and validated "
                            "on others never fitted."),
            "default_setting": name, "devices": devices, "settings": settings}  # the runtime just profiled


def _add_int8_processor(document: dict[str, Any], device_key: str, entry: dict[str, Any], protocol: Protocol) -> None:
    """Give the setting its int8 processor (:mod:`nas.latency.local_int8`): a fallback device that the main device
    sends int8 ops to, with priors like the main processor's."""
    device = document["devices"][device_key]
    int8_key = f"{device_key}_int8"
    document["devices"][int8_key] = int8_processor(device, device["peak_tops"]["fp32"])
    device["formats"] = {"int8": "fallback"}
    entry["fallback"] = {"device": int8_key, "kinds": [], "precision": "int8",
                         "notes": ("int8 ops (the layers of int8 blocks and the float ops between their quantise and "
                                   "dequantise nodes) priced as a processor of their own; a switch is a quantise or "
                                   "dequantise pass at an int8 region's edge")}
    priors = entry["priors"]
    priors["host"] = {key: priors[key] for key in ("compute_efficiency", "memory_efficiency", "launch_us", "kernel_us",
                                                   "saturation_parallelism")}
    priors["switch_us"] = _SWITCH_US[protocol.runtime]


def _mixed_validation(setting: Setting, coefficients: Any, fitted: tuple[Sequence[Arch], Sequence[float]],
                      held: tuple[Sequence[Arch], Sequence[float]]) -> dict[str, Any]:
    """The mixed-precision figures: in-sample over the fit models, held-out over the others (with predictions)."""
    in_sample = figures(fitted[1], predict_ms(setting, coefficients, fitted[0]))
    predicted = predict_ms(setting, coefficients, held[0])
    return {"fit_rows": len(fitted[0]),
            "rows": len(held[0]), "in_sample": in_sample.to_dict(), "held_out": figures(held[1], predicted).to_dict(),
            "within_15_pct": round(within_pct(held[1], predicted, ACCEPTANCE_BAND), 2),
            "predictions": [[arch.id, arch.input.resolution, float(f"{m:.6g}"), float(f"{p:.6g}")]
                            for arch, m, p in zip(held[0], held[1], predicted, strict=True)],
            "fit_archs": [[arch.id, arch.input.resolution, float(f"{ms:.6g}")]
                          for arch, ms in zip(fitted[0], fitted[1], strict=True)]}


# -- the job ---------------------------------------------------------------------------------


def profile_local(options: ProfileOptions | None = None, *, archs: tuple[Sequence[Arch], Sequence[Arch]] | None = None,
                  mixed: tuple[Sequence[Arch], Sequence[Arch]] | None = None, measurer: Measurer | None = None,
                  peaks: dict[str, float] | None = None, progress: bool = False,
                  command: str = "nas profile --target local") -> ProfileResult:
    """Measure this machine, fit and validate its predictor, and write the ``local`` target.

    Args:
        options: what to measure (defaults: :class:`ProfileOptions`).
        archs: ``(fit, held_out)`` Archs to use instead of sampling ``options.space``; then no mixed-precision
            models are sampled either, only those ``mixed`` gives.
        mixed: ``(fit, held_out)`` mixed-precision Archs (int8 blocks) to fit and validate the int8 processor on.
        measurer: times a chunk of Archs instead of running them (tests inject measurements with it).
        peaks: ``gemm_tflops`` and ``copy_gbs`` instead of measuring them.
        progress: show a tqdm progress bar with its time estimate on stderr.
        command: the command recorded in the file.

    Raises:
        NasError: bad options, a model that cannot be run, or an unwritable target file.
    """
    from nas.latency.machine import machine_facts, measure_peaks, runtime_versions

    options = options or ProfileOptions()
    protocol = options.protocol
    started = time.perf_counter()
    machine = machine_facts()
    versions = runtime_versions()
    if archs is None:
        floats = options.fit_archs + options.held_out_archs
        drawn = sample_archs(options.space, floats + options.mixed_fit_archs + options.mixed_held_out_archs,
                             options.resolution, options.seed,  # the float draws are those of a float-only profile
                             skip_op_classes=_CANNOT_RUN[protocol.runtime])
        fit_archs, held_archs = drawn[:options.fit_archs], drawn[options.fit_archs:floats]
        made = mixed_archs(drawn[floats:], options.seed)
        mixed_fit, mixed_held = made[:options.mixed_fit_archs], made[options.mixed_fit_archs:]
    else:
        fit_archs, held_archs = list(archs[0]), list(archs[1])
        if not fit_archs or len(held_archs) < 3:
            raise NasError(f"need at least 1 fit and 3 held-out Archs, got {len(fit_archs)} and {len(held_archs)}")
        mixed_fit, mixed_held = (list(mixed[0]), list(mixed[1])) if mixed is not None else ([], [])
        if mixed is not None and (not mixed_fit or len(mixed_held) < 3):
            raise NasError(f"need at least 1 fit and 3 held-out mixed-precision Archs, got {len(mixed_fit)} and "
                           f"{len(mixed_held)}")
    overlap = {arch.id for arch in (*fit_archs, *mixed_fit)} & {arch.id for arch in (*held_archs, *mixed_held)}
    if overlap:
        raise NasError(f"held-out Archs must not be fitted; in both: {', '.join(sorted(overlap))}")
    peaks = peaks or measure_peaks(protocol.threads, clock=protocol.clock)
    header = cache_header(protocol, machine.cpu_model)
    everything = [*fit_archs, *held_archs, *mixed_fit, *mixed_held]
    passes, measured = measure_passes(everything, protocol, cache=cache_path(protocol), resume=options.resume,
                                      header=header, measurer=measurer or default_measurer, progress=progress)
    timings = {key: joined(value) for key, value in passes.items()}
    fit_ms = [timings[arch.id].latency_ms(protocol.statistic) for arch in fit_archs]
    held_ms = [timings[arch.id].latency_ms(protocol.statistic) for arch in held_archs]

    name = setting_name(protocol)
    device_key = f"cpu_{protocol.runtime}_{protocol.threads}t"  # its peaks were measured with this setting
    device = _device(machine, peaks, protocol.threads, protocol.clock)
    entry = _setting_entry(protocol, device_key, machine.cpu_model, versions)
    path = local_target_path()
    document = _document(path, machine.cpu_model, device_key, device, name, entry)
    if mixed_fit:
        _add_int8_processor(document, device_key, entry, protocol)
    setting = parse_target(document, path).setting(name)
    coefficients, in_sample, held_out, predicted = fit_local(setting, fit_archs, fit_ms, held_archs, held_ms)
    xeon = compare_xeon(held_archs, held_ms)
    mixed_report = None
    if mixed_fit:
        mixed_fit_ms = [timings[arch.id].latency_ms(protocol.statistic) for arch in mixed_fit]
        mixed_held_ms = [timings[arch.id].latency_ms(protocol.statistic) for arch in mixed_held]
        coefficients = fit_int8(setting, coefficients, mixed_fit, mixed_fit_ms)
        mixed_report = _mixed_validation(setting, coefficients, (mixed_fit, mixed_fit_ms), (mixed_held, mixed_held_ms))
    used = [timings[arch.id] for arch in everything]
    load = load_summary(used)
    spread = noise([passes[arch.id] for arch in everything])
    wall = time.perf_counter() - started
    entry["coefficients"] = coefficients.to_dict()
    entry["validation"] = {
        "method": (f"held-out: {len(held_archs)} random {options.space} architectures measured end to end here, "
                   f"never used in the fit of the other {len(fit_archs)}"),
        "date": datetime.date.today().isoformat(), "command": command,
        "rows": len(held_archs), "families": {f"{options.space} (random)": len(held_archs)},
        "fit_rows": len(fit_archs), "held_out": held_out.to_dict(), "in_sample": in_sample.to_dict(),
        "xeon_vs_live": xeon,
        "predictions_columns": ["arch_id", "resolution", "measured_ms", "predicted_ms"],
        "predictions": [[arch.id, arch.input.resolution, float(f"{m:.6g}"), float(f"{p:.6g}")]
                        for arch, m, p in zip(held_archs, held_ms, predicted, strict=True)],
    }
    if mixed_report is not None:
        entry["validation"]["mixed_precision"] = {
            **mixed_report, "method": (f"held-out: {len(mixed_held)} random mixed-precision {options.space} "
                                       f"architectures (int8 and fp32 blocks, run as int8 QDQ models) measured end "
                                       f"to end here, never used in the fit of the int8 processor to {len(mixed_fit)} "
                                       f"others")}
    entry["measurement"] = {
        "machine": machine.to_dict(), "versions": versions, "peaks": {k: round(v, 6) for k, v in peaks.items()},
        "protocol": {**protocol.to_dict(), "space": options.space, "seed": options.seed,
                     "resolution": f"the valid resolution nearest {options.resolution} per architecture",
                     "timer": ("injected" if measurer is not None else
                               f"{'time.thread_time' if protocol.clock == 'cpu' else 'time.perf_counter'} around "
                               f"one run")},
        "load_1min": {**load, "cpus": os.cpu_count() or 1}, "noise": spread,
        "timed_now": measured, "from_cache": len(used) - measured, "wall_s": round(wall, 1),
        "fit_archs": [[arch.id, arch.input.resolution, float(f"{ms:.6g}")] for arch, ms in zip(fit_archs, fit_ms,
                                                                                               strict=True)],
    }
    parse_target(document, path)  # never write a file the reader would reject
    header_lines = ("# The local latency target, written by `nas profile --target local` "
                    "(format: predictors/README.md).\n# Re-run the profile to refresh it; edits are overwritten.\n")
    write_atomic(path, header_lines + dump_yaml(document))
    return ProfileResult(path, name, in_sample, held_out, xeon, wall, measured, load,
                         None if mixed_report is None else {key: mixed_report[key] for key in
                                                            ("fit_rows", "in_sample", "held_out", "within_15_pct")},
                         spread["passes_agree_within_10_pct"])
