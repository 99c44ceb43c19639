"""Regenerate ``predictors/calibration/<target>.csv`` from the published tables in ``../shared/calibration``.

Run ``python -m nas.latency.calibration.select [--source DIR]``. Published rows the shared tables lack (MobileOne
and FastViT on the iPhone 12 Pro) are kept in ``predictors/calibration/supplement/<target>.csv``, in the
shared table's columns with their sources, and are read after it. The rules, per source row:

1. The setting must be known and be the target's measurement regime (see ``_setting_<target>``): a row
   whose batch size, precision or runtime is not stated is skipped.
2. The published model name must be in the target's name table (``names/<target>.yaml`` beside this
   module, :func:`name_table`), which maps it to the traced reference (a zoo name or a
   ``REFERENCE_MODELS`` name) and, where the row does not state it, the resolution the model is defined
   for. Names not listed are skipped with the reason given in ``names/skipped.yaml`` (task models, pruned
   models, detection/segmentation, families not written here).
3. Where the row gives a parameter count, the built reference must match it within 3%
   (:data:`PARAMS_TOLERANCE`), except for the documented counting errors in :data:`PARAMS_EXCEPTIONS`,
   whose explanation is itself checked numerically.
4. Where the row gives only a throughput, ``latency_ms = batch x instances x 1000 / throughput`` (recorded
   in ``latency_derivation``).
5. A row listing a network at a larger input than another row of the same network and setting, yet published
   no slower, is dropped (:func:`_no_slower_at_larger_input`): its pixels, hence its work, grew by the
   square of the ratio, so its measurement cannot have been at the listed resolution.

The output keeps every published column after the normalised ones (a published column whose name is
one of the normalised columns is renamed ``published_<name>``), and ``selection.md`` beside the CSVs
lists what was used and what was skipped, with reasons.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from nas import zoo
from nas.build import build
from nas.errors import ConfigError
from nas.latency.calibration.measurements import REQUIRED_COLUMNS
from nas.latency.calibration.models import REFERENCE_MODELS
from nas.yamlio import load_yaml

__all__ = ["PARAMS_EXCEPTIONS", "PARAMS_TOLERANCE", "SUPPLEMENT_DIR", "TARGETS", "ZOO_FAMILIES", "NameTable",
           "ParamsException", "Selection", "name_table", "reference_family", "reference_params", "select",
           "skip_reasons", "write"]

TARGETS = ("iphone12", "v100", "xeon", "zcu104")
"""The targets whose published tables are selected from."""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


SUPPLEMENT_DIR = _repo_root() / "predictors" / "calibration" / "supplement"
"""Published rows kept in the project because ``../shared/calibration`` lacks them (with their sources)."""

PARAMS_TOLERANCE = 0.03
"""Largest relative difference between a built reference's parameters and a row's published count."""

ZOO_FAMILIES: dict[str, str] = {
    "resnet50": "resnet",
    "mobilenetv2_100": "mobilenetv2",
    "deit_tiny": "vit",
    "deit_small": "vit",
    "deit_base": "vit",
    "efficientformer_l1": "efficientformer",
    "efficientformer_l3": "efficientformer",
    "efficientformer_l7": "efficientformer",
    **{f"efficientvit_m{index}": "efficientvit" for index in range(6)},
}
"""Architecture family of the zoo models the calibration rows use."""


def _grouped_conv_params(module: nn.Module) -> int:
    return sum(sub.weight.numel() for sub in module.modules() if isinstance(sub, nn.Conv2d) and sub.groups > 1)


@dataclass(frozen=True)
class ParamsException:
    """A source whose published parameter counts are known to be miscounted, and what they omit."""

    repo: str
    explanation: str
    omitted: Callable[[nn.Module], int]

    def covers(self, row: dict[str, str]) -> bool:
        """Whether ``row`` comes from this source."""
        return row.get("source_repo") == self.repo


PARAMS_EXCEPTIONS: dict[str, ParamsException] = {
    "paddleclas-grouped-conv": ParamsException(
        "PaddlePaddle/PaddleClas",
        "PaddleClas's parameter counts omit the weights of grouped and depthwise convolutions: built parameters "
        "minus those weights match its figures to 0.7% for MobileNetV1/V2, EfficientNet and ResNeXt (e.g. "
        "EfficientNet-B0 5.29M - 0.19M depthwise = 5.10M, the table's figure; ResNeXt50-32x4d 25.03M - 1.41M = "
        "23.64M), while ResNet-50 without grouped convs matches exactly",
        _grouped_conv_params),
}
"""Known published counting errors; a row they cover passes if built - omitted is within 3% of its figure."""


@dataclass(frozen=True)
class Pick:
    """How a published model maps to what is traced."""

    reference: str
    resolution: int | None = None  # where the row does not state it


@dataclass
class Selection:
    """The rows kept for one target (normalised + published columns) and the rows skipped, with reasons."""

    target: str
    columns: list[str]
    rows: list[dict[str, str]]
    skipped: list[tuple[str, str]]


# -- the name tables: names/<target>.yaml ------------------------------------------------------

_NAMES_DIR = Path(str(resources.files("nas.latency.calibration"))) / "names"


@dataclass(frozen=True)
class NameTable:
    """What a target's published model names are traced as (``names/<target>.yaml``).

    Attributes:
        models: published name (on zcu104 the network field of the standard name) -> its pick.
        by_runtime: ``(model, runtime prefix, pick)``, checked before ``models``: names whose variant depends
            on the framework the row ran in.
    """

    models: dict[str, Pick]
    by_runtime: tuple[tuple[str, str, Pick], ...]

    def pick(self, model: str, runtime: str) -> Pick | None:
        """The pick of a row's model and runtime, or ``None`` if the table does not list it."""
        for name, prefix, pick in self.by_runtime:
            if model == name and runtime.startswith(prefix):
                return pick
        return self.models.get(model)


def _parse_pick(entry: Any, where: str, source: str) -> Pick:
    """``NAME`` or ``{reference: NAME, resolution: INT}``."""
    if isinstance(entry, Mapping) and set(entry) == {"reference", "resolution"}:
        reference, resolution = entry["reference"], entry["resolution"]
    else:
        reference, resolution = entry, None
    if not isinstance(reference, str) or not (resolution is None or type(resolution) is int):
        raise ConfigError("expected a reference name or {reference: NAME, resolution: INT}", path=where,
                          source=source)
    return Pick(reference, resolution)


def _names(document: Any, key: str, source: str) -> Mapping[str, Any]:
    """``document[key]``, checked to be a mapping from names."""
    table = document.get(key) if isinstance(document, Mapping) else None
    if not isinstance(table, Mapping) or not all(isinstance(name, str) for name in table):
        raise ConfigError("must be a mapping from published names", path=key, source=source)
    return table


@cache
def name_table(target: str) -> NameTable:
    """The name table of ``target``, read once from ``names/<target>.yaml``.

    Raises:
        ConfigError: the file is missing or malformed (the message names the file and the entry).
    """
    source = str(_NAMES_DIR / f"{target}.yaml")
    document = load_yaml(source)
    models = {name: _parse_pick(entry, f"models.{name}", source)
              for name, entry in _names(document, "models", source).items()}
    by_runtime = []
    for index, entry in enumerate(document.get("by_runtime", [])):
        where = f"by_runtime[{index}]"
        if (not isinstance(entry, Mapping) or set(entry) != {"model", "runtime", "reference", "resolution"}
                or not isinstance(entry["model"], str) or not isinstance(entry["runtime"], str)):
            raise ConfigError("expected {model: NAME, runtime: PREFIX, reference: NAME, resolution: INT}",
                              path=where, source=source)
        pick = _parse_pick({"reference": entry["reference"], "resolution": entry["resolution"]}, where, source)
        by_runtime.append((entry["model"], entry["runtime"], pick))
    return NameTable(models, tuple(by_runtime))


@cache
def skip_reasons() -> dict[str, str]:
    """Published-name prefix -> why no target lists it (``names/skipped.yaml``)."""
    source = str(_NAMES_DIR / "skipped.yaml")
    reasons = _names(load_yaml(source), "prefixes", source)
    for prefix, reason in reasons.items():
        if not isinstance(reason, str):
            raise ConfigError("expected the reason, a text", path=f"prefixes.{prefix}", source=source)
    return dict(reasons)


# -- helpers --------------------------------------------------------------------------------


def reference_family(reference: str) -> str:
    """The architecture family of a reference or zoo model."""
    if reference in REFERENCE_MODELS:
        return REFERENCE_MODELS.get(reference).family
    return ZOO_FAMILIES[reference]


_PARAMS: dict[str, tuple[int, dict[str, int]]] = {}


def reference_params(reference: str) -> tuple[int, dict[str, int]]:
    """Parameters of the built reference, and the parameters each :data:`PARAMS_EXCEPTIONS` entry omits."""
    if reference not in _PARAMS:
        if reference in REFERENCE_MODELS:
            module = REFERENCE_MODELS.get(reference).build(device="meta")
        else:
            module = build(zoo.get(reference), device="meta")
        omitted = {key: exception.omitted(module) for key, exception in PARAMS_EXCEPTIONS.items()}
        _PARAMS[reference] = (sum(p.numel() for p in module.parameters()), omitted)
    return _PARAMS[reference]


def _known(reference: str) -> bool:
    return reference in REFERENCE_MODELS or reference in ZOO_FAMILIES and reference in zoo.list_zoo()


def _number(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _params_problem(reference: str, row: dict[str, str], params_text: str | None) -> str:
    """Empty if the built reference matches the row's published parameters, else the reason."""
    published = _number(params_text)
    if published is None:
        return ""
    built, omitted = reference_params(reference)
    if abs(built / 1e6 - published) <= PARAMS_TOLERANCE * published:
        return ""
    for key, count in omitted.items():
        explained = abs((built - count) / 1e6 - published) <= PARAMS_TOLERANCE * published
        if PARAMS_EXCEPTIONS[key].covers(row) and explained:
            return ""
    return f"params mismatch: built {built / 1e6:.2f}M vs published {published}M"


def _source(row: dict[str, str]) -> str:
    parts = [row.get("source_repo", ""), row.get("source_path", "")]
    commit = row.get("source_commit", "")
    text = " ".join(part for part in parts if part)
    if commit:
        text += f" @ {commit}"
    if row.get("source_table"):
        text += f", {row['source_table']}"
    return text


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [dict(row) for row in reader]
        return list(reader.fieldnames or []), rows


@dataclass(frozen=True)
class _Setting:
    resolution: str
    batch: int
    precision: str
    runtime: str
    device: str
    threads: str
    latency_ms: float
    derivation: str


# -- per-target regime rules: a row -> its setting, or the reason it is skipped ---------------


def _setting_v100(row: dict[str, str]) -> _Setting | str:
    runtime = row["runtime"]
    batch = _number(row["batch_size"])
    if runtime.startswith("Paddle Inference + TensorRT") and row["precision"].startswith("FP32"):
        if batch not in (1, 4, 8) or _number(row["latency_ms"]) is None:
            return "Paddle TensorRT row without batch 1/4/8 latency"
        return _Setting(row["resolution"], int(batch), "fp32", "paddle-tensorrt", "V100", "",
                        float(row["latency_ms"]), "")
    if runtime.startswith("PyTorch, torch.jit.trace") and row["precision"].startswith("AMP"):
        throughput = _number(row["throughput_img_s"])
        if batch is None or throughput is None:
            return "throughput row without batch size"
        return _Setting(row["resolution"], int(batch), "amp", "pytorch-jit", "V100", "",
                        batch * 1000.0 / throughput, "batch_size x 1000 / throughput_img_s")
    return "batch size and precision not stated (ToMe README throughputs)"


def _setting_iphone12(row: dict[str, str]) -> _Setting | str:
    latency = _number(row["latency_ms"])
    if latency is None:
        return "no latency"
    # "224 (per maintainer, issue #9)": the leading number is the input size; empty where not stated.
    resolution = row["input_resolution"].split(" ", 1)[0]
    return _Setting(resolution if resolution.isdigit() else "", 1, "fp32", "coreml", "iPhone 12 (A14)", "", latency,
                    "")


def _setting_xeon(row: dict[str, str]) -> _Setting | str:
    runtime, precision = row["runtime"], row["precision"]
    batch = _number(row["batch_size"])
    if batch is None or precision not in ("FP32", "INT8"):
        return "batch size or precision not stated (PULC task models, OpenVINO PP-LCNetV2)"
    if runtime == "Paddle Inference + MKLDNN":
        threads = row["threads_or_cores"].split()[0]
        return _Setting(row["resolution"], int(batch), "fp32", "paddle-mkldnn", "Xeon Gold 6148", threads,
                        float(row["latency_ms"]), "")
    throughput = _number(row["throughput_img_s"])
    instances = int(row["instances"].split()[0])
    cores = row["threads_or_cores"].split()[0]
    framework = {"TensorFlow": "tensorflow", "Keras": "keras", "PyTorch": "pytorch", "ONNX": "onnxruntime"}[
        runtime.split()[0]]
    mode = runtime.rsplit("example: ", 1)[-1].strip()
    if framework == "pytorch":
        mode = "ptq" if "PTQ" in runtime else "qat"
    token = framework if precision == "FP32" or framework in ("tensorflow", "keras") else f"{framework}-{mode}"
    return _Setting("", int(batch), precision.lower(), token, "Xeon Platinum 8480+", cores,
                    instances * batch * 1000.0 / throughput,
                    f"instances ({instances}) x batch_size x 1000 / throughput_img_s (aggregate throughput of "
                    f"{instances} independent {cores}-core instances)")


def _setting_zcu104(row: dict[str, str]) -> _Setting | str:
    version = row["vitis_ai_version"]
    latency = _number(row["e2e_latency_ms_1thread"])
    derivation = ""
    if latency is None:
        fps = _number(row["e2e_fps_single_thread"])
        if fps is None:
            return "no latency or single-thread FPS"
        latency, derivation = 1000.0 / fps, "1000 / e2e_fps_single_thread (one thread, batch 1)"
    return _Setting(row["input_h"].removesuffix(".0"), 1, "int8", f"vitis-ai-{version}", "ZCU104 (2 x B4096 DPU)",
                    "1", latency, derivation)


def _zcu104_pick(row: dict[str, str]) -> Pick | str:
    # Standard names read F_M_(D)_H_W_(P)_C_V: the network is everything before the dataset field.
    name = row["standard_name"]
    network, dataset, rest = name.partition("_imagenet_")
    if not dataset:
        return "not an ImageNet classifier (detection, segmentation, re-id, ... task model)"
    if len(rest.split("_")) > 3:
        return "pruned model (pruned channel counts not published)"
    pick = name_table("zcu104").models.get(network)
    return pick if pick is not None else "no reference model for this network (e.g. MobileNet-EdgeTPU)"


_SETTINGS: dict[str, Callable[[dict[str, str]], _Setting | str]] = {
    "v100": _setting_v100,
    "iphone12": _setting_iphone12,
    "xeon": _setting_xeon,
    "zcu104": _setting_zcu104,
}


def _pick(target: str, row: dict[str, str]) -> Pick | str:
    model = row["model"]
    if target == "zcu104":
        return _zcu104_pick(row)
    pick = name_table(target).pick(model, row.get("runtime", ""))
    if pick is None:
        for prefix, reason in skip_reasons().items():
            if model.startswith(prefix):
                return reason
        return f"no reference model written for the {row.get('family') or model} family"
    return pick


def _published_rows(target: str, source_dir: Path,
                    supplement_dir: Path | None) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of ``source_dir/<target>.csv``, then those of the supplement's file if it has one."""
    header, rows = _read(source_dir / f"{target}.csv")
    extra = supplement_dir / f"{target}.csv" if supplement_dir is not None else None
    if extra is not None and extra.is_file():
        extra_header, extra_rows = _read(extra)
        if extra_header != header:
            raise ConfigError(f"its columns {extra_header} differ from those of {source_dir / f'{target}.csv'}: "
                              f"{header}", source=str(extra))
        rows += extra_rows
    return header, rows


def select(target: str, source_dir: Path, supplement_dir: Path | None = SUPPLEMENT_DIR) -> Selection:
    """The calibration rows of ``target`` chosen from ``source_dir/<target>.csv`` and the supplement's."""
    header, rows = _published_rows(target, source_dir, supplement_dir)
    renamed = {name: f"published_{name}" if name in REQUIRED_COLUMNS and name != "model" else name
               for name in header}
    columns = [*REQUIRED_COLUMNS, *(renamed[name] for name in header if name != "model")]
    kept: list[dict[str, str]] = []
    skipped: list[tuple[str, str]] = []
    tensorflow_figures: set[tuple[str, str, str]] = set()
    for row in rows:
        model = row["model"]
        setting = _SETTINGS[target](row)
        if isinstance(setting, str):
            skipped.append((model, setting))
            continue
        pick = _pick(target, row)
        if isinstance(pick, str):
            skipped.append((model, pick))
            continue
        if not _known(pick.reference):
            skipped.append((model, f"reference {pick.reference} not written"))
            continue
        resolution = setting.resolution.removesuffix(".0") if _number(setting.resolution) else ""
        resolution = resolution or str(pick.resolution or _default_resolution(pick.reference))
        problem = _params_problem(pick.reference, row, row.get("params_M"))
        if problem:
            skipped.append((model, problem))
            continue
        figure = (model, setting.precision, _fmt(setting.latency_ms))
        if setting.runtime == "tensorflow":
            tensorflow_figures.add(figure)
        if setting.runtime == "keras" and figure in tensorflow_figures:
            skipped.append((model, "Keras row repeating the TensorFlow row's figure"))
            continue
        out = {
            "model": model,
            "family": reference_family(pick.reference),
            "reference": pick.reference,
            "resolution": resolution,
            "batch_size": str(setting.batch),
            "precision": setting.precision,
            "runtime": setting.runtime,
            "device": setting.device,
            "threads": setting.threads,
            "latency_ms": _fmt(setting.latency_ms),
            "latency_derivation": setting.derivation,
            "source": _source(row),
        }
        out.update({renamed[name]: row[name] or "" for name in header if name != "model"})
        kept.append(out)
    doubtful = _no_slower_at_larger_input(kept)
    skipped += [(row["model"], reason) for index, reason in doubtful.items() for row in [kept[index]]]
    kept = [row for index, row in enumerate(kept) if index not in doubtful]
    return Selection(target, columns, kept, skipped)


def _no_slower_at_larger_input(rows: list[dict[str, str]]) -> dict[int, str]:
    """Index -> reason for the rows of a network whose input is in doubt.

    A network listed at a larger input than the same network in the same setting but published no slower at
    some batch size was not measured at that input; its rows at the other batch sizes come from the same
    table line and are dropped with it. PaddleClas lists Fix_ResNeXt101_32x48d_wsl at 320 px (2x the FLOPs of
    ResNeXt101_32x48d_wsl at 224 px) at 55.0 / 122.6 / 204.7 ms for batch 1 / 4 / 8 against 69.8 / 121.2 /
    205.6 ms.
    """
    def setting(row: dict[str, str]) -> tuple[str, ...]:
        return row["reference"], row["batch_size"], row["precision"], row["runtime"], row["device"], row["threads"]

    reasons: dict[tuple[str, str], str] = {}
    for row in rows:
        for other in rows:
            if (setting(other) == setting(row) and int(other["resolution"]) < int(row["resolution"])
                    and float(row["latency_ms"]) <= float(other["latency_ms"])):
                reasons[row["model"], row["resolution"]] = (
                    f"published no slower at {row['resolution']} px than {other['model']} at {other['resolution']} "
                    f"px (same network and setting, batch {row['batch_size']}): input size in doubt")
    return {index: reasons[row["model"], row["resolution"]] for index, row in enumerate(rows)
            if (row["model"], row["resolution"]) in reasons}


def _default_resolution(reference: str) -> int:
    if reference in REFERENCE_MODELS:
        return REFERENCE_MODELS.get(reference).resolution
    return zoo.get(reference).input.resolution


def _csv_text(selection: Selection) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=selection.columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(selection.rows)
    return buffer.getvalue()


def _summary(selections: list[Selection]) -> str:
    lines = ["# Calibration rows: what was used and what was skipped",
             "",
             "Generated by `python -m nas.latency.calibration.select`; do not edit by hand.",
             ""]
    for selection in selections:
        families = Counter(row["family"] for row in selection.rows)
        regimes = Counter((row["device"], row["runtime"], row["precision"], row["batch_size"])
                          for row in selection.rows)
        lines += [f"## {selection.target}", "",
                  f"{len(selection.rows)} rows used, {len(selection.skipped)} skipped.", "",
                  "| family | rows |", "| --- | --- |"]
        lines += [f"| {family} | {count} |" for family, count in sorted(families.items())]
        lines += ["", "| device | runtime | precision | batch | rows |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {device} | {runtime} | {precision} | {batch} | {count} |"
                  for (device, runtime, precision, batch), count in sorted(regimes.items())]
        reasons: dict[str, list[str]] = {}
        for model, reason in selection.skipped:
            reasons.setdefault(reason, [])
            if model not in reasons[reason]:
                reasons[reason].append(model)
        lines += ["", "Skipped:", ""]
        for reason, models in sorted(reasons.items()):
            count = sum(1 for _, r in selection.skipped if r == reason)
            lines.append(f"- {reason} ({count} rows): {', '.join(models)}")
        lines.append("")
    return "\n".join(lines)


def write(source_dir: Path, out_dir: Path, supplement_dir: Path | None = SUPPLEMENT_DIR) -> list[Selection]:
    """Select every target's rows from ``source_dir`` (and ``supplement_dir``) and write the CSVs and
    ``selection.md`` to ``out_dir``."""
    selections = [select(target, source_dir, supplement_dir) for target in TARGETS]
    out_dir.mkdir(parents=True, exist_ok=True)
    for selection in selections:
        (out_dir / f"{selection.target}.csv").write_text(_csv_text(selection), encoding="utf-8")
    (out_dir / "selection.md").write_text(_summary(selections), encoding="utf-8")
    return selections


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: regenerate the calibration CSVs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=_repo_root().parent / "shared" / "calibration",
                        help="folder of the published tables (default: ../shared/calibration)")
    parser.add_argument("--supplement", type=Path, default=SUPPLEMENT_DIR,
                        help="published rows the shared tables lack (default: predictors/calibration/supplement)")
    parser.add_argument("--out", type=Path, default=_repo_root() / "predictors" / "calibration",
                        help="output folder (default: predictors/calibration)")
    args = parser.parse_args(argv)
    for selection in write(args.source, args.out, args.supplement):
        print(f"{selection.target}: {len(selection.rows)} rows used, {len(selection.skipped)} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
