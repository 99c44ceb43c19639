"""The typed settings of a run (``run.yaml``), the search request they are planned from, and the run errors.

:class:`RunSettings` holds every default of a search; :class:`SearchRequest` is what a user asks for
(``nas search``'s flags), ``None`` where RunSettings' default applies, and :func:`nas.runs.plan_search`
turns one into the other.
"""

from __future__ import annotations

import dataclasses
import platform
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from nas.arch import coerce_field
from nas.errors import ConfigError, NasError

__all__ = ["MAX_CANDIDATES", "MAX_SEED", "RunError", "ObjectiveSpec", "ConstraintSpec", "RunSettings", "SearchRequest",
           "DEFAULT_OBJECTIVES", "RUN_FILE", "package_versions"]

MAX_CANDIDATES = 1_000_000
"""Most candidates, points or models one run or command evaluates, samples, trains or exports (``budget``,
``population``, ``top_k``; the CLI's ``--budget``, ``--top``): a larger count is a typo that would search until
killed."""
MAX_SEED = 2**32 - 1
"""Largest seed: 32 bits, which numpy, torch and ``random`` all accept."""

RUN_FILE = "run.yaml"
DEFAULT_OBJECTIVES = ("accuracy", "latency")  # the objective kinds of a search that names none


class RunError(NasError):
    """A run directory or its storage is missing, corrupt or unusable; the message names the file."""


@dataclass(frozen=True)
class ObjectiveSpec:
    """One objective as a run records it.

    Attributes:
        name: the objective kind (``accuracy``, ``latency``, ``params``, ``macs``).
        column: its column in the history (``accuracy``, ``proxy_score``, ``latency_ms``, ...).
        direction: ``maximize`` or ``minimize``.
        label: axis label for plots and tables (``latency on iphone12 (ms)``).
    """

    name: str
    column: str
    direction: str
    label: str = ""

    @property
    def sign(self) -> float:
        """+1 for a minimised objective, -1 for a maximised one (loss = sign * value)."""
        return -1.0 if self.direction == "maximize" else 1.0


@dataclass(frozen=True)
class ConstraintSpec:
    """A bound on a metric: feasible when ``metrics[column] <= limit``.

    Attributes:
        name: the option's name (``max_latency``).
        column: the metric bounded (``latency_ms``, ``params_m``, ``gmacs``).
        limit: in the column's unit.
        text: the value as the user wrote it (``2ms``), for messages.
    """

    name: str
    column: str
    limit: float
    text: str = ""


@dataclass(frozen=True)
class RunSettings:
    """Every setting of a search; stored in ``run.yaml``.

    Attributes:
        space: the space name, or the path of a space file.
        target: the latency target.
        strategy: the strategy name (``nas.search.list_strategies()``).
        budget: candidates to evaluate in total (all workers together).
        population: the strategy's batch (population) size.
        seed: the seed every random choice of the search derives from.
        accuracy: the accuracy source (``short-train``, ``supernet``, ``zero-cost``, ``proxy``); ``supernet``
            without a ``supernet`` checkpoint uses the space's default supernet (:mod:`nas.runs.supernets`).
        objectives: what is optimised, in study order.
        constraints: bounds on metrics.
        storage: an Optuna storage URL or journal file shared with other workers; None for the run's own journal.
        study: the study name in the storage.
        top_k: how many Archs ``write_outputs`` saves.
        latency_batch: inputs per forward pass for latency.
        supernet: the supernet checkpoint of the ``supernet`` accuracy source.
        zoo_start: open the first generation with the zoo's models that are points of the space
            (strategies with a warm start: evolution, random).
        latency_setting: the target's setting latency is predicted in (None: the target's default), e.g. a
            precision regime (``tensorflow_int8``, ``vitis_ai_2_5+fp32``).
    """

    space: str
    target: str
    strategy: str = "evolution"
    budget: int = 300
    population: int = 32
    seed: int = 0
    accuracy: str = "short-train"
    objectives: tuple[ObjectiveSpec, ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()
    storage: str | None = None
    study: str = "nas"
    top_k: int = 5
    latency_batch: int = 1
    supernet: str | None = None
    zoo_start: bool = True
    latency_setting: str | None = None

    def __post_init__(self) -> None:
        for name in ("budget", "population", "top_k", "latency_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an int >= 1, got {value!r}", path=name)
            if name != "latency_batch" and value > MAX_CANDIDATES:
                raise ConfigError(f"must be <= {MAX_CANDIDATES} (MAX_CANDIDATES), got {value}", path=name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"must be an int >= 0, got {self.seed!r}", path="seed")
        if self.seed > MAX_SEED:
            raise ConfigError(f"must be <= {MAX_SEED} (32 bits), got {self.seed}", path="seed")
        if not self.objectives:
            raise ConfigError("a run needs at least one objective", path="objectives")
        for index, objective in enumerate(self.objectives):
            if objective.direction not in ("maximize", "minimize"):
                raise ConfigError(f"must be 'maximize' or 'minimize', got {objective.direction!r}",
                                  path=f"objectives[{index}].direction")

    @property
    def directions(self) -> list[str]:
        return [objective.direction for objective in self.objectives]

    @property
    def signs(self) -> np.ndarray:
        """+1 / -1 per objective (loss = sign * value)."""
        return np.array([objective.sign for objective in self.objectives])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = RUN_FILE) -> RunSettings:
        """Parse the ``settings`` mapping of ``run.yaml``.

        Raises:
            RunError: a missing or malformed field (named, with the file).
        """
        if not isinstance(data, Mapping):
            shown = "a list" if isinstance(data, list) else repr(data)[:80]  # not the loader's LocatedList
            raise RunError(f"{source}: settings must be a mapping, got {shown}")
        try:
            known = {item.name for item in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
            return cls(**_coerced(cls, data, spec_lists=_SPEC_LISTS))
        except ConfigError as exc:
            raise RunError(f"{source}: invalid settings: {exc}") from None


@dataclass(frozen=True)
class SearchRequest:
    """A search as a user asks for it (``nas search``'s flags, or a library call); :func:`nas.runs.plan_search`
    checks it and completes it into :class:`RunSettings`.

    A field left ``None`` takes RunSettings' default (:meth:`value`). Where RunSettings stores a field in another
    form, the request has the user's: ``accuracy`` may be ``auto`` (the default source); ``constraints`` are
    the texts as written, by option name (``{"max_latency": "2ms"}``; a None text is no bound); ``objectives``
    are kinds; ``study`` None names a shared study after the search (:func:`nas.runs.default_study_name`); paths
    may be relative.

    Example:
        >>> SearchRequest(space="metaformer", target="iphone12").value("budget") == RunSettings.budget
        True
    """

    space: str
    target: str
    strategy: str | None = None
    budget: int | None = None
    population: int | None = None
    seed: int | None = None
    accuracy: str | None = None
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    constraints: Mapping[str, str | None] = field(default_factory=dict)
    storage: str | None = None
    study: str | None = None
    top_k: int | None = None
    latency_batch: int | None = None
    supernet: str | None = None
    zoo_start: bool | None = None
    latency_setting: str | None = None

    def value(self, name: str) -> Any:
        """The field ``name`` as given, or RunSettings' default where it is None."""
        given = getattr(self, name)
        return _DEFAULTS[name] if given is None else given


_DEFAULTS = {item.name: item.default for item in dataclasses.fields(RunSettings)}
_SPEC_LISTS: dict[str, type] = {"objectives": ObjectiveSpec, "constraints": ConstraintSpec}  # RunSettings' lists


def _coerced(cls: type, data: Mapping[str, Any], path: str = "", *,
             spec_lists: Mapping[str, type] | None = None) -> dict[str, Any]:
    """The fields of dataclass ``cls`` present in ``data``, each through :func:`nas.arch.coerce_field`; a field
    named in ``spec_lists`` is a list of that dataclass, coerced spec by spec the same way.

    Raises:
        ConfigError: a missing required field, or a value that does not fit its annotation; the path names the
            field (``objectives[1].direction``).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        where = f"{path}.{item.name}" if path else item.name
        if item.name in data:
            spec = (spec_lists or {}).get(item.name)
            value = data[item.name]
            values[item.name] = coerce_field(value, hints[item.name], where) if spec is None else \
                _specs(spec, value, where)
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {item.name!r}", path=path)
    return values


def _specs(spec: type, value: Any, path: str) -> tuple[Any, ...]:
    """A list of mappings as a tuple of ``spec`` dataclasses, each coerced field by field."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"must be a list, got {value!r}", path=path)
    known = {item.name for item in dataclasses.fields(spec)}
    out = []
    for index, entry in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"must be a mapping, got {entry!r}", path=where)
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(unknown)}", path=where)
        out.append(spec(**_coerced(spec, entry, where)))
    return tuple(out)


_VERSIONED = ("nas", "torch", "numpy", "optuna", "pandas", "pyyaml")


def package_versions() -> dict[str, str]:
    """The versions a run was made with (recorded in its ``run.yaml``, for whoever reads the results later)."""
    versions = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
