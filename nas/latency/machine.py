"""The facts of the machine ``nas profile`` runs on: CPU, caches, clock, and its measured peaks.

The packaged targets take their device facts from data sheets. The local target
takes them from the machine itself: the CPU model, cores, caches and clock from
``lscpu`` (or ``/proc/cpuinfo`` where ``lscpu`` is missing), the SIMD width
from the CPU flags, and the two numbers the roofline model divides by, measured
here with the threads and the clock the profile uses: the float32
matrix-multiply rate of a large ``torch.mm`` (the compute peak) and the
bandwidth of a large tensor copy (the memory peak). Both are the best of a few
runs, since on a shared machine other work only ever makes a run slower, and
with one thread they are timed by the thread's CPU time, like the models (by
the wall clock, at a load of 4-5 on this project's 2-core machine, the GEMM
peak came out at half its CPU-time value). The fitted efficiencies are relative
to these measured peaks, so compute efficiencies near 1 mean "as fast as a big
GEMM", not "as fast as the data sheet".
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Machine", "machine_facts", "measure_peaks", "runtime_versions"]

_GEMM_SIZE = 1024
_COPY_MB = 64
_PEAK_RUNS = 5


@dataclass(frozen=True)
class Machine:
    """What ``nas profile`` records about the machine.

    Attributes:
        cpu_model: the CPU's model name, e.g. ``Intel(R) Xeon(R) Processor @ 2.80GHz``.
        logical_cpus: CPUs the operating system sees.
        cores: physical cores (sockets x cores per socket), if known.
        threads_per_core: hardware threads per core, if known.
        caches: cache level -> size as ``lscpu`` gives it (e.g. ``{"L3": "48 MiB (1 instance)"}``).
        l3_mb: last-level cache in MB, if known.
        clock_ghz: the clock in the model name, else the current MHz of ``/proc/cpuinfo``.
        simd_lanes: float32 lanes of the widest vector unit the flags advertise (16 AVX-512, 8 AVX2, 4 otherwise).
        hypervisor: the hypervisor vendor where the CPU is virtual, else ``""``.
        system: ``platform.platform()``.
    """

    cpu_model: str
    logical_cpus: int
    cores: int | None
    threads_per_core: int | None
    caches: dict[str, str]
    l3_mb: float | None
    clock_ghz: float | None
    simd_lanes: int
    hypervisor: str
    system: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lscpu() -> dict[str, str]:
    if shutil.which("lscpu") is None:
        return {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if out:
                break  # the first processor is enough
            continue
        out.setdefault(key.strip(), value.strip())
    return out


def _int(text: str | None) -> int | None:
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def _mb(text: str | None) -> float | None:
    """``48 MiB (1 instance)`` -> 48.0; ``1.3 MiB`` -> 1.3; ``512 KiB`` -> 0.5."""
    match = re.match(r"\s*([\d.]+)\s*([KMG])i?B", text or "")
    if not match:
        return None
    return float(match.group(1)) * {"K": 1 / 1024, "M": 1.0, "G": 1024.0}[match.group(2)]


def machine_facts() -> Machine:
    """The machine's facts from ``lscpu`` and ``/proc/cpuinfo`` (what neither gives is ``None``)."""
    lscpu = _lscpu()
    cpuinfo = _cpuinfo()
    model = lscpu.get("Model name") or cpuinfo.get("model name") or platform.processor() or "unknown CPU"
    flags = set((lscpu.get("Flags") or cpuinfo.get("flags") or "").split())
    sockets = _int(lscpu.get("Socket(s)"))
    per_socket = _int(lscpu.get("Core(s) per socket"))
    clock = re.search(r"@\s*([\d.]+)\s*GHz", model)
    clock_ghz = float(clock.group(1)) if clock else None
    if clock_ghz is None and cpuinfo.get("cpu MHz"):
        clock_ghz = round(float(cpuinfo["cpu MHz"]) / 1000.0, 3)
    caches = {level: lscpu[f"{level} cache"] for level in ("L1d", "L1i", "L2", "L3") if f"{level} cache" in lscpu}
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    return Machine(cpu_model=model, logical_cpus=os.cpu_count() or 1,
                   cores=sockets * per_socket if sockets and per_socket else None,
                   threads_per_core=_int(lscpu.get("Thread(s) per core")), caches=caches,
                   l3_mb=_mb(caches.get("L3")), clock_ghz=clock_ghz, simd_lanes=lanes,
                   hypervisor=lscpu.get("Hypervisor vendor", ""), system=platform.platform())


def measure_peaks(threads: int, *, clock: str = "wall") -> dict[str, float]:
    """The float32 GEMM rate (TFLOPS, ``gemm_tflops``) and copy bandwidth (GB/s, ``copy_gbs``) with ``threads``.

    GEMM: ``torch.mm`` of two 1024 x 1024 matrices (2 x 1024^3 FLOPs); copy: ``Tensor.copy_`` of 64 MB
    (read + written bytes counted). Best of five runs each, after one warm-up, timed by ``clock``: ``cpu``
    (the calling thread's CPU time; one thread only) or ``wall``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        a = torch.randn(_GEMM_SIZE, _GEMM_SIZE, generator=generator)
        b = torch.randn(_GEMM_SIZE, _GEMM_SIZE, generator=generator)
        source = torch.randn(_COPY_MB * 2 ** 20 // 4, generator=generator)
        target = torch.empty_like(source)
        timer = time.thread_time if clock == "cpu" else time.perf_counter
        with torch.inference_mode():
            gemm = _best(lambda: torch.mm(a, b), timer)
            copy = _best(lambda: target.copy_(source), timer)
    finally:
        torch.set_num_threads(previous)
    return {"gemm_tflops": 2.0 * _GEMM_SIZE ** 3 / gemm / 1e12,
            "copy_gbs": 2.0 * source.numel() * 4 / copy / 1e9}


def _best(run: Callable[[], object], timer: Callable[[], float]) -> float:
    run()
    times = []
    for _ in range(_PEAK_RUNS):
        start = timer()
        run()
        times.append(timer() - start)
    return min(times)


def runtime_versions() -> dict[str, str]:
    """Versions of python, torch and (when installed) onnxruntime."""
    versions = {"python": platform.python_version(), "torch": str(torch.__version__)}
    try:
        import onnxruntime
    except ImportError:
        versions["onnxruntime"] = "not installed"
    else:
        versions["onnxruntime"] = str(onnxruntime.__version__)
    return versions
