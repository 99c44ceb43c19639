"""Timing whole models on this machine: the measurement protocol of ``nas profile``.

Protocol (recorded with every profile, see :class:`Protocol`): batch 1, float32,
a fixed number of threads, models built by :func:`nas.build` with a seeded
initialisation, and for each model ``warmup`` untimed runs, then ``repeats``
timed runs whose minimum (or median, ``statistic``) is the latency. The machine
may be shared, so:

* with one thread (the default) a run is timed by the *thread's CPU time*
  (``time.thread_time``): eager PyTorch and onnxruntime with one intra-op
  thread compute on the calling thread, and its CPU time leaves out the time
  the scheduler gave to other processes, which wall-clock time does not. On
  a loaded shared machine the wall-clock repeats of one model spread by more
  than the +-10% the predictor aims for, so that noise alone would put held-out
  models outside it (a profile records the spread under ``noise``). The wall
  time of every run is recorded too, and their ratio says how loaded the
  machine was. With more threads, work runs on other threads, so the clock is
  the wall clock;
* runs are *interleaved*: a chunk of models is prepared together and each
  round times every model of the chunk once, so a burst of load elsewhere
  spreads over several models' runs instead of hitting every run of one model;
  the 1-minute load average before and after each chunk is recorded;
* the statistic is the *minimum* of the repeats by default: other processes
  only ever slow a run down (even its CPU time, through the caches and memory
  bandwidth they share), so the fastest run is the best estimate of the
  latency on an idle machine. On a loaded machine, fitting and validating on
  minima puts more of the held-out models within +-10% than on medians, with
  either runtime (``nas profile --statistic median`` compares).
  ``statistic="median"`` keeps the median.

Runtimes:

* ``torch``: eager PyTorch under ``torch.inference_mode`` with
  ``torch.set_num_threads(threads)``;
* ``onnxruntime``: the model exported with ``torch.onnx.export`` (the TorchScript
  exporter: the dynamo exporter of :mod:`nas.export` takes about a minute per
  model, too slow for a profile of a hundred models) and run by an
  ``InferenceSession`` on the CPU execution provider with all graph
  optimisations, ``threads`` intra-op threads and one inter-op thread. An Arch
  with int8 blocks runs as its QDQ model (:func:`nas.qdq.export_qdq`, the one
  ``nas export --format onnx`` writes: ranges observed on the timed input,
  batch dimension dynamic), so its int8 layers run onnxruntime's int8 kernels.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch

from nas.arch import Arch
from nas.build import build
from nas.errors import NasError
from nas.qdq import export_qdq, has_int8
from nas.quiet import quiet_exporters

__all__ = ["RUNTIMES", "CLOCKS", "STATISTICS", "Protocol", "Timing", "prepare", "time_chunk"]

RUNTIMES = ("torch", "onnxruntime")
CLOCKS = ("cpu", "wall")
STATISTICS = ("min", "median")
_INIT_SEED = 0
_ONNX_OPSET = 17


@dataclass(frozen=True)
class Protocol:
    """How models are timed.

    Attributes:
        runtime: one of :data:`RUNTIMES`.
        threads: intra-op threads (torch's ``set_num_threads``, onnxruntime's ``intra_op_num_threads``).
        warmup: untimed runs per model before its timed ones.
        repeats: timed runs per model.
        chunk: models prepared together and timed round-robin.
        batch: inputs per run (always 1 here; recorded for the reader).
        clock: ``cpu`` (the calling thread's CPU time; one thread only) or ``wall``; ``None`` picks ``cpu`` for
            one thread and ``wall`` for more.
        statistic: what the timed runs of a model become: their ``min`` or their ``median``.
        passes: sweeps over all the models, each timing every model ``repeats`` times; the statistic is over the
            runs of all passes (:mod:`nas.latency.profile_timings` says why).
    """

    runtime: str = "torch"
    threads: int = 1
    warmup: int = 2
    repeats: int = 7
    chunk: int = 4
    batch: int = 1
    clock: str | None = None
    statistic: str = "min"
    passes: int = 2

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise NasError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        for name in ("threads", "repeats", "chunk", "batch", "passes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NasError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise NasError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if self.batch != 1:
            raise NasError(f"batch must be 1 (the local predictor is fitted at batch 1), got {self.batch}")
        if self.clock is None:
            object.__setattr__(self, "clock", "cpu" if self.threads == 1 else "wall")
        if self.clock not in CLOCKS:
            raise NasError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.clock == "cpu" and self.threads != 1:
            raise NasError(f"clock 'cpu' times the calling thread only; with threads={self.threads} use 'wall'")
        if self.statistic not in STATISTICS:
            raise NasError(f"statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "interleaved": "each round times every model of a chunk once"}


@dataclass(frozen=True)
class Timing:
    """The timed runs of one model in round order: ``samples_ms`` by the protocol's clock, ``wall_ms`` by the
    wall clock, and the 1-minute load average around its chunk."""

    samples_ms: tuple[float, ...]
    wall_ms: tuple[float, ...]
    load_before: float
    load_after: float

    def latency_ms(self, statistic: str) -> float:
        """The model's latency: the ``min`` or ``median`` of its timed runs."""
        return float(min(self.samples_ms) if statistic == "min" else statistics.median(self.samples_ms))


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _model_and_input(arch: Arch) -> tuple[torch.nn.Module, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        model = build(arch).eval()
    spec = arch.input
    generator = torch.Generator().manual_seed(_INIT_SEED)
    return model, torch.randn(1, spec.channels, spec.resolution, spec.resolution, generator=generator)


def _torch_runner(arch: Arch) -> Callable[[], object]:
    model, example = _model_and_input(arch)

    def run() -> object:
        with torch.inference_mode():
            return model(example)

    return run


def _float_onnx(arch: Arch, model: torch.nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    try:
        with quiet_exporters(), torch.no_grad():
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["image"],
                              output_names=["logits"], opset_version=_ONNX_OPSET)
    except Exception as exc:  # the exporter raises many unrelated types; all mean "cannot export"
        raise NasError(f"ONNX export of {arch.name or arch.id} failed: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return buffer.getvalue()


def _onnxruntime_runner(arch: Arch, threads: int) -> Callable[[], object]:
    try:
        import onnxruntime
    except ImportError:
        raise NasError('the onnxruntime runtime needs onnxruntime: pip install "nas[onnx]"') from None
    model, example = _model_and_input(arch)
    if has_int8(arch):
        data = export_qdq(model, example, opset=_ONNX_OPSET, dynamic_batch=True).data
    else:
        data = _float_onnx(arch, model, example)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {"image": example.numpy()}
    return lambda: session.run(None, feed)


def prepare(arch: Arch, protocol: Protocol) -> Callable[[], object]:
    """A callable that runs one batch-1 inference of ``arch`` under ``protocol``'s runtime.

    Raises:
        NasError: the runtime is not installed, or the model cannot be exported to it.
    """
    with _threads(protocol.threads):
        if protocol.runtime == "torch":
            return _torch_runner(arch)
        return _onnxruntime_runner(arch, protocol.threads)


def time_chunk(runners: Sequence[Callable[[], object]], protocol: Protocol) -> list[Timing]:
    """Time prepared models round-robin: ``warmup`` untimed rounds, then ``repeats`` timed rounds."""
    load_before = os.getloadavg()[0]
    samples: list[list[float]] = [[] for _ in runners]
    walls: list[list[float]] = [[] for _ in runners]
    cpu = protocol.clock == "cpu"
    with _threads(protocol.threads):
        for _ in range(protocol.warmup):
            for run in runners:
                run()
        for _ in range(protocol.repeats):
            for index, run in enumerate(runners):
                start_cpu = time.thread_time()
                start = time.perf_counter()
                run()
                wall = time.perf_counter() - start
                used = time.thread_time() - start_cpu
                walls[index].append(wall * 1e3)
                samples[index].append((used if cpu else wall) * 1e3)
    load_after = os.getloadavg()[0]
    return [Timing(tuple(runs), tuple(wall), load_before, load_after)
            for runs, wall in zip(samples, walls, strict=True)]
