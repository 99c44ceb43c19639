"""Objectives: what a search measures on each candidate, batch by batch (registry :data:`OBJECTIVES`).

An :class:`Objective` measures one quantity of a batch of Archs
(``evaluate(archs) -> float64 array``). Kinds, by registry name:

* ``latency``: ``nas.latency.predict_many`` on the run's target (ms, minimised).
* ``params``: parameters in millions from ``nas.cost.profile`` (minimised).
* ``macs``: multiply-accumulates in G from ``nas.cost.profile`` (minimised).
* ``accuracy``: maximised, from one of the accuracy sources of :mod:`nas.search.accuracy`.

Each kind takes what it needs from the run's :class:`ObjectiveContext` in :meth:`Objective.from_context`
(the target, the accuracy source, ...), so :func:`make_objective` makes any kind the same way.

Example:
    >>> make_objective("params", target="iphone12").column
    'params_m'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from nas.arch import Arch
from nas.registry import Registry
from nas.search.accuracy import ACCURACY_SOURCES, AccuracySource, params_and_macs

if TYPE_CHECKING:
    from nas.supernet.device import Placement

__all__ = [
    "OBJECTIVES",
    "AccuracyObjective",
    "LatencyObjective",
    "MacsObjective",
    "Objective",
    "ObjectiveContext",
    "ParamsObjective",
    "list_objectives",
    "make_objective",
]

OBJECTIVES: Registry[type[Objective]] = Registry("objective")


@dataclass(frozen=True)
class ObjectiveContext:
    """The settings of a run that objectives and accuracy sources are made from.

    Attributes:
        target: the latency target.
        accuracy: the accuracy source (``nas.search.accuracy``).
        space: the space searched (the supernet is per space).
        seed: for sources that draw (initial weights, calibration images).
        latency_batch: inputs per forward pass for latency.
        latency_setting: the target's setting latency is predicted in (None: its default); ``NAME+fp32`` keeps
            float32 ops in fp32 (:meth:`nas.latency.targets.Target.setting`). Each point's per-block precision is
            priced per op in it.
        supernet: the supernet checkpoint, for the ``supernet`` source.
        placement: where sources that train or evaluate networks compute (``nas.supernet.device.Placement``;
            None: the CPU in float32). Not a setting of the run: a resumed run may move to another device.
    """

    target: str
    accuracy: str = "proxy"
    space: str = ""
    seed: int = 0
    latency_batch: int = 1
    supernet: str | None = None
    placement: Placement | None = None
    latency_setting: str | None = None


class Objective(ABC):
    """One measured quantity of an Arch.

    Attributes:
        kind: the registry name.
        column: the history column its values go to.
        direction: ``maximize`` or ``minimize``.
        label: a human label with the unit.
    """

    kind: ClassVar[str] = ""
    column: str = ""
    direction: str = "minimize"
    label: str = ""

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> Objective:
        """The objective for a run; each kind takes the settings it needs (the default: none)."""
        return cls()

    @abstractmethod
    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        """One float per Arch (``len(archs)`` float64); called once per batch of new Archs."""


@OBJECTIVES.register("latency")
class LatencyObjective(Objective):
    """Predicted latency on a hardware target, milliseconds.

    Args:
        target: a target name (``nas targets``).
        batch: inputs per forward pass.
        setting: the target's setting (default: its default setting), e.g. a precision regime such as
            ``tensorflow_int8``; every op is priced at its own number format within it.
        exact: price each Arch whole with ``nas.latency.predict``. The default (``False``) uses the batch
            predictor ``nas.latency.predict_many``: unit-cached, many times faster once warm, and equal to
            ``predict`` up to float rounding (1e-12 relative) whatever the process priced before, so a resumed
            run repeats the uninterrupted one (``tests/test_search_scoring.py`` checks both).
    """

    kind = "latency"
    column = "latency_ms"
    direction = "minimize"

    def __init__(self, *, target: str, batch: int = 1, exact: bool = False, setting: str | None = None):
        from nas.latency.predict import resolve_setting

        resolve_setting(target, setting)  # an unknown target or setting fails here, before any search
        self.target = target
        self.setting = setting
        self.batch = batch
        self.exact = exact
        self.label = f"latency on {target if setting is None else f'{target}/{setting}'} (ms)"

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> LatencyObjective:
        return cls(target=context.target, batch=context.latency_batch, setting=context.latency_setting)

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        from nas.latency.predict import predict, predict_many

        if self.exact:
            return np.array([predict(arch, target=self.target, batch=self.batch, setting=self.setting).latency_ms
                             for arch in archs], dtype=np.float64)
        return np.asarray(predict_many(list(archs), target=self.target, batch=self.batch, setting=self.setting),
                          dtype=np.float64)


@OBJECTIVES.register("params")
class ParamsObjective(Objective):
    """Parameters in millions (``nas.cost.profile``'s, priced per unit)."""

    kind = "params"
    column = "params_m"
    direction = "minimize"
    label = "parameters (M)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return params_and_macs(archs)[0] / 1e6


@OBJECTIVES.register("macs")
class MacsObjective(Objective):
    """Multiply-accumulates in G for one image at the Arch's resolution (``nas.cost.profile``'s, priced per unit)."""

    kind = "macs"
    column = "gmacs"
    direction = "minimize"
    label = "MACs (G)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return params_and_macs(archs)[1] / 1e9


@OBJECTIVES.register("accuracy")
class AccuracyObjective(Objective):
    """Accuracy (or its stand-in) from a registered source; maximised.

    Args:
        source: the source's registry name (``nas.search.accuracy.list_accuracy_sources()``).
        measure: the source itself.
    """

    kind = "accuracy"
    direction = "maximize"

    def __init__(self, source: str, measure: AccuracySource):
        self.source_name = source
        self.source = measure
        self.column = measure.column
        self.label = measure.label

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> AccuracyObjective:
        return cls(context.accuracy, ACCURACY_SOURCES.get(context.accuracy).from_context(context))

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.source.evaluate(archs)


def list_objectives() -> list[str]:
    return OBJECTIVES.names()


def make_objective(kind: str, *, target: str, accuracy: str = "proxy", space: str = "", seed: int = 0,
                   latency_batch: int = 1, supernet: str | None = None,
                   placement: Placement | None = None, latency_setting: str | None = None) -> Objective:
    """An objective by kind with the run's context.

    Raises:
        UnknownKindError: unknown kind, accuracy source or target.
        NasError: an accuracy source that is not available in this build or lacks what it needs.
    """
    context = ObjectiveContext(target=target, accuracy=accuracy, space=space, seed=seed, latency_batch=latency_batch,
                               supernet=supernet, placement=placement, latency_setting=latency_setting)
    return OBJECTIVES.get(kind).from_context(context)
