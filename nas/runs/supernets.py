"""The small supernet a search trains once per space and then reuses (its default accuracy source).

``nas search`` without ``--supernet`` scores accuracy one-shot under a small
supernet trained on the bundled dataset: width x0.125, 32 px, one epoch of
the sandwich rule with one random subnet per step. It is kept that small so
the main job, its training included, stays within its time budget on a few
CPU cores. It is a coarse accuracy signal: supernets trained longer (pass one
with ``--supernet``) and ``--accuracy short-train`` rank archs more like
training alone does, at a higher cost (``bench/supernet_rank.py`` measures
each).

The supernet lives under the runs folder, ``<runs>/supernets/<space>-<key>/``,
where ``key`` hashes the space file's bytes, every training setting and the
supernet's :data:`~nas.supernet.elastic.SHARING_VERSION`, so a changed space,
recipe or weight-sharing rule trains a new one and an unchanged one is found again.
Training writes checkpoints as it goes: a search killed while training picks
the supernet up where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nas.supernet.checkpoint import CheckpointError
from nas.supernet.device import Placement
from nas.supernet.elastic import SHARING_VERSION
from nas.supernet.trainer import CHECKPOINT, RESULT

__all__ = ["Recipe", "DEFAULT_RECIPE", "default_supernet_dir", "ensure_default_supernet"]


@dataclass(frozen=True)
class Recipe:
    """How a default supernet is trained; every field is part of its folder's key.

    Attributes:
        width, resolution: the proxy scale.
        scan: sampled points that size the shared tensors.
        epochs, batch_size, num_random, warmup_epochs, seed: the training run (:class:`nas.supernet.TrainSettings`).
        data: the dataset (``nas.data.load_dataset`` spec); None: the bundled default.
    """

    width: float = 0.125
    resolution: int = 32
    scan: int = 200
    epochs: int = 1
    batch_size: int = 64
    num_random: int = 1
    warmup_epochs: float = 0.1
    seed: int = 0
    data: str | None = None


DEFAULT_RECIPE = Recipe()


def default_supernet_dir(root: str | os.PathLike[str], space: str, recipe: Recipe | None = None) -> Path:
    """Where the default supernet of ``space`` (a name or file) lives under the runs folder ``root``."""
    from nas.space import load_space

    loaded = load_space(space)
    digest = hashlib.sha256(Path(loaded.source).read_bytes())
    digest.update(json.dumps(asdict(recipe or DEFAULT_RECIPE), sort_keys=True).encode())
    digest.update(f"sharing {SHARING_VERSION}".encode())
    return Path(root) / "supernets" / f"{loaded.name}-{digest.hexdigest()[:10]}"


def ensure_default_supernet(root: str | os.PathLike[str], space: str, *, recipe: Recipe | None = None,
                            progress: bool = True, log: Callable[[str], None] | None = None,
                            placement: Any = None) -> Path:
    """The folder of the default supernet of ``space``: reused when trained, else trained (or finished) now.

    Args:
        root: the runs folder (``nas search --out``).
        space: a space name or file.
        recipe: how to train it (None: :data:`DEFAULT_RECIPE`).
        progress: show the trainer's progress bar.
        log: receives one line saying whether the supernet is reused or trained, and the trainer's lines.

    Raises:
        CheckpointError: the folder holds a checkpoint that cannot be resumed (the message names it).
    """
    from nas.data import load_dataset
    from nas.supernet import TrainOptions, TrainSettings, train_supernet

    recipe = recipe or DEFAULT_RECIPE
    folder = default_supernet_dir(root, space, recipe)
    if (folder / RESULT).is_file():
        if log is not None:
            log(f"one-shot accuracy from the supernet in {folder} (trained earlier)")
        return folder
    settings = TrainSettings(epochs=recipe.epochs, batch_size=recipe.batch_size, num_random=recipe.num_random,
                             warmup_epochs=recipe.warmup_epochs, seed=recipe.seed)
    resume = (folder / CHECKPOINT).is_file()
    if log is not None:
        data = "the bundled data" if recipe.data is None else recipe.data
        log(f"{'finishing' if resume else 'training'} a small supernet for one-shot accuracy ({space}, width "
            f"x{recipe.width}, {recipe.resolution} px, {recipe.epochs} epoch(s) on {data}; once, then reused from "
            f"{folder})")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        train_supernet(space, load_dataset(recipe.data), settings, width=recipe.width, resolution=recipe.resolution,
                       scan=recipe.scan, data_spec=recipe.data, out=folder, resume=resume,
                       options=TrainOptions(progress=progress, log=log, placement=placement or Placement()))
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete {folder} to train the default supernet again") from None
    return folder
