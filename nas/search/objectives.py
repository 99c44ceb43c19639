"""Objectives and constraints: what a search measures on each candidate, batch by batch.

An :class:`Objective` measures one quantity of a batch of Archs
(``evaluate(archs) -> float64 array``). Kinds, by registry name:

* ``latency``: ``nas.latency.predict_many`` on the run's target (ms, minimised).
* ``params``: parameters in millions from ``nas.cost.profile`` (minimised).
* ``macs``: multiply-accumulates in G from ``nas.cost.profile`` (minimised).
* ``accuracy``: maximised, from one of the *accuracy sources*:

  - ``supernet``: one-shot accuracy of the subnet inherited from a trained
    weight-sharing supernet (``nas.supernet``; a checkpoint from ``nas supernet
    train``);
  - ``zero-cost``: a training-free score (NASWOT) of the initialised network
    at the proxy scale (``nas.supernet.zero_cost``);
  - ``short-train``: top-1 accuracy after 60 training steps alone at the
    default supernet's proxy scale (``nas.supernet.short_train``): about 20 s
    per candidate on one core, and the best-ranking of these signals on the
    rank bench (Kendall tau +0.57 to +0.72 against 2-epoch training, where
    one-shot scores reach +0.1 to +0.4);
  - ``proxy``: a documented, deterministic stand-in that needs no data and no
    training: ``log10(MACs)``. Within a family, accuracy grows roughly with
    the log of compute, so the front "most compute for the latency" has the
    shape of an accuracy/latency front; it is **not** an accuracy, and tables
    call its column ``proxy_score``. It is what tests and ``bench/search.py``
    use.

A :class:`Constraint` bounds one metric (``--max-latency 2ms``,
``--max-params 10M``, ``--max-macs 1G``); its *violation* is ``value - limit``
(<= 0 is feasible). :class:`Scorer` evaluates every objective and every
constrained metric for a batch, once per Arch id (a cache), and is what the
search loop calls.

Example:
    >>> scorer = make_scorer(target="iphone12", accuracy="proxy",
    ...                      constraints=[parse_constraint("max_latency", "2ms")])  # doctest: +SKIP
    >>> scores = scorer.evaluate(archs)  # doctest: +SKIP
    >>> scores.values.shape == (len(archs), 2)  # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nas.arch import Arch
from nas.errors import ConfigError, NasError
from nas.registry import Registry

__all__ = [
    "Objective",
    "LatencyObjective",
    "ParamsObjective",
    "MacsObjective",
    "AccuracyObjective",
    "AccuracySource",
    "ShortTrainAccuracy",
    "Constraint",
    "Scores",
    "Scorer",
    "InfeasibleError",
    "check_feasible",
    "probe_points",
    "OBJECTIVES",
    "ACCURACY_SOURCES",
    "CONSTRAINTS",
    "list_objectives",
    "list_accuracy_sources",
    "make_objective",
    "make_scorer",
    "parse_constraint",
    "parse_quantity",
]

OBJECTIVES: Registry[type[Objective]] = Registry("objective")
ACCURACY_SOURCES: Registry[type[AccuracySource]] = Registry("accuracy source")


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

    @abstractmethod
    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        """One float per Arch (``len(archs)`` float64); called once per batch of new Archs."""


def _params_and_macs(archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
    """Parameters and MACs (int64) per Arch, priced per unit (:class:`nas.latency.batch.CostTable`): the
    numbers of ``nas.cost.profile``, at the cost of lookups once an Arch's units were seen."""
    from nas.latency.batch import cost_table

    return cost_table()(archs)


@OBJECTIVES.register("latency")
class LatencyObjective(Objective):
    """Predicted latency on a hardware target, milliseconds.

    Args:
        target: a target name (``nas targets``).
        batch: inputs per forward pass.
        exact: price each Arch whole with ``nas.latency.predict``. The default (``False``) uses the batch
            predictor ``nas.latency.predict_many``: unit-cached, many times faster once warm, and equal to
            ``predict`` up to float rounding (1e-12 relative) whatever the process priced before, so a resumed
            run repeats the uninterrupted one (``tests/test_search_scoring.py`` checks both).
    """

    kind = "latency"
    column = "latency_ms"
    direction = "minimize"

    def __init__(self, *, target: str, batch: int = 1, exact: bool = False):
        from nas.latency.predict import resolve_setting

        resolve_setting(target)  # an unknown target fails here, before any search
        self.target = target
        self.batch = batch
        self.exact = exact
        self.label = f"latency on {target} (ms)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        from nas.latency.predict import predict, predict_many

        if self.exact:
            return np.array([predict(arch, target=self.target, batch=self.batch).latency_ms for arch in archs],
                            dtype=np.float64)
        return np.asarray(predict_many(list(archs), target=self.target, batch=self.batch), dtype=np.float64)


@OBJECTIVES.register("params")
class ParamsObjective(Objective):
    """Parameters in millions (``nas.cost.profile``'s, priced per unit)."""

    kind = "params"
    column = "params_m"
    direction = "minimize"
    label = "parameters (M)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return _params_and_macs(archs)[0] / 1e6


@OBJECTIVES.register("macs")
class MacsObjective(Objective):
    """Multiply-accumulates in G for one image at the Arch's resolution (``nas.cost.profile``'s, priced per unit)."""

    kind = "macs"
    column = "gmacs"
    direction = "minimize"
    label = "MACs (G)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return _params_and_macs(archs)[1] / 1e9


class AccuracySource(ABC):
    """Where an accuracy objective's numbers come from (registered in :data:`ACCURACY_SOURCES`)."""

    column: ClassVar[str] = "accuracy"
    label: ClassVar[str] = "accuracy"

    @abstractmethod
    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        """One score per Arch, larger is better."""


@ACCURACY_SOURCES.register("proxy")
class ProxyAccuracy(AccuracySource):
    """``log10(MACs)``: a deterministic stand-in for accuracy, not an accuracy (see the module docstring)."""

    column = "proxy_score"
    label = "proxy score: log10 MACs (stand-in for accuracy)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return proxy_score(_params_and_macs(archs)[1])


def proxy_score(macs: np.ndarray) -> np.ndarray:
    """``log10(MACs)`` (at least 0) from integer MAC counts: the ``proxy`` accuracy stand-in."""
    return np.log10(np.maximum(np.asarray(macs, dtype=np.float64), 1.0))


# The default supernet's proxy scale (nas.runs.supernets.DEFAULT_RECIPE; a test checks they agree): the sources
# that build each candidate build it here, so `nas finalists` trains the same network.
PROXY_WIDTH, PROXY_RESOLUTION = 0.125, 32


@ACCURACY_SOURCES.register("zero-cost")
class ZeroCostAccuracy(AccuracySource):
    """A training-free score (``nas.supernet.zero_cost``, its default proxy) of each candidate at the proxy scale.

    Scored on one fixed batch of the bundled training images. At the proxy scale NASWOT takes about 0.2 s per
    candidate on one core and ranks the rank bench's 24 archs at Kendall tau +0.22; at full scale (224 px,
    16 images) it took 10-20 s and ranked at +0.17.

    Args:
        seed: initial weights and the batch's images.
        width, resolution: the proxy scale.
        batch_size: images in the batch.

    Raises:
        NasError: at construction, when ``nas.supernet.zero_cost`` is not available in this build.
    """

    column = "zero_cost_score"
    label = "zero-cost score"

    def __init__(self, *, seed: int = 0, width: float = PROXY_WIDTH, resolution: int = PROXY_RESOLUTION,
                 batch_size: int = 64):
        try:
            from nas.supernet import ProxyScale, zero_cost
        except ImportError as exc:
            raise NasError(f"accuracy source 'zero-cost' needs nas.supernet.zero_cost, which cannot be imported "
                           f"({exc}); use --accuracy proxy") from None
        self._module = zero_cost
        self.seed = seed
        self.scale = ProxyScale(width=width, resolution=resolution)
        self.batch = zero_cost.default_batch(resolution=resolution, batch_size=batch_size, seed=seed)

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        """Each Arch's score; ``-inf`` (the worst) for one the proxy cannot score or the proxy scale cannot fit."""
        from nas.supernet import ProxyError

        out = np.empty(len(archs), dtype=np.float64)
        for index, arch in enumerate(archs):
            try:
                out[index] = self._module.score_many([self.scale.apply(arch)], batch=self.batch, seed=self.seed)[0]
            except (ProxyError, self._module.ZeroCostError):
                out[index] = -math.inf
        return out


@ACCURACY_SOURCES.register("short-train")
class ShortTrainAccuracy(AccuracySource):
    """Top-1 accuracy after a short training run of each candidate alone (``nas.supernet.short_train``).

    The candidate is trained at the proxy scale of the search's default supernet (width x0.125, 32 px), so
    ``nas finalists`` trains it at the same scale. A candidate that cannot be built there scores ``-inf`` (not
    measured: left off the front, ranked after every scored candidate).

    Each score is also kept in ``$NAS_HOME/short_train/<key>.json`` (rewritten atomically after every
    candidate; the key hashes the recipe, the dataset, the scale and the seed): a killed search loses no
    finished candidate, and a search on another target reuses the candidates both visit.

    Args:
        data: the dataset (``nas.data.load_dataset`` spec); None: the bundled default.
        steps: training steps per candidate.
        seed: initial weights and data order (the same for every candidate).
        width, resolution: the proxy scale.
    """

    column = "accuracy"
    label = "short-train accuracy (60 steps alone)"

    def __init__(self, *, data: str | None = None, steps: int | None = None, seed: int = 0,
                 width: float = PROXY_WIDTH, resolution: int = PROXY_RESOLUTION):
        from nas.data import load_dataset
        from nas.supernet import EvalBatches, ProxyScale
        from nas.supernet.short_train import DEFAULT_SHORT_STEPS

        self.dataset = load_dataset(data)
        self.steps = DEFAULT_SHORT_STEPS if steps is None else steps
        self.seed = seed
        self.scale = ProxyScale(width=width, resolution=resolution, num_classes=self.dataset.num_classes)
        self.batches = EvalBatches.from_dataset(self.dataset, resolution=resolution, channels=3, batch_size=256,
                                                seed=seed)

    @property
    def cache_file(self) -> Path:
        """Where this recipe's scores are kept, by Arch id."""
        from nas.latency.targets import user_dir
        from nas.supernet.short_train import RECIPE_VERSION

        recipe = {"version": RECIPE_VERSION, "data": self.dataset.name, "train": self.dataset.num_train,
                  "val": self.dataset.num_val, "steps": self.steps, "seed": self.seed, "scale": self.scale.to_dict()}
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        return user_dir() / "short_train" / f"{key}.json"

    def _cached(self) -> dict[str, float]:
        try:
            scores = json.loads(self.cache_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            warnings.warn(f"{self.cache_file}: unreadable short-train cache, starting it afresh", stacklevel=3)
            return {}
        return scores if isinstance(scores, dict) else {}

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        from tqdm import tqdm

        from nas.atomic import write_atomic
        from nas.supernet import ProxyError, short_train_scores

        cached = self._cached()
        todo = [arch for arch in archs if arch.id not in cached]
        with tqdm(total=len(todo), desc=f"short-train {self.steps} steps", unit="arch", leave=False,
                  disable=None) as bar:
            for arch in todo:
                try:
                    (score,) = short_train_scores([arch], self.dataset, self.batches, scale=self.scale,
                                                  steps=self.steps, seed=self.seed)
                except ProxyError:  # it does not fit the proxy scale: not measured, not cached
                    pass
                else:
                    cached = {**self._cached(), arch.id: float(score)}  # re-read: another worker may have added
                    write_atomic(self.cache_file, json.dumps(cached, sort_keys=True))
                bar.update(1)
        return np.array([cached.get(arch.id, -math.inf) for arch in archs], dtype=np.float64)


def _load_supernet(checkpoint: str) -> Any:
    """The supernet in ``checkpoint`` (a file or a run directory), read once per file version: planning a search
    and running it both build a scorer, and a checkpoint is ~200 MB to read."""
    from nas.supernet import Supernet
    from nas.supernet.checkpoint import checkpoint_file

    file = checkpoint_file(checkpoint)
    if not file.is_file():
        return Supernet.load(file)  # its error names the missing file
    stat = file.stat()
    return _load_supernet_version(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def _load_supernet_version(path: str, mtime_ns: int, size: int) -> Any:
    from nas.supernet import Supernet

    return Supernet.load(path)


@ACCURACY_SOURCES.register("supernet")
class SupernetAccuracy(AccuracySource):
    """One-shot top-1 accuracy under a trained weight-sharing supernet (``nas.supernet``).

    Each Arch is extracted from the supernet at its proxy scale, its BatchNorm statistics are recalibrated
    and it is evaluated on the validation split (``nas.supernet.evaluate``). An Arch the supernet cannot run
    (outside its proxy scale or capacity) scores ``-inf`` (not measured: left off the front, ranked after every
    scored candidate).

    Args:
        space: the space searched; must be the supernet's.
        checkpoint: a supernet checkpoint or its training run directory (``nas supernet train``).
        data: the dataset (``nas.data.load_dataset`` spec); None: the bundled default.
        max_val: validation images per evaluation (None: all).
        seed: picks the calibration images.

    Raises:
        NasError: no checkpoint given, or one of another space.
    """

    column = "accuracy"
    label = "one-shot accuracy (supernet)"

    def __init__(self, *, space: str, checkpoint: str | None, data: str | None = None, max_val: int | None = 512,
                 seed: int = 0):
        if checkpoint is None:
            raise NasError("accuracy source 'supernet' needs a trained supernet: --supernet CHECKPOINT "
                           "(from `nas supernet train --space SPACE`); or use --accuracy proxy or zero-cost")
        from nas.data import load_dataset
        from nas.space import load_space
        from nas.supernet import EvalBatches

        self.supernet = _load_supernet(checkpoint)
        theirs, ours = load_space(self.supernet.spec.space).name, load_space(space).name
        if theirs != ours:
            raise NasError(f"supernet {checkpoint} was trained on space {theirs!r}, not {ours!r}")
        resolution = self.supernet.spec.scale.resolution
        if resolution is None:
            raise NasError(f"supernet {checkpoint} keeps each Arch's own resolution; one-shot evaluation in the "
                           "search needs a supernet trained at one proxy resolution (--resolution)")
        self.batches = EvalBatches.from_dataset(load_dataset(data), resolution=resolution, channels=3,
                                                calibration_batches=2, max_val=max_val, seed=seed)

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        from nas.supernet import evaluate

        out = np.full(len(archs), -math.inf)
        runnable = [index for index, arch in enumerate(archs) if not self.supernet.check(arch)]
        if runnable:
            out[runnable] = evaluate(self.supernet, [archs[index] for index in runnable], self.batches)
        return out


@OBJECTIVES.register("accuracy")
class AccuracyObjective(Objective):
    """Accuracy (or its stand-in) from a registered source; maximised.

    Args:
        source: ``supernet``, ``zero-cost``, ``short-train`` or ``proxy``.
        space: the space searched (the supernet is per space).
        seed: for sources that draw (initial weights, calibration images).
        supernet: the supernet checkpoint, for the ``supernet`` source.
    """

    kind = "accuracy"
    direction = "maximize"

    def __init__(self, *, source: str = "proxy", space: str = "", seed: int = 0, supernet: str | None = None):
        cls = ACCURACY_SOURCES.get(source)
        if cls is SupernetAccuracy:
            self.source: AccuracySource = SupernetAccuracy(space=space, checkpoint=supernet, seed=seed)
        elif cls is ZeroCostAccuracy:
            self.source = ZeroCostAccuracy(seed=seed)
        elif cls is ShortTrainAccuracy:
            self.source = ShortTrainAccuracy(seed=seed)
        else:
            self.source = cls()
        self.source_name = source
        self.column = self.source.column
        self.label = self.source.label

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.source.evaluate(archs)


def list_objectives() -> list[str]:
    return OBJECTIVES.names()


def list_accuracy_sources() -> list[str]:
    return ACCURACY_SOURCES.names()


def make_objective(kind: str, *, target: str, accuracy: str = "proxy", space: str = "", seed: int = 0,
                   latency_batch: int = 1, supernet: str | None = None) -> Objective:
    """An objective by kind with the run's context.

    Raises:
        UnknownKindError: unknown kind, accuracy source or target.
    """
    cls = OBJECTIVES.get(kind)
    if cls is LatencyObjective:
        return LatencyObjective(target=target, batch=latency_batch)
    if cls is AccuracyObjective:
        return AccuracyObjective(source=accuracy, space=space, seed=seed, supernet=supernet)
    return cls()


# -- constraints ------------------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class _ConstraintKind:
    objective: str
    column: str
    unit: str
    parse: str  # "time" (to ms) or "count" (to the column's scale)
    scale: float  # count units per column unit (1e6 for params_m, 1e9 for gmacs)
    example: str


CONSTRAINTS: dict[str, _ConstraintKind] = {
    "max_latency": _ConstraintKind("latency", "latency_ms", "ms", "time", 1.0, "2ms, 500us, 0.01s"),
    "max_params": _ConstraintKind("params", "params_m", "M", "count", 1e6, "10M, 500k, 2500000"),
    "max_macs": _ConstraintKind("macs", "gmacs", "G", "count", 1e9, "1G, 300M"),
}


@dataclass(frozen=True)
class Constraint:
    """A bound ``metric <= limit`` on one metric column.

    Attributes:
        name: ``max_latency``, ``max_params`` or ``max_macs``.
        objective: the objective kind that measures it.
        column: the metric column (``latency_ms``, ``params_m``, ``gmacs``).
        limit: in the column's unit.
        text: as written (``2ms``).
    """

    name: str
    objective: str
    column: str
    limit: float
    text: str

    @property
    def option(self) -> str:
        """The command-line option (``--max-latency``)."""
        return "--" + self.name.replace("_", "-")


def parse_quantity(text: str, kind: str, *, option: str = "") -> float:
    """A positive number with a unit: ``kind='time'`` gives ms (``2ms``, ``500us``, ``0.01s``; bare = ms),
    ``kind='count'`` gives the plain count (``10M``, ``1.5G``, ``500k``; an optional ``MACs``/``params`` suffix).

    Raises:
        ConfigError: unreadable, not positive, or an unknown unit (the message shows valid examples).
    """
    raw = str(text).strip()
    cleaned = raw.replace(" ", "")
    if kind == "time":
        match = re.fullmatch(_NUMBER + r"(us|µs|ms|s)?", cleaned, flags=re.IGNORECASE)
        scale = _TIME_UNITS[(match.group(2) or "ms").lower()] if match else 0.0
        example = "2ms, 500us, 0.01s"
    else:
        match = re.fullmatch(_NUMBER + r"([kKmMgGtT]?)(?:macs|params|flops)?", cleaned, flags=re.IGNORECASE)
        if match and cleaned.lower().endswith("flops"):
            match = None
        scale = _COUNT_UNITS[match.group(2).lower()] if match else 0.0
        example = "10M, 1.5G, 500k"
    where = f"{option}: " if option else ""
    if match is None:
        raise ConfigError(f"{where}cannot read {raw!r}; write a positive number with a unit, e.g. {example}")
    value = float(match.group(1)) * scale
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}must be > 0, got {raw!r}")
    return value


def parse_constraint(name: str, text: str) -> Constraint:
    """A :class:`Constraint` from an option name and its value (``parse_constraint("max_latency", "2ms")``).

    Raises:
        UnknownKindError: unknown constraint name.
        ConfigError: a value that cannot be read.
    """
    if name not in CONSTRAINTS:
        registry: Registry[str] = Registry("constraint")
        for known in CONSTRAINTS:
            registry.register(known)(known)
        registry.get(name)
    kind = CONSTRAINTS[name]
    option = "--" + name.replace("_", "-")
    value = parse_quantity(text, kind.parse, option=option)
    return Constraint(name, kind.objective, kind.column, value / kind.scale, str(text).strip())


# -- scoring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    """A batch's measurements.

    Attributes:
        values: ``n x num_objectives`` objective values (their own directions).
        violations: ``n x num_constraints`` ``value - limit`` (<= 0 feasible).
        metrics: column -> ``n`` values, for every measured column.
    """

    values: np.ndarray
    violations: np.ndarray
    metrics: dict[str, np.ndarray]

    @property
    def feasible(self) -> np.ndarray:
        return np.asarray((self.violations <= 0).all(axis=1), dtype=bool)


class Scorer:
    """Evaluates objectives and constrained metrics for batches of Archs, once per Arch id.

    Args:
        objectives: what is optimised, in order.
        constraints: bounds; a constrained metric that is not an objective is measured by ``measures``.
        measures: extra objectives used only as measurements (by column).

    Not thread-safe (the cache is a plain dict).
    """

    def __init__(self, objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
                 measures: Sequence[Objective] = ()):
        if not objectives:
            raise ConfigError("a search needs at least one objective")
        self.objectives = tuple(objectives)
        self.constraints = tuple(constraints)
        self._measures: dict[str, Objective] = {objective.column: objective for objective in objectives}
        for measure in measures:
            self._measures.setdefault(measure.column, measure)
        missing = [c.column for c in self.constraints if c.column not in self._measures]
        if missing:
            raise ConfigError(f"no measurement for constrained column(s) {', '.join(missing)}")
        self._cache: dict[str, dict[str, float]] = {}

    @property
    def columns(self) -> list[str]:
        return list(self._measures)

    @property
    def measures(self) -> tuple[Objective, ...]:
        """Every measured objective, one per column (the objectives first)."""
        return tuple(self._measures.values())

    def evaluate(self, archs: Sequence[Arch]) -> Scores:
        """Measure a batch; Archs seen before cost a lookup."""
        fresh: dict[str, Arch] = {}
        for arch in archs:
            if arch.id not in self._cache:
                fresh.setdefault(arch.id, arch)
        if fresh:
            batch = list(fresh.values())
            measured = {column: measure.evaluate(batch) for column, measure in self._measures.items()}
            for index, arch_id in enumerate(fresh):
                self._cache[arch_id] = {column: float(values[index]) for column, values in measured.items()}
        rows = [self._cache[arch.id] for arch in archs]
        metrics = {column: np.array([row[column] for row in rows], dtype=np.float64) for column in self._measures}
        values = np.stack([metrics[objective.column] for objective in self.objectives], axis=1) if rows else \
            np.zeros((0, len(self.objectives)))
        violations = np.stack([metrics[c.column] - c.limit for c in self.constraints], axis=1) if \
            (rows and self.constraints) else np.zeros((len(rows), len(self.constraints)))
        return Scores(values, violations, metrics)


def make_scorer(*, target: str, accuracy: str = "proxy", objectives: Sequence[str] = ("accuracy", "latency"),
                constraints: Sequence[Constraint] = (), space: str = "", seed: int = 0,
                latency_batch: int = 1, supernet: str | None = None) -> Scorer:
    """The scorer of a search: the objectives by kind, plus whatever the constraints need measured.

    Raises:
        UnknownKindError: unknown objective kind, accuracy source or target.
        NasError: an accuracy source that is not available in this build.
    """
    if len(set(objectives)) != len(objectives):
        raise ConfigError(f"objectives must be distinct, got {list(objectives)}")
    def make(kind: str) -> Objective:
        return make_objective(kind, target=target, accuracy=accuracy, space=space, seed=seed,
                              latency_batch=latency_batch, supernet=supernet)

    made = [make(kind) for kind in objectives]
    measures = [make(c.objective) for c in constraints if c.objective not in objectives]
    return Scorer(made, constraints, measures)


class InfeasibleError(NasError):
    """No sampled point of the space meets the constraints."""


def probe_points(space: Any, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` valid points for probing constraints: half drawn at random, half "small" (every ordered
    decision at its first option, i.e. the narrowest, shallowest, lowest-resolution choice the file lists
    first, where that point is valid)."""
    vectors = space.sample_vectors(rng, count)
    ordered = np.array([decision.ordered for decision in space.decisions], dtype=bool)
    small = vectors[: count // 2].copy()
    small[:, ordered] = np.where(small[:, ordered] >= 0, 0, -1)
    keep = np.array([space.is_valid(vector) for vector in small], dtype=bool)
    vectors[: count // 2][keep] = small[keep]
    return vectors


def check_feasible(space: Any, scorer: Scorer, *, target: str, samples: int = 64, seed: int = 0) -> None:
    """Fail early when no point of a bounded probe meets the constraints (see :func:`probe_points`).

    Raises:
        InfeasibleError: e.g. ``no point of metaformer meets --max-latency 0.01ms on iphone12 (the best of
            64 probed points: 0.92 ms)``.
    """
    if not scorer.constraints:
        return
    vectors = probe_points(space, np.random.default_rng(np.random.SeedSequence([seed, 0xFEA5])), samples)
    scores = scorer.evaluate([space.decode(vector) for vector in vectors])
    if scores.feasible.any():
        return
    options = " and ".join(f"{c.option} {c.text}" for c in scorer.constraints)
    where = f" on {target}" if any(c.objective == "latency" for c in scorer.constraints) else ""
    worst = int(np.argmin(np.clip(scores.violations, 0, None).sum(axis=1)))
    closest = ", ".join(f"{scores.metrics[c.column][worst]:.4g} {_UNITS[c.column]}" for c in scorer.constraints)
    raise InfeasibleError(f"no point of {space.name} meets {options}{where} (the closest of {len(vectors)} probed "
                          f"points: {closest})")


_UNITS = {"latency_ms": "ms", "params_m": "M params", "gmacs": "GMACs"}
