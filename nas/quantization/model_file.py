"""Model files for PTQ: the float model a calibration starts from, and the calibrated model it writes.

A **float model** comes from a checkpoint (:func:`load_float`):

* a stand-alone training's ``model.pt`` (``nas train``; a run directory stands for its ``model.pt``): it holds
  the Arch it was trained at (the proxied one) and the Arch asked for; either may be named, and the trained
  Arch is the one built. A model trained with quantisation (``nas train --precision``) gives its float
  weights: its quantisers' state is dropped, and calibration fixes new ranges at the precision asked for;
* a plain ``state_dict`` file (or a dict with a ``state_dict``/``model`` entry): loaded into ``build(arch)``.

A **calibrated model** is one folder (:func:`save_quantized`):

=============  ==================================================================================================
``model.pt``   self-contained: ``kind: quantized-model``, the Arch at its precision, the state dict (weights and
               every quantiser's ``scale``/``zero_point``/``calibrated`` buffers, and the noisy biases), the
               calibration settings, the layers given a noisy bias, and the accuracies measured; written through
               :func:`nas.supernet.checkpoint.save_checkpoint` (atomic, tensors hashed)
``arch.yaml``  the same Arch, for reading and for the other commands (``nas predict``, ``nas export``)
=============  ==================================================================================================

:func:`load_quantized` reads ``model.pt`` back into a model that computes exactly what was calibrated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.arch import Arch, Precision
from nas.atomic import write_atomic
from nas.build import build
from nas.errors import NasError
from nas.quantization.calibrate import QuantizedModel
from nas.quantization.noisy_bias import attach_noisy_bias
from nas.supernet.checkpoint import read_torch_file, save_checkpoint
from nas.supernet.trainer import MODEL

__all__ = ["QUANTIZED_KIND", "MODEL_FILE", "ARCH_FILE", "LoadedQuantized", "load_float", "save_quantized",
           "load_quantized"]

QUANTIZED_KIND = "quantized-model"
MODEL_FILE = MODEL  # the name a training run gives its model, so a calibrated folder reads like a run's
ARCH_FILE = "arch.yaml"
_QUANTIZERS = (".input_quantizer", ".weight_quantizer")  # the quantised layers' submodules (nas.blocks.fakequant)


def _float_arch(arch: Arch) -> Arch:
    return arch.with_precision(Precision())


def _model_path(checkpoint: str | os.PathLike[str]) -> Path:
    path = Path(checkpoint)
    return path / MODEL_FILE if path.is_dir() else path


def _load_state(arch: Arch, state: Any, path: Path) -> nn.Module:
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise NasError(f"{path}: expected a state_dict (names to tensors), got {type(state).__name__}")
    model = build(arch)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise NasError(f"{path}: checkpoint does not fit Arch {arch.name or arch.id} ({arch.id}): {reason}") from None
    return model.eval()


def _without_quantizers(state: Any) -> Any:
    """A QAT model's state without its quantisers' entries (the float build has none)."""
    if not isinstance(state, dict):
        return state
    return {key: value for key, value in state.items() if not any(f"{name}." in f".{key}" for name in _QUANTIZERS)}


def load_float(arch: Arch, checkpoint: str | os.PathLike[str]) -> tuple[Arch, nn.Module]:
    """The float model of ``arch`` with the weights of ``checkpoint``, and the Arch it was built from.

    Raises:
        CheckpointError: no such file, or not a readable torch file.
        NasError: a calibrated model (not a float one), a model file of another Arch, or weights that do not fit.
    """
    path = _model_path(checkpoint)
    data = read_torch_file(path)
    if isinstance(data, dict) and data.get("kind") == QUANTIZED_KIND:
        raise NasError(f"{path}: a calibrated model already; give the float checkpoint it was calibrated from")
    wanted = _float_arch(arch)
    if isinstance(data, dict) and "arch" in data and "state_dict" in data:
        trained = _float_arch(Arch.from_dict(data["arch"], source=str(path)))
        asked = Arch.from_dict(data.get("source_arch", data["arch"]), source=str(path))
        if wanted.id not in (trained.id, _float_arch(asked).id):
            raise NasError(f"{path}: the weights of Arch {asked.name or asked.id} ({trained.id} as trained), not "
                           f"of {arch.name or arch.id} ({wanted.id})")
        return trained, _load_state(trained, _without_quantizers(data["state_dict"]), path)
    if isinstance(data, dict) and not any(isinstance(value, torch.Tensor) for value in data.values()):
        data = data.get("state_dict", data.get("model", data))
    return wanted, _load_state(wanted, data, path)


def save_quantized(result: QuantizedModel, out: str | os.PathLike[str],
                   metrics: dict[str, float] | None = None) -> tuple[Path, Path]:
    """Write the calibrated model into the folder ``out`` (``model.pt``, then ``arch.yaml``); returns both paths."""
    folder = Path(out)
    payload = {"kind": QUANTIZED_KIND, "arch": result.arch.to_dict(), "state_dict": result.module.state_dict(),
               "calibration": result.settings.to_dict(), "noisy_bias": dict(result.noisy_bias),
               "metrics": dict(metrics or {})}
    save_checkpoint(folder / MODEL_FILE, payload)
    write_atomic(folder / ARCH_FILE, result.arch.to_yaml())
    return folder / MODEL_FILE, folder / ARCH_FILE


@dataclass
class LoadedQuantized:
    """A calibrated model read back: its Arch (with the precision), the module, and what was recorded."""

    arch: Arch
    module: nn.Module
    calibration: dict[str, Any] = field(default_factory=dict)
    noisy_bias: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def load_quantized(path: str | os.PathLike[str]) -> LoadedQuantized:
    """A calibrated model written by :func:`save_quantized` (the folder or its ``model.pt``), in eval mode.

    Raises:
        CheckpointError: no such file, or damaged.
        NasError: not a calibrated model, or its state does not fit its Arch.
    """
    file = _model_path(path)
    data = read_torch_file(file)
    if not isinstance(data, dict) or data.get("kind") != QUANTIZED_KIND:
        raise NasError(f"{file}: not a calibrated model (write one with `nas quantize`)")
    arch = Arch.from_dict(data["arch"], source=str(file))
    module = build(arch)
    attach_noisy_bias(module, data["noisy_bias"])
    try:
        module.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise NasError(f"{file}: state does not fit its Arch {arch.id}: {str(exc).strip().splitlines()[0]}") from None
    return LoadedQuantized(arch, module.eval(), data["calibration"], data["noisy_bias"], data["metrics"])
