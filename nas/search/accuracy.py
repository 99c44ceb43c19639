"""Accuracy sources: where the ``accuracy`` objective's numbers come from (registry :data:`ACCURACY_SOURCES`).

* ``supernet``: one-shot accuracy of the subnet inherited from a trained
  weight-sharing supernet (``nas.supernet``; a checkpoint from ``nas supernet
  train``);
* ``zero-cost``: a training-free score (NASWOT) of the initialised network
  at the proxy scale (``nas.supernet.zero_cost``);
* ``short-train``: top-1 accuracy after a short training run alone at the
  default supernet's proxy scale (``nas.supernet.short_train``): the slowest
  and the best-ranking of these signals on the rank bench (``bench/supernet_rank.py``);
* ``proxy``: a documented, deterministic stand-in that needs no data and no
  training: ``log10(MACs)``. Within a family, accuracy grows roughly with
  the log of compute, so the front "most compute for the latency" has the
  shape of an accuracy/latency front; it is **not** an accuracy, and tables
  call its column ``proxy_score``. It is what tests and ``bench/search.py``
  use.

Each source takes what it needs from the run in :meth:`AccuracySource.from_context` (the supernet checkpoint,
the space, the seed), so :class:`~nas.search.objectives.AccuracyObjective` creates any of them the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas.arch import Arch
from nas.errors import NasError
from nas.registry import Registry

if TYPE_CHECKING:
    from nas.search.objectives import ObjectiveContext
    from nas.supernet.device import Placement

__all__ = [
    "ACCURACY_SOURCES",
    "PROXY_RESOLUTION",
    "PROXY_WIDTH",
    "AccuracySource",
    "ProxyAccuracy",
    "ShortTrainAccuracy",
    "SupernetAccuracy",
    "ZeroCostAccuracy",
    "list_accuracy_sources",
    "params_and_macs",
    "proxy_score",
]

ACCURACY_SOURCES: Registry[type[AccuracySource]] = Registry("accuracy source")


def params_and_macs(archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
    """Parameters and MACs (int64) per Arch, priced per unit (:class:`nas.latency.batch.CostTable`): the
    numbers of ``nas.cost.profile``, at the cost of lookups once an Arch's units were seen."""
    from nas.latency.batch import cost_table

    return cost_table()(archs)


def list_accuracy_sources() -> list[str]:
    return ACCURACY_SOURCES.names()


class AccuracySource(ABC):
    """Where an accuracy objective's numbers come from (registered in :data:`ACCURACY_SOURCES`).

    Attributes:
        column: the history column of its scores.
        label: a human label (tables, plot axes).
    """

    column: ClassVar[str] = "accuracy"
    label: ClassVar[str] = "accuracy"

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> AccuracySource:
        """The source for a run; each source takes the settings it needs (the default: none)."""
        return cls()

    @abstractmethod
    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        """One score per Arch, larger is better."""


@ACCURACY_SOURCES.register("proxy")
class ProxyAccuracy(AccuracySource):
    """``log10(MACs)``: a deterministic stand-in for accuracy, not an accuracy (see the module docstring)."""

    column = "proxy_score"
    label = "proxy score: log10 MACs (stand-in for accuracy)"

    def evaluate(self, archs: Sequence[Arch]) -> np.ndarray:
        return proxy_score(params_and_macs(archs)[1])


def proxy_score(macs: np.ndarray) -> np.ndarray:
    """``log10(MACs)`` (at least 0) from integer MAC counts: the ``proxy`` accuracy stand-in."""
    return np.log10(np.maximum(np.asarray(macs, dtype=np.float64), 1.0))


# The default supernet's proxy scale (nas.runs.supernets.DEFAULT_RECIPE; a test checks they agree): the sources
# that build each candidate build it here, so `nas finalists` trains the same network.
PROXY_WIDTH, PROXY_RESOLUTION = 0.125, 32


@ACCURACY_SOURCES.register("zero-cost")
class ZeroCostAccuracy(AccuracySource):
    """A training-free score (``nas.supernet.zero_cost``, its default proxy) of each candidate at the proxy scale.

    Scored on one fixed batch of the bundled training images, at the proxy scale: there it is cheap and ranked
    better than at full scale on the rank bench (``bench/supernet_rank.py``; the README has the figures).

    Args:
        seed: initial weights and the batch's images.
        width, resolution: the proxy scale.
        batch_size: images in the batch.

    Raises:
        NasError: at construction, when ``nas.supernet.zero_cost`` is not available in this build.
    """

    column = "zero_cost_score"
    label = "zero-cost score"

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> ZeroCostAccuracy:
        return cls(seed=context.seed)

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
        workers: candidates trained side by side, one process and one thread each (:mod:`nas.supernet.
            training_pool`); None: one per CPU this process may use, at most 8.
        placement: the device and precision they train on (None: the CPU in float32). The cache keeps scores
            per precision, not per device: a score from a GPU differs from the CPU's by rounding only.
    """

    column = "accuracy"

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> ShortTrainAccuracy:
        return cls(seed=context.seed, placement=context.placement)

    def __init__(self, *, data: str | None = None, steps: int | None = None, seed: int = 0,
                 width: float = PROXY_WIDTH, resolution: int = PROXY_RESOLUTION, workers: int | None = None,
                 placement: Placement | None = None):
        from nas.data import load_dataset
        from nas.supernet import EvalBatches, ProxyScale
        from nas.supernet.short_train import DEFAULT_SHORT_STEPS

        self.data = data
        self.dataset = load_dataset(data)
        self.steps = DEFAULT_SHORT_STEPS if steps is None else steps
        self.seed = seed
        self.scale = ProxyScale(width=width, resolution=resolution, num_classes=self.dataset.num_classes)
        self.workers = min(len(os.sched_getaffinity(0)), 8) if workers is None else workers
        self.placement = placement
        self._pool: Any = None
        self.batches = EvalBatches.from_dataset(self.dataset, resolution=resolution, channels=3, batch_size=256,
                                                seed=seed)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"accuracy after {self.steps} training steps alone"

    @property
    def recipe(self) -> dict[str, Any]:
        """What a score depends on besides the dataset and the candidate."""
        return {"steps": self.steps, "seed": self.seed, "scale": self.scale.to_dict()}

    @property
    def cache_file(self) -> Path:
        """Where this recipe's scores are kept, by Arch id."""
        from nas.latency.targets import user_dir
        from nas.supernet.short_train import RECIPE_VERSION

        recipe = {"version": RECIPE_VERSION, "data": self.dataset.name, "train": self.dataset.num_train,
                  "val": self.dataset.num_val, **self.recipe}
        if self.placement is not None and self.placement.amp != "off":  # float32 keys are those of before --amp
            recipe["amp"] = self.placement.amp
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

        cached = self._cached()
        todo = [arch for arch in archs if arch.id not in cached]
        with tqdm(total=len(todo), desc=f"short-train {self.steps} steps", unit="arch", leave=False,
                  disable=None) as bar:
            for arch, score in self._train(todo):
                if score is not None:  # None: it does not fit the proxy scale (not measured, not cached)
                    cached = self._keep(arch, score)
                bar.update(1)
        return np.array([cached.get(arch.id, -math.inf) for arch in archs], dtype=np.float64)

    def _train(self, archs: Sequence[Arch]) -> Iterator[tuple[Arch, float | None]]:
        """Each candidate with its score as it finishes: in worker processes when there are several CPUs and
        candidates, else here; one torch thread either way, so the score does not depend on the CPUs."""
        if self.workers > 1 and len(archs) > 1:
            if self._pool is None:
                from nas.supernet.training_pool import TrainingPool

                self._pool = TrainingPool(self.workers, data=self.data, recipe=self.recipe, placement=self.placement)
            for index, score in self._pool.scores(archs):
                yield archs[index], score
            return
        import torch

        from nas.supernet import ProxyError, short_train_scores

        threads = torch.get_num_threads()
        for arch in archs:
            torch.set_num_threads(1)
            try:
                (score,) = short_train_scores([arch], self.dataset, self.batches, scale=self.scale,
                                              steps=self.steps, seed=self.seed, placement=self.placement)
            except ProxyError:
                score = None
            finally:
                torch.set_num_threads(threads)
            yield arch, None if score is None else float(score)

    def _keep(self, arch: Arch, score: float) -> dict[str, float]:
        """Add one score to the cache file (re-read first: another worker may have added some)."""
        from nas.atomic import write_atomic

        cached = {**self._cached(), arch.id: score}
        write_atomic(self.cache_file, json.dumps(cached, sort_keys=True))
        return cached


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
        placement: the device the supernet evaluates on (None: the CPU).

    Raises:
        NasError: no checkpoint given, or one of another space.
    """

    column = "accuracy"
    label = "one-shot accuracy (supernet)"

    @classmethod
    def from_context(cls, context: ObjectiveContext) -> SupernetAccuracy:
        return cls(space=context.space, checkpoint=context.supernet, seed=context.seed, placement=context.placement)

    def __init__(self, *, space: str, checkpoint: str | None, data: str | None = None, max_val: int | None = 512,
                 seed: int = 0, placement: Placement | None = None):
        if checkpoint is None:
            raise NasError("accuracy source 'supernet' needs a trained supernet: --supernet CHECKPOINT "
                           "(from `nas supernet train --space SPACE`); or use --accuracy proxy or zero-cost")
        from nas.data import load_dataset
        from nas.space import load_space
        from nas.supernet import EvalBatches

        self.supernet = _load_supernet(checkpoint)
        if placement is not None:
            placement.place(self.supernet)
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
