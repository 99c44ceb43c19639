"""Where training runs and at what arithmetic precision: ``--device`` and ``--amp``.

Every training path (supernet, stand-alone, finalists) takes a
:class:`Placement`: the torch device and the autocast precision. It is
decided once, from the user's words, with one clear error for a device this
machine does not have, so a run never starts on the CPU when the user asked
for a GPU, nor dies later inside CUDA.

* ``auto`` is CUDA when torch sees a CUDA device, else the CPU. MPS is used
  only when asked for: its kernels miss some ops the blocks use.
* ``--amp bf16`` autocasts to bfloat16 (CUDA and CPU); ``--amp fp16`` to
  float16 with a gradient scaler, on CUDA only: CPU autocast has no float16
  matmuls worth having, and a silent fallback would train a different model
  than the one asked for.
* On CUDA, convolutional models run in ``channels_last`` memory format (the
  layout cuDNN's tensor-core kernels want); the numbers are those of the
  default layout.
* A model whose weights, gradients and AdamW state alone exceed the memory the
  device has free is refused before its tensors are made
  (:meth:`Placement.check_training_fits`): otherwise a too-wide supernet makes
  the machine swap for an hour, or dies in the allocator.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from nas.errors import NasError

__all__ = ["AMP_MODES", "DeviceError", "Placement", "available_host_memory", "resolve_device"]

AMP_MODES = ("off", "bf16", "fp16")
_CUDA = re.compile(r"cuda(?::(\d+))?")
_TRAINING_BYTES_PER_PARAMETER = 16  # float32 weight, its gradient, and AdamW's two moments
_WEIGHT_BYTES_PER_PARAMETER = 4  # every model is made in float32 on the host before it moves


def available_host_memory() -> int | None:
    """Bytes the host can still give without swapping (``MemAvailable``), or None where it cannot tell."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class DeviceError(NasError):
    """A device or precision this machine cannot give; the message says what it has instead."""


def resolve_device(text: str) -> torch.device:
    """The torch device ``text`` names: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        DeviceError: an unknown name, or a device this machine does not have.
    """
    spec = text.strip().lower()
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (torch.backends.mps.is_built() and torch.backends.mps.is_available()):
            raise DeviceError("--device mps: this machine has no Apple GPU (torch.backends.mps.is_available() is "
                              "False); use --device cpu")
        return torch.device("mps")
    match = _CUDA.fullmatch(spec)
    if match is None:
        raise DeviceError(f"--device {text!r}: unknown device; choose auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {text}: this machine has no CUDA device (torch.cuda.is_available() is False; "
                          "this torch build is " + ("CPU-only" if torch.version.cuda is None else
                                                    f"for CUDA {torch.version.cuda}") + "); use --device cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


@dataclass(frozen=True)
class Placement:
    """Where a training run computes (see the module docstring).

    Attributes:
        device: from :func:`resolve_device`.
        amp: ``off``, ``bf16`` or ``fp16`` (autocast precision of forward passes).
    """

    device: torch.device = torch.device("cpu")
    amp: str = "off"

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise DeviceError(f"--amp {self.amp!r}: unknown; choose one of {', '.join(AMP_MODES)}")
        if self.amp == "fp16" and self.device.type != "cuda":
            raise DeviceError(f"--amp fp16 needs a CUDA device (this run is on {self.device}); float16 autocast "
                              "on the CPU is not supported here: use --amp bf16 or --amp off")

    @classmethod
    def parse(cls, device: str = "cpu", amp: str = "off") -> Placement:
        """The placement the CLI's ``--device`` and ``--amp`` ask for."""
        return cls(resolve_device(device), amp)

    def for_this_process(self) -> Placement:
        """Under torchrun, plain ``cuda`` means this process's GPU, ``cuda:LOCAL_RANK``."""
        if self.on_cuda and self.device.index is None:
            return Placement(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), self.amp)
        return self

    @property
    def rng_devices(self) -> list[int]:
        """The CUDA devices whose generators a run forks and checkpoints (none off CUDA)."""
        return [self.device.index or 0] if self.on_cuda else []

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def place(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the device (in place), in channels_last on CUDA when it has convolutions."""
        module.to(self.device)
        if self.on_cuda and any(isinstance(sub, nn.Conv2d) for sub in module.modules()):
            module.to(memory_format=torch.channels_last)
        return module

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device: pinned and copied without blocking on CUDA, untouched on the CPU."""
        if self.device.type == "cpu":
            return images, labels
        if self.on_cuda:
            images, labels = images.pin_memory(), labels.pin_memory()
            images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
            return images, labels.to(self.device, non_blocking=True)
        return images.to(self.device), labels.to(self.device)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward passes under ``--amp`` (a no-op when it is ``off``)."""
        if self.amp == "off":
            yield
            return
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def scaler(self) -> torch.amp.GradScaler | None:
        """The gradient scaler fp16 needs (None for ``off`` and ``bf16``, whose range is float32's)."""
        return torch.amp.GradScaler(self.device.type) if self.amp == "fp16" else None

    def check_training_fits(self, parameters: int, what: str, remedy: str) -> None:
        """Refuse to train ``parameters`` float32 parameters where their training state cannot fit.

        Counts the weights, gradients and AdamW moments only, not activations, so it never refuses a run
        that would fit. Processes that torchrun starts on one host each make their own copy there.

        Raises:
            DeviceError: naming ``what`` (e.g. "the supernet of 'metaformer' at width 1.0"), the memory it needs
                and has, and ``remedy`` (what to change).
        """
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        host_bytes = (_WEIGHT_BYTES_PER_PARAMETER if self.device.type != "cpu" else
                      _TRAINING_BYTES_PER_PARAMETER) * parameters * processes
        needs = [(host_bytes, "this machine's memory", available_host_memory())]
        if self.on_cuda:
            needs.append((_TRAINING_BYTES_PER_PARAMETER * parameters, str(self.device),
                          torch.cuda.mem_get_info(self.device)[0]))
        for needed, where, free in needs:
            if free is not None and needed > free:
                raise DeviceError(
                    f"{what} has {parameters / 1e6:,.0f}M parameters: training them needs {needed / 2**30:.1f} "
                    f"GiB of {where} for weights, gradients and AdamW state alone, and {free / 2**30:.1f} GiB "
                    f"is free; {remedy}")

    def describe(self) -> dict[str, str]:
        return {"device": str(self.device), "amp": self.amp}
