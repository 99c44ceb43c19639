"""Short-training scores: each arch trained alone for a few dozen steps, then evaluated.

Where a ranking matters more than seconds per candidate, a short training run
is the better accuracy signal at this project's proxy budgets: a few dozen
steps from a random start order archs more like stand-alone training than
one-shot scores under the search's supernets or NASWOT do, at a far higher
cost per candidate. ``bench/supernet_rank.py`` measures both, against
stand-alone training at the proxy scale.

Each arch is built at the proxy scale with weights drawn from ``seed`` (or
copied from a supernet, to measure what inherited weights add), trained with
AdamW for ``steps`` steps of a one-epoch cosine schedule without warm-up, has
its BatchNorm statistics recalibrated and is evaluated on ``batches``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nas.arch import Arch
from nas.data import Dataset
from nas.errors import NasError
from nas.supernet.device import Placement
from nas.supernet.evaluate import EvalBatches
from nas.supernet.jobs import ModelJob
from nas.supernet.proxy import ProxyScale
from nas.supernet.supernet import Supernet
from nas.supernet.train_settings import TrainSettings
from nas.supernet.trainer import Trainer, TrainOptions

__all__ = ["DEFAULT_SHORT_STEPS", "RECIPE_VERSION", "short_train_scores"]

DEFAULT_SHORT_STEPS = 60
RECIPE_VERSION = 1  # bump when the training recipe changes, so that cached scores of the old one are not reused


def short_train_scores(archs: Sequence[Arch], dataset: Dataset, batches: EvalBatches, *, scale: ProxyScale,
                       steps: int = DEFAULT_SHORT_STEPS, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                       inherit_from: Supernet | None = None, placement: Placement | None = None) -> np.ndarray:
    """Top-1 accuracy of each arch after ``steps`` training steps alone at ``scale``.

    Args:
        archs: the architectures (full scale; ``scale`` proxies them).
        dataset: trained on its training split; one run never goes past one epoch.
        batches: calibration and validation batches at ``scale``'s resolution.
        steps: optimiser steps per arch, at most one epoch's worth.
        seed: initial weights and data order, the same for every arch.
        inherit_from: start from the weights each arch inherits from this supernet instead of random ones.
        placement: the device and precision (None: the CPU in float32).

    Returns:
        ``len(archs)`` accuracies in [0, 1].

    Raises:
        NasError: ``steps`` < 1 or more than one epoch of ``dataset`` at ``batch_size``.
    """
    steps_per_epoch = dataset.num_train // batch_size
    if not 1 <= steps <= steps_per_epoch:
        raise NasError(f"short training: steps must be in [1, {steps_per_epoch}] (one epoch of "
                       f"{dataset.num_train} images at batch {batch_size}), got {steps}")
    settings = TrainSettings(epochs=1, batch_size=batch_size, num_random=0, distill=False, seed=seed, lr=lr,
                             warmup_epochs=0.0)
    options = TrainOptions(max_steps=steps, progress=False, evaluate=False, placement=placement or Placement())
    out = np.empty(len(archs), dtype=np.float64)
    for index, arch in enumerate(archs):
        job = ModelJob(arch, scale, seed=seed)
        if inherit_from is not None:
            job.module.load_state_dict(inherit_from.extract(arch).state_dict())
        Trainer(job, dataset, settings, options=options).run()
        out[index] = job.metrics(batches)["accuracy"]
    return out
