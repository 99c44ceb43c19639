"""Regenerate ``predictors/calibration/<target>.csv`` from the published tables in ``../shared/calibration``.

Run ``python -m nas.latency.models.select [--source DIR]``. Published rows the shared tables lack (MobileOne
and FastViT on the iPhone 12 Pro) are kept in ``predictors/calibration/supplement/<target>.csv``, in the
shared table's columns with their sources, and are read after it. The rules, per source row:

1. The setting must be known and be the target's measurement regime (see ``_setting_<target>``): a row
   whose batch size, precision or runtime is not stated is skipped.
2. The published model name must be in the target's table below, which maps it to the traced
   reference (a zoo name or a ``REFERENCE_MODELS`` name) and, where the row does not state it, the
   resolution the model is defined for. Names not listed are skipped with the reason given in
   ``_UNUSED`` (task models, pruned models, detection/segmentation, families not written here).
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from nas import zoo
from nas.build import build
from nas.errors import ConfigError
from nas.latency.calibration import REQUIRED_COLUMNS
from nas.latency.models import REFERENCE_MODELS

__all__ = ["PARAMS_EXCEPTIONS", "PARAMS_TOLERANCE", "SUPPLEMENT_DIR", "TARGETS", "ZOO_FAMILIES", "ParamsException",
           "Selection", "reference_family", "reference_params", "select", "write"]

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


# -- the mapping tables -------------------------------------------------------------------

_V100: dict[str, Pick] = {
    **{name: Pick(ref) for name, ref in {
        "ResNet18": "resnet18", "ResNet18_vd": "resnet18_vd", "ResNet34": "resnet34", "ResNet34_vd": "resnet34_vd",
        "ResNet34_vd_ssld": "resnet34_vd", "ResNet50": "resnet50", "ResNet50_vc": "resnet50_vc",
        "ResNet50_vd": "resnet50_vd", "ResNet50_vd_ssld": "resnet50_vd", "ResNet101": "resnet101",
        "ResNet101_vd": "resnet101_vd", "ResNet101_vd_ssld": "resnet101_vd", "ResNet152": "resnet152",
        "ResNet152_vd": "resnet152_vd", "ResNet200_vd": "resnet200_vd", "SE_ResNet18_vd": "se_resnet18_vd",
        "SE_ResNet34_vd": "se_resnet34_vd", "SE_ResNet50_vd": "se_resnet50_vd",
        "ResNeXt50_32x4d": "resnext50_32x4d", "ResNeXt50_vd_32x4d": "resnext50_vd_32x4d",
        "ResNeXt50_64x4d": "resnext50_64x4d", "ResNeXt50_vd_64x4d": "resnext50_vd_64x4d",
        "ResNeXt101_32x4d": "resnext101_32x4d", "ResNeXt101_vd_32x4d": "resnext101_vd_32x4d",
        "ResNeXt101_64x4d": "resnext101_64x4d", "ResNeXt101_vd_64x4d": "resnext101_vd_64x4d",
        "ResNeXt152_32x4d": "resnext152_32x4d", "ResNeXt152_vd_32x4d": "resnext152_vd_32x4d",
        "ResNeXt152_64x4d": "resnext152_64x4d", "ResNeXt152_vd_64x4d": "resnext152_vd_64x4d",
        "ResNeXt101_32x8d_wsl": "resnext101_32x8d", "ResNeXt101_32x16d_wsl": "resnext101_32x16d",
        "ResNeXt101_32x32d_wsl": "resnext101_32x32d", "ResNeXt101_32x48d_wsl": "resnext101_32x48d",
        "Fix_ResNeXt101_32x48d_wsl": "resnext101_32x48d",
        "SE_ResNeXt50_32x4d": "se_resnext50_32x4d", "SE_ResNeXt50_vd_32x4d": "se_resnext50_vd_32x4d",
        "SE_ResNeXt101_32x4d": "se_resnext101_32x4d",
        "MobileNetV1_x0_25": "mobilenetv1_025", "MobileNetV1_x0_5": "mobilenetv1_050",
        "MobileNetV1_x0_75": "mobilenetv1_075", "MobileNetV1": "mobilenetv1_100", "MobileNetV1_ssld": "mobilenetv1_100",
        "MobileNetV2_x0_25": "mobilenetv2_025", "MobileNetV2_x0_5": "mobilenetv2_050",
        "MobileNetV2_x0_75": "mobilenetv2_075", "MobileNetV2": "mobilenetv2_100", "MobileNetV2_ssld": "mobilenetv2_100",
        "MobileNetV2_x1_5": "mobilenetv2_150", "MobileNetV2_x2_0": "mobilenetv2_200",
        **{f"MobileNetV3_{size}_x{scale}": f"mobilenetv3_{size}_{scale.replace('_', '')}"
           for size in ("large", "small") for scale in ("0_35", "0_5", "0_75", "1_0", "1_25")},
        "MobileNetV3_large_x1_0_ssld": "mobilenetv3_large_10", "MobileNetV3_small_x1_0_ssld": "mobilenetv3_small_10",
        **{f"EfficientNetB{index}": f"efficientnet_b{index}" for index in range(8)},
        "GhostNet_x0_5": "ghostnet_050", "GhostNet_x1_0": "ghostnet_100", "GhostNet_x1_3": "ghostnet_130",
        "GhostNet_x1_3_ssld": "ghostnet_130",
        "ShuffleNetV2_x0_25": "shufflenetv2_025", "ShuffleNetV2_x0_33": "shufflenetv2_033",
        "ShuffleNetV2_x0_5": "shufflenetv2_050", "ShuffleNetV2": "shufflenetv2_100",
        "ShuffleNetV2_x1_5": "shufflenetv2_150", "ShuffleNetV2_x2_0": "shufflenetv2_200",
        "ShuffleNetV2_swish": "shufflenetv2_100_swish",
        "VGG11": "vgg11", "VGG13": "vgg13", "VGG16": "vgg16", "VGG19": "vgg19",
        "RegNetX_200MF": "regnetx_200mf", "RegNetX_4GF": "regnetx_4gf", "RegNetX_32GF": "regnetx_32gf",
        **{f"PPLCNet_x{scale}": f"pplcnet_{scale.replace('_', '')}"
           for scale in ("0_25", "0_35", "0_5", "0_75", "1_0", "1_5", "2_0")},
        "DenseNet121": "densenet121", "DenseNet161": "densenet161", "DenseNet169": "densenet169",
        "DenseNet201": "densenet201", "DenseNet264": "densenet264",
        "GoogLeNet": "googlenet", "InceptionV3": "inception_v3", "InceptionV4": "inception_v4",
        "Xception41": "xception",
        **{f"RepVGG_{variant}": f"repvgg_{variant.lower()}"
           for variant in ("A0", "A1", "A2", "B0", "B1", "B1g2", "B1g4", "B2", "B2g4", "B3", "B3g4")},
        "DeiT_tiny_patch16_224": "deit_tiny", "DeiT_small_patch16_224": "deit_small",
        "DeiT_base_patch16_224": "deit_base", "DeiT_base_patch16_384": "deit_base",
        "DeiT_tiny_distilled_patch16_224": "deit_tiny_distilled",
        "DeiT_small_distilled_patch16_224": "deit_small_distilled",
        "DeiT_base_distilled_patch16_224": "deit_base_distilled",
        "DeiT_base_distilled_patch16_384": "deit_base_distilled_384",
        "ViT_small_patch16_224": "vit_small_patch16_paddle", "ViT_base_patch16_224": "vit_base_patch16",
        "ViT_base_patch16_384": "vit_base_patch16_384", "ViT_base_patch32_384": "vit_base_patch32_384",
        "ViT_large_patch16_224": "vit_large_patch16", "ViT_large_patch16_384": "vit_large_patch16_384",
        "ViT_large_patch32_384": "vit_large_patch32_384",
        "Res2Net50_26w_4s": "res2net50_26w_4s", "Res2Net50_14w_8s": "res2net50_14w_8s",
        "Res2Net50_vd_26w_4s": "res2net50_vd_26w_4s", "Res2Net50_vd_26w_4s_ssld": "res2net50_vd_26w_4s",
        "Res2Net101_vd_26w_4s": "res2net101_vd_26w_4s", "Res2Net101_vd_26w_4s_ssld": "res2net101_vd_26w_4s",
        "Res2Net200_vd_26w_4s": "res2net200_vd_26w_4s", "Res2Net200_vd_26w_4s_ssld": "res2net200_vd_26w_4s",
        "ResNeSt50_fast_1s1x64d": "resnest50_fast_1s1x64d", "ResNeSt50": "resnest50", "ResNeSt101": "resnest101",
        "PeleeNet": "peleenet",
        "AlexNet": "alexnet", "SqueezeNet1_0": "squeezenet1_0", "SqueezeNet1_1": "squeezenet1_1",
        **{f"EfficientViT-M{index}": f"efficientvit_m{index}" for index in range(6)},
    }.items()},
}

_IPHONE12: dict[str, Pick] = {
    "EfficientFormer-L1": Pick("efficientformer_l1", 224),
    "EfficientFormer-L3": Pick("efficientformer_l3", 224),
    "EfficientFormer-L7": Pick("efficientformer_l7", 224),
    "MobileNetV2 (x1.0)": Pick("mobilenetv2_100", 224),
    "MobileNetV2 (x1.4)": Pick("mobilenetv2_140", 224),
    "EfficientFormerV2-S0": Pick("efficientformerv2_s0", 224),
    "EfficientFormerV2-S1": Pick("efficientformerv2_s1", 224),
    "EfficientFormerV2-S2": Pick("efficientformerv2_s2", 224),
    "EfficientFormerV2-L": Pick("efficientformerv2_l", 224),
    **{f"MobileOne-S{index}": Pick(f"mobileone_s{index}", 224) for index in range(5)},
    **{f"FastViT-{variant}": Pick(f"fastvit_{variant.lower()}", 256)
       for variant in ("T8", "T12", "S12", "SA12", "SA24", "SA36", "MA36")},
}

# Intel Neural Compressor rows state neither resolution nor variant: each model's canonical ImageNet
# input is used; Keras/TF "ResNet50"/"ResNet101" are the Keras applications (stride in the first 1x1).
_XEON: dict[str, Pick] = {
    **{f"PPLCNet_x{scale}": Pick(f"pplcnet_{scale.replace('_', '')}", 224)
       for scale in ("0_25", "0_35", "0_5", "0_75", "1_0", "1_5", "2_0", "2_5")},
    "ResNet50 v1.0": Pick("resnet50_v1", 224),
    "ResNet50 v1.5": Pick("resnet50", 224),
    "ResNet50 V1.5": Pick("resnet50", 224),
    "ResNet50 V1.5 MLPerf": Pick("resnet50", 224),
    "ResNet50 V1.5 (ONNX Model Zoo)": Pick("resnet50", 224),
    "ResNet101": Pick("resnet101_v1", 224),
    "Inception V1": Pick("inception_v1", 224),
    "Inception V2": Pick("inception_v2", 224),
    "Inception V3": Pick("inception_v3", 299),
    "Inception V4": Pick("inception_v4", 299),
    "Inception ResNet V2": Pick("inception_resnet_v2", 299),
    "DenseNet-161": Pick("densenet161", 224),
    "MobileNet V1": Pick("mobilenetv1_100", 224),
    "MobileNet V2": Pick("mobilenetv2_100", 224),
    "VGG16": Pick("vgg16", 224),
    "VGG19": Pick("vgg19", 224),
    "VGG16 (ONNX Model Zoo)": Pick("vgg16", 224),
    "ResNet50": Pick("resnet50_v1", 224),
    "ResNetV2 50": Pick("resnetv2_50", 224),
    "ResNetV2 101": Pick("resnetv2_101", 224),
    "ResNetV2 152": Pick("resnetv2_152", 224),
    "ResNet18": Pick("resnet18", 224),
    "ResNet18 PT2E": Pick("resnet18", 224),
    "ResNeXt101_32x8d": Pick("resnext101_32x8d", 224),
    "ResNeSt50": Pick("resnest50", 224),
    "PeleeNet": Pick("peleenet", 224),
    "ShuffleNet V2 (ONNX Model Zoo)": Pick("shufflenetv2_100", 224),
    "GoogleNet (ONNX Model Zoo)": Pick("googlenet", 224),
    "Inception V1 (ONNX Model Zoo)": Pick("googlenet", 224),
    # The zoo's "SqueezeNet 1.0" files (squeezenet1.0-*.onnx) hold the 1.1 graph: 64 3x3 kernels in the first
    # conv (onnx/models issue #578, "SqueezeNet False Advertising", 2022-11-20).
    "SqueezeNet (ONNX Model Zoo)": Pick("squeezenet1_1", 224),
    "AlexNet (ONNX Model Zoo)": Pick("alexnet_grouped", 224),
    "CaffeNet (ONNX Model Zoo)": Pick("caffenet", 224),
    "DenseNet (ONNX Model Zoo)": Pick("densenet121", 224),
}
# PyTorch's torchvision ResNet-50 in the INC table is v1.5; keyed by (model, runtime prefix) below.
_XEON_BY_RUNTIME: dict[tuple[str, str], Pick] = {
    ("ResNet50", "PyTorch"): Pick("resnet50", 224),
    ("Inception V3", "PyTorch"): Pick("inception_v3", 299),
}

# Vitis AI model zoo: keyed by the standard name's model field (framework prefix kept: cf / tf / tf2 / pt).
_ZCU104: dict[str, Pick] = {
    "cf_resnet18": Pick("resnet18"),
    "cf_inceptionv1": Pick("googlenet"),
    "tf_inceptionv1": Pick("inception_v1"),
    "cf_inceptionv2": Pick("inception_v2"),
    "tf_inceptionv2": Pick("inception_v2"),
    "cf_inceptionv4": Pick("inception_v4"),
    "tf_inceptionv4": Pick("inception_v4"),
    "tf_inceptionresnetv2": Pick("inception_resnet_v2"),
    "cf_mobilenetv2": Pick("mobilenetv2_100"),
    "tf_mobilenetv2_1.0": Pick("mobilenetv2_100"),
    "tf_mobilenetv2_1.4": Pick("mobilenetv2_140"),
    "cf_squeezenet": Pick("squeezenet1_1"),
    "pt_squeezenet": Pick("squeezenet1_1"),
    "tf_mobilenetv1_0.25": Pick("mobilenetv1_025"),
    "tf_mobilenetv1_0.5": Pick("mobilenetv1_050"),
    "tf_mobilenetv1_1.0": Pick("mobilenetv1_100"),
    "tf2_mobilenetv1": Pick("mobilenetv1_100"),
    "tf_resnetv1_50": Pick("resnet50_slim"),
    "tf_resnetv1_101": Pick("resnet101_slim"),
    "tf_resnetv1_152": Pick("resnet152_slim"),
    "tf_resnetv2_50": Pick("resnetv2_50"),
    "tf_resnetv2_101": Pick("resnetv2_101"),
    "tf_resnetv2_152": Pick("resnetv2_152"),
    "tf_vgg16": Pick("vgg16"),
    "tf_vgg19": Pick("vgg19"),
}


# -- helpers --------------------------------------------------------------------------------


def reference_family(reference: str) -> str:
    """The architecture family of a reference or zoo model."""
    if reference in REFERENCE_MODELS:
        return REFERENCE_MODELS[reference].family
    return ZOO_FAMILIES[reference]


_PARAMS: dict[str, tuple[int, dict[str, int]]] = {}


def reference_params(reference: str) -> tuple[int, dict[str, int]]:
    """Parameters of the built reference, and the parameters each :data:`PARAMS_EXCEPTIONS` entry omits."""
    if reference not in _PARAMS:
        if reference in REFERENCE_MODELS:
            module = REFERENCE_MODELS[reference].build(device="meta")
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
    return _Setting("", 1, "fp32", "coreml", "iPhone 12 (A14)", "", latency, "")


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
    pick = _ZCU104.get(network)
    return pick if pick is not None else "no reference model for this network (e.g. MobileNet-EdgeTPU)"


_SETTINGS: dict[str, Callable[[dict[str, str]], _Setting | str]] = {
    "v100": _setting_v100,
    "iphone12": _setting_iphone12,
    "xeon": _setting_xeon,
    "zcu104": _setting_zcu104,
}

_UNUSED: dict[str, str] = {
    "PULC": "task-specific PULC model (task head, input size not stated)",
    "EfficientNetB0_small": "PaddleClas-specific B0 variant without a published structure",
    "Xception41_deeplab": "DeepLab-style aligned Xception not written as a reference model",
    "Xception65": "DeepLab-style aligned Xception not written as a reference model",
    "Xception71": "DeepLab-style aligned Xception not written as a reference model",
    "DPN": "DPN not written as a reference model (the DenseNet table repeats the DPN rows with other figures)",
}


def _pick(target: str, row: dict[str, str]) -> Pick | str:
    model = row["model"]
    if target == "zcu104":
        return _zcu104_pick(row)
    if target == "xeon":
        for (name, prefix), pick in _XEON_BY_RUNTIME.items():
            if model == name and row["runtime"].startswith(prefix):
                return pick
        table = _XEON
    else:
        table = {"v100": _V100, "iphone12": _IPHONE12}[target]
    pick = table.get(model)
    if pick is None:
        for prefix, reason in _UNUSED.items():
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
        return REFERENCE_MODELS[reference].resolution
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
             "Generated by `python -m nas.latency.models.select`; do not edit by hand.",
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
