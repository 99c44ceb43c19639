"""The public API: predicted latency of an Arch or any traceable module on a hardware target.

:func:`predict` traces the model (:func:`nas.cost.profile` for an Arch,
:func:`nas.cost.profile_module` for a module), prices its ops under the target
setting's fitted coefficients and returns a :class:`Prediction` with a
breakdown by op kind and the predictor's own validation figures, so a number is
never shown without how well that predictor did on models it was not fitted on.

:func:`predict_many` scores many Archs at once (see :mod:`nas.latency.batch`).

Example:
    >>> import nas
    >>> from nas.latency import predict
    >>> result = predict(nas.zoo.get("poolformer_s12"), target="v100")
    >>> result.latency_ms > 0 and result.target == "v100"
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import Arch
from nas.cost import profile, profile_module
from nas.errors import NasError
from nas.latency.opmodel import breakdown_ms, evaluate, features, params_of
from nas.latency.optable import build_table
from nas.latency.targets import Setting, Target, get_target

__all__ = ["Prediction", "predict", "predict_many", "resolve_setting", "validation_summary"]


@dataclass(frozen=True)
class Prediction:
    """A predicted latency.

    Attributes:
        latency_ms: one forward pass of ``batch`` inputs, milliseconds.
        target: the target's name.
        setting: the setting (runtime, precision) it was predicted for.
        batch: inputs per forward pass.
        breakdown: milliseconds per op kind, plus ``fixed`` (per-inference constant), ``input`` (bringing
            the input in), and where they apply ``launch_bound`` (issuing kernels exceeds running them) and
            ``transfer`` (switching to the fallback processor); they add up to ``latency_ms``.
        validation: the predictor's validation figures (leave-one-family-out and in-sample), or ``None`` if
            the setting was never fitted.
    """

    latency_ms: float
    target: str
    setting: str
    batch: int
    breakdown: dict[str, float]
    validation: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for JSON)."""
        return {"latency_ms": self.latency_ms, "target": self.target, "setting": self.setting, "batch": self.batch,
                "breakdown": dict(self.breakdown), "validation": self.validation}


def resolve_setting(target: str | Target, setting: str | None = None) -> Setting:
    """The setting ``setting`` (default: the target's default) of ``target`` (a name or a :class:`Target`).

    Raises:
        UnknownKindError: unknown target or setting (the message lists the known ones).
    """
    resolved = get_target(target) if isinstance(target, str) else target
    if not isinstance(resolved, Target):
        raise NasError(f"target must be a target name or a Target, got {type(target).__name__}")
    return resolved.setting(setting)


def validation_summary(setting: Setting) -> dict[str, Any] | None:
    """The setting's stored validation figures without the per-row predictions."""
    if setting.validation is None:
        return None
    keep = ("method", "date", "rows", "families", "lofo", "lofo_by_batch", "architectures", "lofo_by_architecture",
            "held_out", "in_sample")
    return {key: setting.validation[key] for key in keep if key in setting.validation}


def _check_batch(batch: int) -> None:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise NasError(f"batch must be an int >= 1, got {batch!r}")


def predict(model_or_arch: Arch | nn.Module, input_shape: Sequence[int] | None = None, *, target: str | Target,
            batch: int = 1, setting: str | None = None) -> Prediction:
    """Predict the latency of an Arch or a module on ``target``.

    Args:
        model_or_arch: an :class:`~nas.arch.Arch` (traced unit by unit, cached) or any module taking one tensor
            (traced whole).
        input_shape: the module's input shape without the batch dimension, e.g. ``(3, 224, 224)``; required for
            a module, not allowed for an Arch (it has its own input).
        target: a target name (``nas.latency.list_targets()``) or a :class:`~nas.latency.targets.Target`.
        batch: inputs per forward pass.
        setting: the target's setting (default: its ``default_setting``).

    Raises:
        UnknownKindError: unknown target or setting.
        UnsupportedOpError: the model has an op the setting cannot run.
        NasError: bad ``batch`` / ``input_shape``, or the model cannot be traced.
    """
    _check_batch(batch)
    chosen = resolve_setting(target, setting)
    if isinstance(model_or_arch, Arch):
        if input_shape is not None:
            raise NasError("input_shape is given by the Arch itself; pass it only for a plain nn.Module")
        report = profile(model_or_arch, batch=batch)
        spec = model_or_arch.input
        input_elements = spec.channels * spec.resolution * spec.resolution
        by_unit = True
    elif isinstance(model_or_arch, nn.Module):
        if input_shape is None:
            raise NasError("input_shape (without the batch dimension, e.g. (3, 224, 224)) is required for an "
                           "nn.Module")
        report = profile_module(model_or_arch, tuple(input_shape), batch=batch, dtype=torch.float32)
        input_elements = math.prod(input_shape)
        by_unit = False
    else:
        raise NasError(f"expected an Arch or an nn.Module, got {type(model_or_arch).__name__}")
    feats = features(build_table(report.ops, chosen, by_unit=by_unit), chosen,
                     input_bytes=4.0 * batch * input_elements)
    params = params_of(chosen.fitted)
    latency_s = float(evaluate(feats, params)[0])
    breakdown = breakdown_ms(feats, params)
    breakdown["fixed"] = params.fixed_s * 1e3
    breakdown["input"] = float(feats.input_bytes[0] * params.input_s_per_byte * 1e3)
    return Prediction(latency_s * 1e3, chosen.target, chosen.name, batch, breakdown, validation_summary(chosen))


def predict_many(archs: Sequence[Arch], *, target: str | Target, batch: int = 1,
                 setting: str | None = None) -> np.ndarray:
    """Predicted latency (ms) of each Arch, as :func:`predict` would give it, cached per unit.

    Repeated blocks (within and across Archs) cost a dictionary lookup once their unit has been priced;
    see :class:`nas.latency.batch.BatchPredictor`.

    Returns:
        float64 array of ``len(archs)`` latencies in milliseconds.
    """
    from nas.latency.batch import batch_predictor

    _check_batch(batch)
    return batch_predictor(resolve_setting(target, setting), batch)(archs)
