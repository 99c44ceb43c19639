"""Short trainings of many candidates at once: one worker process per CPU, one torch thread each.

A short training run of a proxy-scale candidate is too small for intra-op
threads to help (most of its time is per-op overhead), so a machine with
several CPUs is used better by training several candidates side by side.
Each worker runs one torch thread, which also makes a candidate's score
independent of how many workers there are: the score a worker gives is the
score of the candidate trained alone in one thread (``ShortTrainAccuracy``
trains in process under one thread when it has one CPU).

Workers are ``python -m nas.supernet.training_pool`` processes that read one
Arch (JSON) per line on stdin and answer one score per line on stdout. Plain
subprocesses, not ``multiprocessing``: its ``spawn`` re-imports the caller's
main script, which breaks a user's script without a ``__main__`` guard, and a
``fork`` of a process that ran torch can deadlock in OpenMP. Each worker loads
the dataset and its evaluation batches once, and ignores Ctrl-C: the parent
handles it, and a worker ends when its stdin closes.
"""

from __future__ import annotations

import json
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from nas.arch import Arch
from nas.errors import NasError

if TYPE_CHECKING:
    from nas.supernet.device import Placement

__all__ = ["TrainingPool"]


class TrainingPool:
    """``workers`` processes that short-train candidates under one recipe (see the module docstring).

    Args:
        workers: processes (>= 1).
        data: the dataset spec (``nas.data.load_dataset``; None: the bundled default).
        recipe: ``{"scale": ProxyScale.to_dict(), "steps": int, "seed": int}``.
        placement: the device and precision every worker trains on (None: the CPU in float32).
    """

    def __init__(self, workers: int, *, data: str | None, recipe: dict[str, Any], placement: Placement | None = None):
        where = {} if placement is None else placement.describe()
        setup = json.dumps({"data": data, "recipe": recipe, "placement": where})
        self._workers = [subprocess.Popen([sys.executable, "-m", __name__, setup], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, bufsize=1)
                         for _ in range(workers)]

    def scores(self, archs: Sequence[Arch]) -> Iterator[tuple[int, float | None]]:
        """``(index into archs, score or None)`` as each candidate finishes, in no fixed order; None where it
        does not fit the proxy scale.

        Raises:
            NasError: a worker died (its error is on stderr).
        """
        queue = iter(range(len(archs)))
        busy: dict[IO[str], int] = {}
        with selectors.DefaultSelector() as selector:
            for worker in self._workers:
                index = next(queue, None)
                if index is None:
                    break
                self._send(worker, archs[index])
                busy[worker.stdout] = index  # type: ignore[index]
                selector.register(worker.stdout, selectors.EVENT_READ, worker)  # type: ignore[arg-type]
            while busy:
                for key, _ in selector.select():
                    worker, stream = key.data, key.fileobj
                    answer = stream.readline()  # type: ignore[union-attr]
                    if not answer:
                        raise NasError(f"a short-training worker exited with status {worker.wait()}; its error is "
                                       "above")
                    yield busy.pop(stream), json.loads(answer)  # type: ignore[arg-type]
                    index = next(queue, None)
                    if index is None:
                        selector.unregister(stream)
                    else:
                        self._send(worker, archs[index])
                        busy[stream] = index  # type: ignore[index]

    @staticmethod
    def _send(worker: subprocess.Popen[str], arch: Arch) -> None:
        worker.stdin.write(arch.to_json().replace("\n", " ") + "\n")  # type: ignore[union-attr]

    def close(self) -> None:
        """End the workers (each finishes the candidate it holds)."""
        for worker in self._workers:
            worker.stdin.close()  # type: ignore[union-attr]
        for worker in self._workers:
            worker.wait()


def _serve(setup: dict[str, Any]) -> None:
    """A worker: one score (or null) on stdout per Arch read on stdin, until stdin closes."""
    import torch

    from nas.data import load_dataset
    from nas.supernet.device import Placement
    from nas.supernet.evaluate import EvalBatches
    from nas.supernet.proxy import ProxyError, ProxyScale
    from nas.supernet.short_train import short_train_scores

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    dataset = load_dataset(setup["data"])
    recipe = setup["recipe"]
    where = setup["placement"]
    placement = Placement(torch.device(where["device"]), where["amp"]) if where else None
    scale = ProxyScale(**recipe["scale"])
    batches = EvalBatches.from_dataset(dataset, resolution=scale.resolution, channels=3, batch_size=256,
                                       seed=recipe["seed"])
    for line in sys.stdin:
        try:
            (score,) = short_train_scores([Arch.from_json(line)], dataset, batches, scale=scale,
                                          steps=recipe["steps"], seed=recipe["seed"], placement=placement)
            answer: float | None = float(score)
        except ProxyError:
            answer = None
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
