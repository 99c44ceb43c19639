"""Stand-alone training of a run's finalists: the accuracy that one-shot scores stand in for, measured.

A search ranks thousands of candidates with a cheap accuracy signal (one-shot
under a supernet, a zero-cost score, a short training run, or the MACs stand-in). Its finalists, the
run's top candidates spread along the front (:meth:`Run.top`), are worth the
real thing: each is trained alone on the dataset, at the proxy scale of the
run's supernet (so the one-shot and stand-alone figures describe the same
network), and ``<run>/finalists.csv`` lists both. The Kendall tau between
them says how far the run's accuracy signal can be trusted.

Each finalist trains in ``<run>/finalists/<arch id>/`` with the trainer's
checkpoints, so a killed job picks up where it stopped and a finished one is
read back instead of trained again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas

from nas.atomic import write_atomic
from nas.errors import NasError
from nas.runs.run import Run
from nas.runs.supernets import DEFAULT_RECIPE
from nas.supernet.device import Placement
from nas.supernet.trainer import CHECKPOINT, RESULT

__all__ = ["FINALISTS_DIR", "FINALISTS_FILE", "proxy_scale_of", "train_finalists"]

FINALISTS_DIR = "finalists"
FINALISTS_FILE = "finalists.csv"


def proxy_scale_of(run: Run) -> tuple[float, int]:
    """``(width, resolution)`` of the run's supernet, or of the default recipe when it used none."""
    if run.settings.supernet is not None:
        folder = Path(run.settings.supernet)
        result = (folder if folder.is_dir() else folder.parent) / RESULT
        if result.is_file():
            scale = json.loads(result.read_text())["job"]["scale"]
            return float(scale["width"]), int(scale["resolution"])
    return DEFAULT_RECIPE.width, DEFAULT_RECIPE.resolution


def train_finalists(run: Run, *, count: int, epochs: int, data: str | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None, placement: Placement | None = None) -> pandas.DataFrame:
    """Train the run's ``count`` top candidates alone for ``epochs`` and write ``finalists.csv``.

    ``placement`` (device and mixed precision) defaults to the CPU in float32.

    Returns:
        One row per finalist: rank, arch id, the run's objective columns, ``standalone_accuracy``.

    Raises:
        NasError: the run has no feasible candidate, or ``count``/``epochs`` < 1.
        CheckpointError: a finalist folder from another setting (e.g. other epochs) cannot be resumed.
    """
    from nas.data import load_dataset
    from nas.supernet import TrainOptions, TrainSettings, train_model

    if count < 1 or epochs < 1:
        raise NasError(f"finalists: count and epochs must be >= 1, got {count} and {epochs}")
    chosen = run.top(count)
    if not chosen:
        raise NasError(f"{run.path}: no feasible candidate to train")
    width, resolution = proxy_scale_of(run)
    dataset = load_dataset(data)
    settings = TrainSettings(epochs=epochs, seed=run.settings.seed)
    options = TrainOptions(progress=progress, log=log, placement=placement or Placement())
    columns = [spec.column for spec in run.settings.objectives]
    rows = []
    for rank, (record, arch) in enumerate(chosen, start=1):
        out = run.path / FINALISTS_DIR / record.arch_id
        if not (out / RESULT).is_file():
            if log is not None:
                log(f"finalist {rank}/{len(chosen)}: {record.arch_id}, {epochs} epoch(s) at width x{width}, "
                    f"{resolution} px")
            out.parent.mkdir(parents=True, exist_ok=True)
            train_model(arch, dataset, settings, width=width, resolution=resolution, data_spec=data, out=out,
                        resume=(out / CHECKPOINT).is_file(), options=options)
        summary = json.loads((out / RESULT).read_text())
        if summary["settings"]["epochs"] != epochs:
            raise NasError(f"{out}: trained for {summary['settings']['epochs']} epoch(s), not {epochs}; "
                           f"delete it or ask for {summary['settings']['epochs']}")
        rows.append({"rank": rank, "arch_id": record.arch_id,
                     **{column: record.metrics[column] for column in columns},
                     "standalone_accuracy": summary["metrics"]["accuracy"]})
    table = pandas.DataFrame(rows)
    write_atomic(run.path / FINALISTS_FILE, table.to_csv(index=False))
    return table
