"""Which of a setting's coefficients were fitted to measurements and which are priors.

A coefficient that the setting's ``fit.free`` does not match keeps its prior: a physical estimate from the
device facts, never checked against a measurement. ``nas targets`` lists them, so a user sees which
predictions rest on priors. The case that matters most is a fallback processor that no calibration model
uses: on the ZCU104 every op the DPU cannot run (softmax, layer norm, GELU, attention matmuls, FFTs, MoE
routing) runs on the A53, priced by its ``host.*`` coefficients and ``switch_us`` alone, so every transformer
prediction there rests on priors. A setting never fitted has nothing but priors. The efficiencies of a group
whose ops run on another group's kernels (``shared_kernels``) price nothing and are listed as unused.

A coefficient no calibration row can fit may instead be *set from a local measurement*: its value in
``priors`` derived from kernels timed on this project's machine against kernels the setting did fit (the
Xeon settings' attention and softmax / norm / GELU groups, ``bench/xeon_transformer_ratios.py``). The
setting's ``measurement`` block names them under ``coefficients``, next to how, when and where they were
measured; they are listed as measured, not as priors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nas.errors import ConfigError
from nas.latency.targets import Setting

__all__ = ["CoefficientSources", "coefficient_sources", "compact_names", "fallback_prior_ms", "measured_names"]

_HOST = "host."
_FALLBACK_SCALARS = ("switch_us",)


@dataclass(frozen=True)
class CoefficientSources:
    """The coefficients of one setting by where their values come from.

    Attributes:
        fitted: names the fit adjusted to the calibration rows.
        priors: names left at their priors that price some op.
        unused: efficiencies of groups that run on another group's kernels (``shared_kernels``).
        measured: names not fitted whose values were set from a local measurement (``measurement.coefficients``).
        fallback_kinds: op kinds the setting places on its fallback processor (empty without one).
        fallback_device: that processor's name in the target file (empty without one).
        fallback_priors: the priors among the coefficients that price the fallback (``host.*``, ``switch_us``).
    """

    fitted: tuple[str, ...]
    priors: tuple[str, ...]
    unused: tuple[str, ...]
    measured: tuple[str, ...]
    fallback_kinds: tuple[str, ...]
    fallback_device: str
    fallback_priors: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"fitted": list(self.fitted), "priors": list(self.priors), "unused": list(self.unused),
                "measured": list(self.measured), "fallback": None if not self.fallback_kinds else {
                    "device": self.fallback_device, "kinds": list(self.fallback_kinds),
                    "priors": list(self.fallback_priors)}}


def coefficient_sources(setting: Setting) -> CoefficientSources:
    """Split ``setting``'s coefficients into fitted and priors (all priors if it was never fitted)."""
    names = setting.priors.names()
    free = set(setting.free) if setting.coefficients is not None else set()
    unused = tuple(name for name in names if _shared(name, setting.shared_kernels))
    fitted = tuple(name for name in names if name in free)
    measured = measured_names(setting)
    priors = tuple(name for name in names if name not in free and name not in unused and name not in measured)
    fallback = setting.fallback
    if fallback is None:
        return CoefficientSources(fitted, priors, unused, measured, (), "", ())
    fallback_priors = tuple(name for name in priors if name.startswith(_HOST) or name in _FALLBACK_SCALARS)
    return CoefficientSources(fitted, priors, unused, measured, fallback.kinds, fallback.device.name,
                              fallback_priors)


def measured_names(setting: Setting) -> tuple[str, ...]:
    """The coefficients ``setting``'s ``measurement`` block says were set from a local measurement.

    Raises:
        ConfigError: a name is not a coefficient of the setting, or is fitted (``fit.free``), or unused.
    """
    listed = (setting.measurement or {}).get("coefficients", [])
    path = f"{setting.label}.measurement.coefficients"
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise ConfigError("must be a list of coefficient names", path=path)
    names = setting.priors.names()
    for name in listed:
        if name not in names or name in setting.free or _shared(name, setting.shared_kernels):
            raise ConfigError(f"{name!r} is not a coefficient of the setting left out of its fit", path=path)
    return tuple(name for name in names if name in listed)


def _shared(name: str, shared_kernels: dict[str, str]) -> bool:
    """Whether ``name`` is an efficiency of a group whose ops take another group's efficiencies."""
    head, _, group = name.removeprefix(_HOST).partition(".")
    return head in ("compute_efficiency", "memory_efficiency") and group in shared_kernels


def fallback_prior_ms(breakdown: Mapping[str, float], sources: CoefficientSources) -> float:
    """Milliseconds of a prediction's ``breakdown`` priced by fallback priors: its fallback kinds and switches.

    A kind is placed on the fallback processor as a whole, so its share of the breakdown is all fallback time;
    ``transfer`` is the time of the switches between the processors.
    """
    if not sources.fallback_priors:
        return 0.0
    return sum(breakdown.get(kind, 0.0) for kind in (*sources.fallback_kinds, "transfer"))


def compact_names(names: tuple[str, ...], every: tuple[str, ...]) -> list[str]:
    """``names`` shortened: where every name of ``every`` under a dotted prefix is in ``names``, ``prefix.*``.

    Example:
        >>> compact_names(("a.x", "a.y", "b.x", "h.a.x", "h.k"), ("a.x", "a.y", "b.x", "b.y", "h.a.x", "h.k"))
        ['a.*', 'b.x', 'h.*']
    """
    chosen = set(names)
    out: list[str] = []
    for name in every:
        if name not in chosen:
            continue
        parts = name.split(".")
        short = name
        for length in range(1, len(parts)):
            prefix = ".".join(parts[:length]) + "."
            if all(other in chosen for other in every if other.startswith(prefix)):
                short = prefix + "*"
                break
        if short not in out:
            out.append(short)
    return out
