"""Does a folder too large for memory train in bounded memory? (issue 27)

Writes ``--images`` small JPEGs (random sizes around ``--side`` px) in 10 class folders, loads the folder
(``STREAM_FROM_IMAGES`` images or more stream from disk; fewer are forced to with ``--stream``), trains a
zoo model one epoch on it at the proxy scale, and prints:

* the peak resident memory of this process and of its DataLoader workers, sampled every 50 ms, against
  what decoding every image into memory would take (uint8 RGB at the files' sizes, plus the float copy the
  in-memory loader resizes from);
* images per second, and the share of step time spent waiting for the next batch.

Usage::

    python bench/streaming.py                      # 20,000 images
    python bench/streaming.py --images 2000 --stream   # a smaller smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from nas.data import FolderDataset, load_dataset
from nas.supernet import TrainOptions, TrainSettings, train_model
from nas.zoo import get as zoo_arch


def write_folder(root: Path, images: int, side: int, seed: int) -> int:
    """``images`` JPEGs in 10 class folders; returns their decoded size in bytes (uint8 RGB)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    decoded = 0
    for number in range(images):
        label = number % 10
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in rng.integers(side * 3 // 4, side * 5 // 4 + 1, size=2))
        coarse = (rng.random((8, 8, 3)) * 90 + label * 16).astype(np.uint8)  # smooth: small files, fast to write
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(
            folder / f"{number:06d}.jpg", quality=85)
        decoded += width * height * 3
    return decoded


class PeakMemory:
    """The largest proportional set size (PSS: shared pages split between the processes that map them) of
    this process plus its children, sampled on a thread. RSS would count the pages DataLoader workers share
    with their parent once per worker."""

    def __init__(self, every: float = 0.05):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = me.memory_full_info().pss
            for child in me.children(recursive=True):
                try:
                    total += child.memory_full_info().pss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--side", type=int, default=160, help="typical image side in pixels (default 160)")
    parser.add_argument("--stream", action="store_true", help="stream even below the automatic threshold")
    parser.add_argument("--model", default="poolformer_s12")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="keep the generated folder here (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or Path(scratch) / "folder"
        began = time.perf_counter()
        decoded = write_folder(root, args.images, args.side, seed=0)
        print(f"wrote {args.images} JPEGs in {time.perf_counter() - began:.0f} s: "
              f"{sum(f.stat().st_size for f in root.rglob('*.jpg')) / 2**20:.0f} MiB on disk, "
              f"{decoded / 2**20:.0f} MiB decoded")
        baseline = psutil.Process().memory_full_info().pss
        data = load_dataset(root, stream=True if args.stream else None)
        if not isinstance(data, FolderDataset):
            print(f"{args.images} images load into memory; pass --stream or more --images", file=sys.stderr)
            return 2
        waits: list[float] = []
        from nas.supernet import trainer

        step = trainer.Trainer._step
        last = {"end": time.perf_counter()}

        def timed(self: trainer.Trainer, *rest: object) -> list[float]:
            waits.append(time.perf_counter() - last["end"])
            losses = step(self, *rest)
            last["end"] = time.perf_counter()
            return losses

        trainer.Trainer._step = timed  # type: ignore[method-assign]
        with PeakMemory() as memory:
            began = time.perf_counter()
            result = train_model(zoo_arch(args.model), data, TrainSettings(epochs=1, batch_size=64), width=0.125,
                                 resolution=args.resolution, options=TrainOptions(progress=False, evaluate=False))
            seconds = time.perf_counter() - began
        wait_share = sum(waits[1:]) / max(seconds, 1e-9)
        print(f"trained {args.model} one epoch ({result.steps} steps, {data.num_train} images) in {seconds:.0f} s: "
              f"{data.num_train / seconds:.0f} images/s on {os.cpu_count()} CPUs with "
              f"{min(len(os.sched_getaffinity(0)), 8)} DataLoader workers")
        print(f"peak memory (PSS), this process and its workers: {memory.peak / 2**20:.0f} MiB "
              f"({baseline / 2**20:.0f} MiB before loading); decoding the folder into memory would hold "
              f"{decoded / 2**20:.0f} MiB of uint8 pixels")
        print(f"waiting for data: {100 * wait_share:.1f}% of the epoch's wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
