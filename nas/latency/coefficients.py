"""The fitted numbers of a latency predictor, by name, and their flat-vector form for fitting.

A predictor's coefficients are few and physical, so a fitted file reads like a
spec sheet: the fraction of peak compute each group of ops reaches, the fraction
of peak memory bandwidth, the fixed cost of launching one kernel (or DPU
instruction block) per launch group, and a per-inference constant. A target
with a fallback processor (the ZCU104's ARM cores) has a second set for it,
plus the cost of switching between the two.

Parameter names are dotted paths: ``compute_efficiency.conv``, ``memory_efficiency.dwconv``,
``launch_us.vector``, ``kernel_us``, ``saturation_parallelism``, ``fixed_ms``, ``input_ms_per_mb``,
``host.compute_efficiency.special``, ``switch_us``. :meth:`Coefficients.get` / :meth:`Coefficients.replace_values` read
and write them by name, which is how :mod:`nas.latency.calibration.solver` moves between the
dataclass and the optimiser's vector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nas.errors import ConfigError
from nas.latency.kinds import COMPUTE_GROUPS, LAUNCH_GROUPS, OPTIONAL_GROUPS

__all__ = ["UnitCoefficients", "Coefficients"]


def _positive(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"must be a number > 0, got {value!r}", path=path)
    return float(value)


def _groups(data: Any, groups: tuple[str, ...], path: str) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"must be a mapping of {', '.join(groups)}", path=path)
    unknown = sorted(set(data) - set(groups))
    if unknown:
        raise ConfigError(f"unknown group(s) {', '.join(map(str, unknown))}; known: {', '.join(groups)}", path=path)
    missing = [group for group in groups if group not in data and group not in OPTIONAL_GROUPS]
    if missing:
        raise ConfigError(f"missing group(s) {', '.join(missing)}", path=path)
    values = {group: _positive(data[group], f"{path}.{group}") for group in groups if group in data}
    # An optional group left out runs on its leader's kernels (UnitCoefficients.leaders), so it takes its value.
    return {group: values.get(group, values.get(OPTIONAL_GROUPS.get(group, ""), 0.0)) for group in groups}


@dataclass(frozen=True)
class UnitCoefficients:
    """Coefficients of one processor.

    Attributes:
        compute_efficiency: per compute group (:data:`~nas.latency.kinds.COMPUTE_GROUPS`), the fraction of
            the processor's peak throughput an op of that group reaches.
        memory_efficiency: per compute group, the fraction of peak memory bandwidth an op of that group
            reaches (above 1 where its tensors stay in cache).
        launch_us: per launch group (:data:`~nas.latency.kinds.LAUNCH_GROUPS`), microseconds added per
            launched (unfused) op.
        kernel_us: device-side microseconds per launched op (the minimum duration of a GPU kernel), counted
            with the op's execution; with the host's launch cost ``launch_us`` it matters where the two
            overlap (asynchronous settings), elsewhere it simply adds.
        saturation_parallelism: parallelism the processor needs to compute at its efficiency: an op offering
            ``P`` work items (:attr:`nas.latency.optable.OpTable.parallelism`) computes ``(1 + saturation / P)``
            times slower (a GPU at batch 1 cannot fill its SMs with a 7x7x512 map; a 4-core CPU barely
            notices).
        left_out: optional compute groups (:data:`~nas.latency.kinds.OPTIONAL_GROUPS`) the file does not
            list: they hold their leader group's values, are not named by :meth:`names` and are not written.
    """

    compute_efficiency: dict[str, float]
    memory_efficiency: dict[str, float]
    launch_us: dict[str, float]
    kernel_us: float
    saturation_parallelism: float
    left_out: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, path: str) -> UnitCoefficients:
        if not isinstance(data, Mapping):
            raise ConfigError("must be a mapping with compute_efficiency, memory_efficiency, launch_us, "
                              "kernel_us, saturation_parallelism", path=path)
        compute = _groups(data.get("compute_efficiency"), COMPUTE_GROUPS, f"{path}.compute_efficiency")
        return cls(compute, _groups(data.get("memory_efficiency"), COMPUTE_GROUPS, f"{path}.memory_efficiency"),
                   _groups(data.get("launch_us"), LAUNCH_GROUPS, f"{path}.launch_us"),
                   _positive(data.get("kernel_us"), f"{path}.kernel_us"),
                   _positive(data.get("saturation_parallelism"), f"{path}.saturation_parallelism"),
                   tuple(group for group in OPTIONAL_GROUPS if group not in data["compute_efficiency"]))

    @property
    def leaders(self) -> dict[str, str]:
        """Each left-out optional group -> the group whose kernels run its ops (and whose values it holds)."""
        return {group: OPTIONAL_GROUPS[group] for group in self.left_out}

    def to_dict(self) -> dict[str, Any]:
        return {"compute_efficiency": {k: _round(v) for k, v in self.compute_efficiency.items()
                                       if k not in self.left_out},
                "memory_efficiency": {k: _round(v) for k, v in self.memory_efficiency.items()
                                      if k not in self.left_out},
                "launch_us": {k: _round(v) for k, v in self.launch_us.items()},
                "kernel_us": _round(self.kernel_us),
                "saturation_parallelism": _round(self.saturation_parallelism)}

    def names(self, prefix: str = "") -> list[str]:
        groups = [group for group in COMPUTE_GROUPS if group not in self.left_out]
        return ([f"{prefix}compute_efficiency.{group}" for group in groups]
                + [f"{prefix}memory_efficiency.{group}" for group in groups]
                + [f"{prefix}launch_us.{group}" for group in LAUNCH_GROUPS]
                + [f"{prefix}kernel_us", f"{prefix}saturation_parallelism"])


def _round(value: float) -> float:
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class Coefficients:
    """Every fitted number of one setting (see the module docstring for the names).

    Attributes:
        main: the main processor's coefficients (GPU, CPU, neural engine, DPU).
        fixed_ms: per-inference constant (runtime call, synchronisation, output copy).
        input_ms_per_mb: per-inference cost of bringing in the input, per MB of float32 input tensor (a host
            to GPU copy, or pre-processing on a CPU for end-to-end figures).
        host: the fallback processor's coefficients, for settings with a fallback.
        switch_us: cost of one switch between the main and the fallback processor.
    """

    main: UnitCoefficients
    fixed_ms: float
    input_ms_per_mb: float
    host: UnitCoefficients | None = None
    switch_us: float = field(default=0.0)

    @classmethod
    def from_dict(cls, data: Any, path: str, *, with_host: bool) -> Coefficients:
        if not isinstance(data, Mapping):
            raise ConfigError("must be a mapping", path=path)
        main = UnitCoefficients.from_dict(data, path)
        host = None
        switch_us = 0.0
        if with_host:
            host = UnitCoefficients.from_dict(data.get("host"), f"{path}.host")
            switch_us = _positive(data.get("switch_us"), f"{path}.switch_us")
        elif "host" in data or "switch_us" in data:
            raise ConfigError("host/switch_us given, but the setting has no fallback", path=path)
        return cls(main, _positive(data.get("fixed_ms"), f"{path}.fixed_ms"),
                   _positive(data.get("input_ms_per_mb"), f"{path}.input_ms_per_mb"), host, switch_us)

    def to_dict(self) -> dict[str, Any]:
        out = self.main.to_dict()
        out["fixed_ms"] = _round(self.fixed_ms)
        out["input_ms_per_mb"] = _round(self.input_ms_per_mb)
        if self.host is not None:
            out["host"] = self.host.to_dict()
            out["switch_us"] = _round(self.switch_us)
        return out

    def names(self) -> list[str]:
        """Every parameter name, in a fixed order."""
        names = [*self.main.names(), "fixed_ms", "input_ms_per_mb"]
        if self.host is not None:
            names += [*self.host.names("host."), "switch_us"]
        return names

    def get(self, name: str) -> float:
        """The value of parameter ``name``."""
        unit, rest = (self.host, name[5:]) if name.startswith("host.") else (self.main, name)
        if unit is None:
            raise KeyError(name)
        if rest in ("fixed_ms", "input_ms_per_mb", "switch_us"):
            return float(getattr(self, rest))
        head, _, group = rest.partition(".")
        value = getattr(unit, head)
        return float(value[group]) if group else float(value)

    def replace_values(self, values: Mapping[str, float]) -> Coefficients:
        """A copy with the named parameters set to ``values``."""
        units = {"main": _unit_dict(self.main), "host": _unit_dict(self.host)}
        top = {"fixed_ms": self.fixed_ms, "input_ms_per_mb": self.input_ms_per_mb, "switch_us": self.switch_us}
        for name, value in values.items():
            where, rest = ("host", name[5:]) if name.startswith("host.") else ("main", name)
            if rest in top:
                top[rest] = float(value)
                continue
            head, _, group = rest.partition(".")
            if units[where] is None or head not in units[where]:
                raise KeyError(name)
            if group:
                units[where][head][group] = float(value)
            else:
                units[where][head] = float(value)
        host = None if units["host"] is None else UnitCoefficients(**units["host"])
        return dataclasses.replace(self, main=UnitCoefficients(**units["main"]), host=host,
                                   fixed_ms=top["fixed_ms"], input_ms_per_mb=top["input_ms_per_mb"],
                                   switch_us=top["switch_us"])


def _unit_dict(unit: UnitCoefficients | None) -> dict[str, Any] | None:
    if unit is None:
        return None
    return {"compute_efficiency": dict(unit.compute_efficiency), "memory_efficiency": dict(unit.memory_efficiency),
            "launch_us": dict(unit.launch_us), "kernel_us": unit.kernel_us,
            "saturation_parallelism": unit.saturation_parallelism, "left_out": unit.left_out}
