"""The typed settings of a run (``run.yaml``) and the run errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.errors import ConfigError, NasError

__all__ = ["RunError", "ObjectiveSpec", "ConstraintSpec", "RunSettings", "RUN_FILE"]

RUN_FILE = "run.yaml"


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
        accuracy: the accuracy source (``supernet``, ``zero-cost``, ``short-train``, ``proxy``).
        objectives: what is optimised, in study order.
        constraints: bounds on metrics.
        storage: an Optuna storage URL or journal file shared with other workers; None for the run's own journal.
        study: the study name in the storage.
        top_k: how many Archs ``write_outputs`` saves.
        latency_batch: inputs per forward pass for latency.
        supernet: the supernet checkpoint of the ``supernet`` accuracy source.
        zoo_start: open the first generation with the zoo's models that are points of the space
            (strategies with a warm start: evolution, random).
    """

    space: str
    target: str
    strategy: str = "evolution"
    budget: int = 300
    population: int = 32
    seed: int = 0
    accuracy: str = "proxy"
    objectives: tuple[ObjectiveSpec, ...] = ()
    constraints: tuple[ConstraintSpec, ...] = ()
    storage: str | None = None
    study: str = "nas"
    top_k: int = 5
    latency_batch: int = 1
    supernet: str | None = None
    zoo_start: bool = False

    def __post_init__(self) -> None:
        for name in ("budget", "population", "top_k", "latency_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an int >= 1, got {value!r}", path=name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"must be an int >= 0, got {self.seed!r}", path="seed")
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
            raise RunError(f"{source}: settings must be a mapping, got {type(data).__name__}")
        try:
            known = {field.name for field in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigError(f"unknown setting(s) {', '.join(unknown)}")
            values = dict(data)
            values["objectives"] = tuple(ObjectiveSpec(**dict(item)) for item in data.get("objectives", ()))
            values["constraints"] = tuple(ConstraintSpec(**dict(item)) for item in data.get("constraints", ()))
            return cls(**values)
        except (TypeError, ValueError, ConfigError) as exc:
            raise RunError(f"{source}: invalid settings: {exc}") from None
