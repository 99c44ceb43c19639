"""Weight-sharing supernet over a space, its trainer, one-shot evaluation, and zero-cost proxies.

* :mod:`nas.supernet.proxy`: the proxy scale (width multiplier, resolution) as an ``Arch -> Arch`` transform;
* :mod:`nas.supernet.elastic`: max-size shared tensors and their keys;
* :mod:`nas.supernet.slicing`: how a subnet's tensor is cut from a shared one (the kinds' sharing declarations);
* :mod:`nas.supernet.supernet`: :class:`Supernet` (``set_active``, ``sample``, ``extract``);
* :mod:`nas.supernet.trainer`: sandwich-rule training, stand-alone training, checkpoints, DDP; what it trains
  (:mod:`nas.supernet.jobs`) and under which settings (:mod:`nas.supernet.train_settings`);
* :mod:`nas.supernet.evaluate`: BatchNorm recalibration and top-1 accuracy over many archs;
* :mod:`nas.supernet.short_train`: each arch trained alone for a few dozen steps (a slower, better-ranking score);
* :mod:`nas.supernet.zero_cost`: NASWOT, synflow and grad-norm scores.

Example:
    >>> import numpy as np
    >>> from nas.supernet import ProxyScale, Supernet
    >>> net = Supernet.create("convnext", scale=ProxyScale(num_classes=10), scan=32)  # doctest: +SKIP
    >>> model = net.extract(net.sample(np.random.default_rng(0)))  # doctest: +SKIP
"""

from __future__ import annotations

from nas.supernet import zero_cost  # noqa: F401  (zero-cost proxies: zero_cost.score, zero_cost.score_archs)
from nas.supernet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nas.supernet.elastic import CapacityError
from nas.supernet.evaluate import EvalBatches, accuracy, evaluate, kendall_tau, recalibrate_batchnorm
from nas.supernet.jobs import ModelJob, SupernetJob
from nas.supernet.proxy import ProxyError, ProxyScale, proxy
from nas.supernet.short_train import short_train_scores
from nas.supernet.slicing import ChunkRule, ConvKernel, PrefixRule, RelativeTableRule
from nas.supernet.supernet import Supernet, SupernetSpec
from nas.supernet.train_settings import TrainResult, TrainSettings
from nas.supernet.trainer import Trainer, TrainOptions, train_model, train_supernet

__all__ = [
    "CapacityError",
    "CheckpointError",
    "ChunkRule",
    "ConvKernel",
    "EvalBatches",
    "ModelJob",
    "PrefixRule",
    "ProxyError",
    "ProxyScale",
    "RelativeTableRule",
    "Supernet",
    "SupernetJob",
    "SupernetSpec",
    "TrainOptions",
    "TrainResult",
    "TrainSettings",
    "Trainer",
    "accuracy",
    "evaluate",
    "kendall_tau",
    "load_checkpoint",
    "proxy",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "short_train_scores",
    "train_model",
    "train_supernet",
    "zero_cost",
]
