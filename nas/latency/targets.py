"""Hardware targets: device facts, measurement settings and fitted coefficients, read from YAML.

A target is one file, ``predictors/<name>.yaml`` (installed as the package
``nas.predictors``), whatever produced it: published measurements (v100, xeon,
iphone12, zcu104) or measurements of the local machine. It holds

* ``devices``: the processors, each with its facts and their sources: peak
  throughput per precision for MAC ops (``peak_tops``) and for element-wise
  work (``vector_tops``), memory bandwidth, caches, cores, clock;
* ``settings``: the measurement regimes the target reproduces (runtime,
  precision, batch sizes), each with its own fusion rules, fallback processor,
  priors, fitted coefficients and validation figures. Regimes are never mixed:
  a setting selects its calibration rows by device, runtime and precision;
* ``default_setting``: the setting :func:`nas.latency.predict` uses unless told.

The format is documented in predictors/README.md. Unknown keys are errors, so a
typo cannot silently fall back to a default.

The ``local`` target is not packaged: ``nas profile --target local`` measures
this machine and writes it to :func:`local_target_path` (under ``$NAS_HOME``,
default ``~/.cache/nas``), where :func:`get_target` and :func:`list_targets`
find it.

Example:
    >>> from nas.latency.targets import get_target, list_targets
    >>> "v100" in list_targets()
    True
    >>> get_target("v100").setting().precision
    'fp32'
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from nas.arch import coerce_field
from nas.cost import op_class
from nas.errors import ConfigError, UnknownKindError, closest_first
from nas.latency.coefficients import Coefficients
from nas.latency.kinds import COMPUTE_GROUPS, KINDS
from nas.yamlio import line_of, load_yaml, plain

__all__ = ["PRECISIONS", "PEAK_FORMATS", "PEAK_OF_FORMAT", "BYTES_PER_ELEMENT", "FALLBACK", "UNSUPPORTED", "KEEP_FLOAT",
           "Device", "Fallback", "Setting", "Target", "LOCAL", "HOME_ENV", "predictors_dir", "user_dir",
           "local_target_path", "list_targets", "get_target", "load_target", "parse_target"]

Precision = Literal["fp32", "fp16", "amp", "int8"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
"""Precision tokens (as in the calibration files); ``amp`` is mixed fp16/fp32 with fp16 tensors."""

PEAK_FORMATS: tuple[str, ...] = ("fp32", "fp16", "bf16", "fp8", "int8", "int4")
"""The formats a device's ``peak_tops`` / ``vector_tops`` may list (both fp8 variants share ``fp8``)."""

BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "amp": 2, "int8": 1, "bf16": 2, "fp8": 1, "int4": 0.5}
"""Bytes per tensor element a runtime moves at each precision (and each peak format)."""

PEAK_OF_FORMAT = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8",
                  "int8": "int8", "int4": "int4"}
"""The peak format an op's number format (:data:`nas.arch.NUMBER_FORMATS`) computes at where a device runs it."""

FALLBACK = "fallback"
"""In a device's ``formats``: ops at this format run on the setting's fallback processor."""
UNSUPPORTED = "unsupported"
"""In a device's ``formats``: ops at this format cannot run; predicting a model with one raises."""

KEEP_FLOAT = "+fp32"
"""Suffix of a derived setting (``vitis_ai_2_5+fp32``) that keeps float32 ops in fp32 instead of deploying them at
the setting's precision (see :attr:`Setting.keep_float`)."""

_PEAK_KEY = {"fp32": "fp32", "fp16": "fp16", "amp": "fp16", "int8": "int8", "bf16": "bf16", "fp8": "fp8",
             "int4": "int4"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_DeviceKind = Literal["gpu", "cpu", "npu", "dpu"]

LOCAL = "local"
"""The target measured on this machine by ``nas profile --target local``."""

HOME_ENV = "NAS_HOME"
"""Environment variable naming the user directory (default ``~/.cache/nas``) that holds the local target."""


@dataclass(frozen=True)
class Device:
    """One processor and its published facts.

    Attributes:
        name: key in the target file, e.g. ``v100_sxm2``.
        title: what it is, e.g. ``NVIDIA Tesla V100 SXM2 16 GB``.
        kind: ``gpu``, ``cpu``, ``npu`` or ``dpu``.
        peak_tops: precision -> peak tera-operations/s of MAC ops (a multiply-add counts 2).
        vector_tops: precision -> peak tera-operations/s of element-wise work (defaults to ``peak_tops``).
        memory_bandwidth_gbs: peak DRAM bandwidth, GB/s.
        cache_mb: last-level cache, MB (facts only; not used by the model).
        cores: the compute units, in words.
        clock_ghz: the clock the peaks assume.
        channel_tile: the channel blocking of its MAC kernels (SIMD lanes, DPU channel parallelism, GEMM tile);
            a matrix product's output and reduction dimensions are padded to it (1: no padding).
        sources: where each fact was read.
        formats: op number format -> how the device runs an op at it: a peak format of its own (``int8``; an
            int8 op on the iPhone's Neural Engine computes in ``fp16``), :data:`FALLBACK` or :data:`UNSUPPORTED`
            (see :meth:`runs`).
    """

    name: str
    title: str
    kind: str
    peak_tops: dict[str, float]
    vector_tops: dict[str, float]
    memory_bandwidth_gbs: float
    cache_mb: float | None
    cores: str
    clock_ghz: float | None
    channel_tile: int
    sources: tuple[str, ...]
    formats: dict[str, str] = field(default_factory=dict)

    def runs(self, number_format: str) -> str:
        """How an op at ``number_format`` runs here: the peak format it computes at, :data:`FALLBACK` or
        :data:`UNSUPPORTED`. Formats the file does not list run at their own peak format where the device has
        one, and are unsupported otherwise."""
        found = self.formats.get(number_format)
        if found is not None:
            return found
        peak = PEAK_OF_FORMAT[number_format]
        return peak if peak in self.peak_tops else UNSUPPORTED

    def peak_ops(self, precision: str, *, vector: bool = False) -> float:
        """Peak operations per second at ``precision`` (MAC ops, or element-wise work if ``vector``)."""
        table = self.vector_tops if vector else self.peak_tops
        key = _PEAK_KEY[precision]
        if key not in table:
            raise ConfigError(f"device {self.name!r} has no {'vector_tops' if vector else 'peak_tops'} "
                              f"figure for {key}; known: {', '.join(table)}")
        return table[key] * 1e12


@dataclass(frozen=True)
class Fallback:
    """Ops the main processor cannot run, and the processor that runs them instead.

    Attributes:
        device: the fallback processor (e.g. the ZCU104's Cortex-A53 cores).
        kinds: op kinds (:data:`~nas.latency.kinds.KINDS`) placed on it.
        precision: the precision it computes in.
        notes: how the runtime does it, with sources.
    """

    device: Device
    kinds: tuple[str, ...]
    precision: str
    notes: str


@dataclass(frozen=True)
class Setting:
    """One measurement regime of a target: runtime, precision, batch sizes, and its fitted model.

    Attributes:
        name: key in the target file, e.g. ``paddle_trt_fp32``.
        target: the target's name.
        title: the regime in words.
        device: the main processor.
        runtime: the runtime as the calibration files name it (e.g. ``paddle-tensorrt``).
        precision: one of :data:`PRECISIONS`.
        batch_sizes: the batch sizes measured.
        calibration: field -> value a calibration row must have to belong here (``device``,
            ``runtime``, ``precision``, ``threads``; a list allows several; ``published`` maps a published
            column to text it must contain, or to a list of texts one of which it must contain).
        overlap: whether the host issues ops asynchronously while the device runs earlier ones (GPU
            runtimes): the model is then bound by the larger of issue time and execution time, not their sum.
        fusion: head kind -> kinds that fuse into it when they directly consume its output.
        fallback: where ops the main processor cannot run go, if anywhere.
        unsupported: op kinds the setting cannot run at all; predicting a model that has one raises.
        eliminated: op kinds the runtime removes when it builds the engine (TensorRT and the Vitis AI
            compiler write concatenation inputs in place), priced at zero on purpose.
        plugins: aten ops (``aten.hardswish``) the runtime hands to an opaque plugin: each launches its own
            kernel, fuses into nothing before it, and nothing after it fuses into it, whatever its kind's rules.
        shared_kernels: compute group -> the group whose kernels the runtime runs it with, so its ops take
            that group's efficiencies and it has no coefficients of its own to fit (a linear layer is the
            GEMM of a 1x1 convolution under TensorRT and oneDNN: ``{matmul: pwconv}``). Without it, a group
            that only one calibration family exercises (linear layers: the ViTs) is fitted on that family
            alone and guessed when it is held out.
        fused_attention: the runtime runs a ``scaled_dot_product_attention`` call as one fused kernel where its
            kernel selection allows, priced as :mod:`nas.latency.fused_attention` says (eager PyTorch on a CPU).
        free: names of the coefficients the fit adjusts (the file may use globs such as
            ``memory_efficiency.*``); the rest stay at their priors.
        prior_weight: pull of the priors in the fit (log-space, per parameter).
        priors: the coefficients before fitting (from the device facts and the literature).
        coefficients: the fitted coefficients, or ``None`` before the first fit.
        validation: the validation figures the fit wrote, or ``None``.
        notes: anything a reader must know about the regime.
        measurement: for a setting measured here (the ``local`` target), the machine, the protocol and the load
            it ran under; ``None`` for published measurements.
        keep_float: how float32 ops are priced. False (every setting a file defines): at ``precision``, as the
            runtime deploys a float model (Vitis AI quantises it to int8, Core ML computes it in fp16), which is
            what every calibration row measured. True (the derived setting ``NAME+fp32``): float32 ops stay fp32
            and run where the main processor's ``formats`` say (on the ZCU104, on the fallback). Ops at any
            other format always run at it (:meth:`Device.runs`).
    """

    name: str
    target: str
    title: str
    device: Device
    runtime: str
    precision: str
    batch_sizes: tuple[int, ...]
    calibration: dict[str, Any]
    overlap: bool
    fusion: dict[str, tuple[str, ...]]
    fallback: Fallback | None
    unsupported: tuple[str, ...]
    eliminated: tuple[str, ...]
    plugins: tuple[str, ...]
    shared_kernels: dict[str, str]
    free: tuple[str, ...]
    prior_weight: float
    priors: Coefficients
    coefficients: Coefficients | None
    validation: dict[str, Any] | None
    notes: str = ""
    measurement: dict[str, Any] | None = None
    keep_float: bool = False
    fused_attention: bool = False

    @property
    def label(self) -> str:
        """``target/setting``."""
        return f"{self.target}/{self.name}"

    @property
    def fitted(self) -> Coefficients:
        """The fitted coefficients, or the priors if the setting was never fitted."""
        return self.coefficients if self.coefficients is not None else self.priors


@dataclass(frozen=True)
class Target:
    """A hardware target: its devices, settings and the file they came from."""

    name: str
    title: str
    description: str
    devices: dict[str, Device]
    settings: dict[str, Setting]
    default_setting: str
    path: Path
    document: Any = field(repr=False, compare=False)
    _derived: dict[str, Setting] = field(default_factory=dict, repr=False, compare=False)

    def setting(self, name: str | None = None) -> Setting:
        """The setting ``name`` (the default one if ``None``); an unknown name lists the known ones.

        ``NAME+fp32`` is setting ``NAME`` keeping float32 ops in fp32 (:attr:`Setting.keep_float`); the same
        object is returned on every call, so caches keyed by setting keep working.
        """
        key = self.default_setting if name is None else name
        base = key.removesuffix(KEEP_FLOAT) if isinstance(key, str) else key
        if base not in self.settings:
            raise UnknownKindError(f"unknown setting {key!r} of target {self.name!r}; "
                                   f"known: {', '.join(_closest(key, list(self.settings)))} "
                                   f"(each also as NAME{KEEP_FLOAT}, keeping float32 ops in fp32)")
        if base == key:
            return self.settings[key]
        derived = self._derived.get(key)
        if derived is None:
            setting = self.settings[base]
            derived = self._derived[key] = dataclasses.replace(
                setting, name=key, title=f"{setting.title}; float32 ops kept in fp32", keep_float=True)
        return derived


# -- reading -----------------------------------------------------------------------------


def _closest(name: str, known: list[str]) -> list[str]:
    return closest_first(str(name), known)


def _mapping(data: Any, path: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping", path=path)
    unknown = [key for key in data if key not in required and key not in optional]
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join((*required, *optional))}", path=path)
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(missing)}", path=path)
    return data


def _text(data: Mapping, key: str, path: str, default: str | None = None) -> str:
    value = data.get(key, default)
    text = coerce_field(value, str, f"{path}.{key}")
    if default is None and not text.strip():
        raise ConfigError(f"must be a non-empty string, got {value!r}", path=f"{path}.{key}")
    return text.strip()


def _number(value: Any, path: str, *, allow_none: bool = False) -> float | None:
    number = coerce_field(value, float | None if allow_none else float, path)
    if number is not None and not number > 0:
        raise ConfigError(f"must be a number > 0, got {value!r}", path=path)
    return number


def _tops(data: Any, path: str) -> dict[str, float]:
    if not isinstance(data, Mapping) or not data:
        raise ConfigError("must be a mapping precision -> TOPS", path=path)
    out = {}
    for key, value in data.items():
        if key not in PEAK_FORMATS:
            raise ConfigError(f"unknown precision {key!r}; allowed: {', '.join(PEAK_FORMATS)}", path=path)
        out[key] = _number(value, f"{path}.{key}")
    return out  # type: ignore[return-value]


def _formats(data: Any, peak: Mapping[str, float], vector: Mapping[str, float], path: str) -> dict[str, str]:
    if not isinstance(data, Mapping):
        raise ConfigError("must be a mapping number format -> peak format, fallback or unsupported", path=path)
    for key, value in data.items():
        if key not in PEAK_OF_FORMAT:
            raise ConfigError(f"unknown number format {key!r}; allowed: {', '.join(PEAK_OF_FORMAT)}", path=path)
        if value in (FALLBACK, UNSUPPORTED):
            continue
        if value not in peak or value not in vector:
            raise ConfigError(f"{key}: {value!r} is neither {FALLBACK}, {UNSUPPORTED} nor a format this device "
                              f"lists in both peak_tops and vector_tops ({', '.join(k for k in peak if k in vector)})",
                              path=f"{path}.{key}")
    return dict(data)


def _kinds(data: Any, path: str) -> tuple[str, ...]:
    if not isinstance(data, list):
        raise ConfigError("must be a list of op kinds", path=path)
    for index, kind in enumerate(data):
        if kind not in KINDS:
            raise ConfigError(f"unknown op kind {kind!r}; known: {', '.join(_closest(kind, list(KINDS)))}",
                              path=f"{path}[{index}]")
    return tuple(data)


def _op_names(data: Any, path: str) -> tuple[str, ...]:
    """Validated aten op names, in-place forms folded into their op (``aten.hardswish_`` -> ``aten.hardswish``),
    as :mod:`nas.latency.optable` matches them."""
    if not isinstance(data, list):
        raise ConfigError("must be a list of aten op names (e.g. aten.hardswish)", path=path)
    for index, name in enumerate(data):
        if not isinstance(name, str) or not name.startswith("aten.") or op_class(name) == "other":
            raise ConfigError(f"not an aten op nas.cost knows: {name!r} (names look like 'aten.hardswish')",
                              path=f"{path}[{index}]")
    return tuple(name.rstrip("_") for name in data)


def _device(name: str, data: Any, path: str) -> Device:
    data = _mapping(data, path, required=("title", "kind", "peak_tops", "memory_bandwidth_gbs", "sources"),
                    optional=("vector_tops", "cache_mb", "cores", "clock_ghz", "channel_tile", "formats"))
    kind = coerce_field(data["kind"], _DeviceKind, f"{path}.kind")
    sources = coerce_field(data["sources"], tuple[str, ...], f"{path}.sources")
    if not sources or not all(sources):
        raise ConfigError("must be a non-empty list of strings", path=f"{path}.sources")
    peak = _tops(data["peak_tops"], f"{path}.peak_tops")
    vector = _tops(data["vector_tops"], f"{path}.vector_tops") if "vector_tops" in data else dict(peak)
    tile = coerce_field(data.get("channel_tile", 1), int, f"{path}.channel_tile")
    if tile < 1:
        raise ConfigError(f"must be an int >= 1, got {tile!r}", path=f"{path}.channel_tile")
    return Device(name, _text(data, "title", path), kind, peak, vector,
                  _number(data["memory_bandwidth_gbs"], f"{path}.memory_bandwidth_gbs"),  # type: ignore[arg-type]
                  _number(data.get("cache_mb"), f"{path}.cache_mb", allow_none=True),
                  _text(data, "cores", path, ""),
                  _number(data.get("clock_ghz"), f"{path}.clock_ghz", allow_none=True), tile, sources,
                  _formats(data.get("formats", {}), peak, vector, f"{path}.formats"))


def _setting(target: str, name: str, data: Any, devices: dict[str, Device], path: str) -> Setting:
    data = _mapping(data, path,
                    required=("title", "device", "runtime", "precision", "batch_sizes", "calibration", "fusion",
                              "priors", "fit"),
                    optional=("fallback", "unsupported", "eliminated", "plugins", "coefficients", "validation",
                              "notes", "overlap", "measurement", "shared_kernels", "fused_attention"))

    def device(key: Any, where: str) -> Device:
        if key not in devices:
            raise ConfigError(f"unknown device {key!r}; known: {', '.join(_closest(key, list(devices)))}",
                              path=where)
        return devices[key]

    precision = coerce_field(data["precision"], Precision, f"{path}.precision")
    batches = coerce_field(data["batch_sizes"], tuple[int, ...], f"{path}.batch_sizes")
    if not batches or not all(batch >= 1 for batch in batches):
        raise ConfigError(f"must be a non-empty list of ints >= 1, got {list(batches)!r}",
                          path=f"{path}.batch_sizes")
    calibration = _mapping(data["calibration"], f"{path}.calibration", required=("device", "runtime", "precision"),
                           optional=("threads", "published"))
    published = calibration.get("published", {})
    if not isinstance(published, Mapping) or not all(
            isinstance(texts, str) or (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts))
            for texts in published.values()):
        raise ConfigError("must be a mapping published column -> text (or a list of texts, any of which matches)",
                          path=f"{path}.calibration.published")
    fusion_data = data["fusion"]
    if not isinstance(fusion_data, Mapping):
        raise ConfigError("must be a mapping head kind -> list of kinds", path=f"{path}.fusion")
    fusion = {}
    for head, tails in fusion_data.items():
        if head not in KINDS:
            raise ConfigError(f"unknown op kind {head!r}", path=f"{path}.fusion")
        fusion[head] = _kinds(tails, f"{path}.fusion.{head}")
    fallback = None
    if data.get("fallback") is not None:
        fb = _mapping(data["fallback"], f"{path}.fallback", required=("device", "kinds", "precision", "notes"))
        fallback = Fallback(device(fb["device"], f"{path}.fallback.device"),
                            _kinds(fb["kinds"], f"{path}.fallback.kinds"),
                            coerce_field(fb["precision"], Precision, f"{path}.fallback.precision"),
                            _text(fb, "notes", f"{path}.fallback"))
    fit = _mapping(data["fit"], f"{path}.fit", required=("free", "prior_weight"))
    priors = Coefficients.from_dict(data["priors"], f"{path}.priors", with_host=fallback is not None)
    patterns = ["*"] if fit["free"] == "all" else fit["free"]
    if not isinstance(patterns, list) or not all(isinstance(item, str) for item in patterns):
        raise ConfigError("must be 'all' or a list of coefficient names (globs allowed)", path=f"{path}.fit.free")
    free: list[str] = []
    for index, pattern in enumerate(patterns):
        matched = fnmatch.filter(priors.names(), pattern)
        if not matched:
            raise ConfigError(f"matches no coefficient: {pattern!r}; known: "
                              f"{', '.join(_closest(pattern, priors.names()))}", path=f"{path}.fit.free[{index}]")
        free.extend(name for name in matched if name not in free)
    shared = _shared_kernels(data.get("shared_kernels", {}), f"{path}.shared_kernels")
    free = [name for name in free if not _efficiency_of(name, shared)]
    coefficients = None
    if data.get("coefficients") is not None:
        coefficients = Coefficients.from_dict(data["coefficients"], f"{path}.coefficients",
                                              with_host=fallback is not None)
    validation = data.get("validation")
    if validation is not None and not isinstance(validation, Mapping):
        raise ConfigError("must be a mapping or null", path=f"{path}.validation")
    measurement = data.get("measurement")
    if measurement is not None and not isinstance(measurement, Mapping):
        raise ConfigError("must be a mapping or null", path=f"{path}.measurement")
    return Setting(
        name=name, target=target, title=_text(data, "title", path), device=device(data["device"], f"{path}.device"),
        runtime=_text(data, "runtime", path), precision=precision, batch_sizes=batches,
        calibration=dict(calibration), overlap=coerce_field(data.get("overlap", False), bool, f"{path}.overlap"),
        fusion=fusion, fallback=fallback,
        unsupported=_kinds(data.get("unsupported", []), f"{path}.unsupported"),
        eliminated=_kinds(data.get("eliminated", []), f"{path}.eliminated"),
        plugins=_op_names(data.get("plugins", []), f"{path}.plugins"), shared_kernels=shared,
        free=tuple(free),
        prior_weight=_number(fit["prior_weight"], f"{path}.fit.prior_weight"),  # type: ignore[arg-type]
        priors=priors, coefficients=coefficients, validation=plain(validation),
        notes=_text(data, "notes", path, ""), measurement=plain(measurement),
        fused_attention=coerce_field(data.get("fused_attention", False), bool, f"{path}.fused_attention"))


def _shared_kernels(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError("must be a mapping compute group -> compute group", path=path)
    for follower, leader in value.items():
        for group in (follower, leader):
            if group not in COMPUTE_GROUPS:
                raise ConfigError(f"unknown compute group {group!r}; known: {', '.join(COMPUTE_GROUPS)}", path=path)
        if follower == leader or leader in value:
            raise ConfigError(f"{follower!r} -> {leader!r}: a group must share another group's own kernels",
                              path=path)
    return dict(value)


def _efficiency_of(name: str, groups: Mapping[str, str]) -> bool:
    """Whether coefficient ``name`` is a compute or memory efficiency of one of ``groups``."""
    head, _, group = name.removeprefix("host.").partition(".")
    return head in ("compute_efficiency", "memory_efficiency") and group in groups


def _parse(document: Any, path: Path) -> Target:
    data = _mapping(document, "", required=("schema", "name", "title", "devices", "settings", "default_setting"),
                    optional=("description",))
    if data["schema"] != 1:
        raise ConfigError(f"unsupported schema {data['schema']!r}; this version reads schema 1", path="schema")
    name = _text(data, "name", "")
    if not _NAME.match(name) or name != path.stem:
        raise ConfigError(f"must be lower-case [a-z0-9_-] and match the file name {path.stem!r}, got {name!r}",
                          path="name")
    if not isinstance(data["devices"], Mapping) or not data["devices"]:
        raise ConfigError("must be a non-empty mapping", path="devices")
    devices = {key: _device(key, value, f"devices.{key}") for key, value in data["devices"].items()}
    if not isinstance(data["settings"], Mapping) or not data["settings"]:
        raise ConfigError("must be a non-empty mapping", path="settings")
    settings = {key: _setting(name, key, value, devices, f"settings.{key}") for key, value in data["settings"].items()}
    default = data["default_setting"]
    if default not in settings:
        raise ConfigError(f"unknown setting {default!r}; known: {', '.join(settings)}", path="default_setting")
    return Target(name, _text(data, "title", ""), _text(data, "description", "", ""), devices, settings, default,
                  path, document)


def load_target(path: str | Path) -> Target:
    """Read a target file (any path); errors carry the file, line and field path.

    Raises:
        ConfigError: the file is missing, not YAML, or does not follow the format.
    """
    path = Path(path)
    return parse_target(load_yaml(path), path)


def parse_target(document: Any, path: str | Path) -> Target:
    """A target from its parsed YAML ``document`` (as read from, or about to be written to, ``path``).

    Raises:
        ConfigError: the document does not follow the format (with the file, line and field path).
    """
    path = Path(path)
    try:
        return _parse(document, path)
    except ConfigError as error:
        parts = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", error.path))
        raise error.located(source=str(path), line=line_of(document, parts)) from None


# -- the packaged targets ------------------------------------------------------------------


def predictors_dir() -> Path:
    """The folder of the target files (the installed ``nas.predictors`` package)."""
    return Path(str(resources.files("nas.predictors")))


def user_dir() -> Path:
    """The user directory of ``nas``: ``$NAS_HOME`` if set, else ``~/.cache/nas``."""
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "nas"


def local_target_path() -> Path:
    """Where ``nas profile --target local`` writes the local target, and where :func:`get_target` reads it."""
    return user_dir() / "predictors" / f"{LOCAL}.yaml"


def list_targets() -> list[str]:
    """Names of the packaged targets, and ``local`` once this machine was profiled; sorted."""
    names = {path.stem for path in predictors_dir().glob("*.yaml")}
    if local_target_path().is_file():
        names.add(LOCAL)
    return sorted(names)


@cache
def _cached(path: Path, mtime_ns: int) -> Target:
    return load_target(path)


def get_target(name: str) -> Target:
    """The target ``name``: a packaged one, or ``local`` (re-read when its file changes).

    Raises:
        UnknownKindError: no such target (the message lists the known ones, closest first), or ``local``
            before this machine was profiled (the message says how to profile it).
        ConfigError: the file is malformed.
    """
    if name == LOCAL:
        path = local_target_path()
        if not path.is_file():
            raise UnknownKindError(f"no local target yet ({path} does not exist): run `nas profile --target local` "
                                   f"to measure this machine and fit its predictor (${HOME_ENV} moves the file)")
    else:
        path = predictors_dir() / f"{name}.yaml"
        if not isinstance(name, str) or not _NAME.match(name) or not path.is_file():
            known = list_targets()
            raise UnknownKindError(f"unknown target {name!r}; known: {', '.join(_closest(str(name), known))}")
    return _cached(path, path.stat().st_mtime_ns)
