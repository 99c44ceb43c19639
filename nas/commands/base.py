"""What every ``nas`` subcommand shares: the :class:`Command` base and the helpers that print and parse.

Every path a command writes to and every count it takes is parsed by one of the argparse types here, so a bad
one is refused before any work, in one line with exit status 2 (see :mod:`nas.cli`):

* :func:`output_file`: a file to write; its folder is created if its parent exists (like ``mkdir``, not
  ``mkdir -p``: a typo does not become a tree of new folders), and must be writable;
* :func:`output_dir`: a folder to write into, created if missing; what exists of it must be a writable folder;
* :func:`count`: an int within bounds, the bound named in the error (the ``MAX_*`` constants below).

They raise :class:`BadArgument`, which argparse reports for a given argument and :mod:`nas.cli` for a default
path a command checks itself, so both read the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.errors import ConfigError, NasError
from nas.runs.settings import MAX_CANDIDATES, MAX_SEED  # the bounds a run's settings keep, so the CLI's agree

__all__ = ["BadArgument", "Command", "print_json", "print_table", "resolve_arch", "count", "positive", "positive_float",
           "output_file", "output_dir", "precision_spec", "threads_option", "set_threads", "max_threads",
           "MAX_CANDIDATES", "MAX_PRINTED_POINTS", "MAX_STEPS", "MAX_BATCH", "MAX_SEED", "max_resolution", "resolution",
           "arch_resolution"]


class BadArgument(NasError, argparse.ArgumentTypeError):
    """A command-line value (or a command's default path) that cannot be used; argparse and the CLI both print it."""


MAX_PRINTED_POINTS = 10_000
"""Most points one command prints as Archs (``nas space sample -n``): each is decoded and held until printed, so a
count meant for the Python API (:meth:`nas.space.Space.sample_vectors`) is refused before any work."""
MAX_STEPS = 1_000_000_000
"""Most epochs, steps or timed repeats."""
MAX_BATCH = 65536
"""Largest batch."""


class Command:
    """Base of subcommands: ``name``, ``add_arguments(parser)`` and ``run(args) -> int``; the class docstring's
    first line is the command's help (see :mod:`nas.cli`)."""

    name: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's own arguments."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_table(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False))


def resolve_arch(reference: str, resolution: int | None = None) -> Any:
    """An Arch from a zoo name or a YAML/JSON file path, optionally at another resolution.

    Every command that reads an arch gets it here, validated the same way: the Arch's own checks, then its
    parameters and MACs against the limits (:func:`nas.cost.check_limits`, on ``meta``) before anything is
    built or priced.
    """
    import nas

    looks_like_file = reference.endswith((".yaml", ".yml", ".json")) or "/" in reference
    source = reference if looks_like_file else None
    arch = nas.Arch.load(Path(reference)) if looks_like_file else nas.zoo.get(reference)
    if resolution is not None:
        try:
            arch = arch.with_resolution(resolution)
        except ConfigError as exc:
            raise ConfigError(f"{exc.message} (at --resolution {resolution})", path=exc.path, source=source) from None
    nas.cost.check_limits(arch, source=source)
    return arch


def count(maximum: int | Callable[[], int], *, minimum: int = 1, bound: str = "") -> Callable[[str], int]:
    """An argparse type: an int in ``[minimum, maximum]``.

    Args:
        maximum: the largest value, or a function giving it when an argument is parsed.
        minimum: the smallest value.
        bound: what the maximum stands for, shown after it in the error (``the CPUs of this machine``).

    Example:
        >>> count(10)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise BadArgument(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise BadArgument(f"must be >= {minimum}, got {value}")
        largest = maximum() if callable(maximum) else maximum
        if value > largest:
            raise BadArgument(f"must be <= {largest}{f' ({bound})' if bound else ''}, got {value}")
        return value

    return parse


positive = count(MAX_CANDIDATES)
"""An argparse type: an int in ``[1, MAX_CANDIDATES]``, for counts of candidates, points and models."""


def max_resolution() -> int:
    """The largest input resolution: the Arch's own limit, so a command refuses at once what an Arch would."""
    from nas.limits import current

    return current().resolution


resolution = count(max_resolution, bound="NAS_MAX_RESOLUTION")
"""An argparse type: an input resolution for a model this command makes at a proxy scale."""

arch_resolution = count(math.inf)  # type: ignore[arg-type]
"""An argparse type for ``--resolution`` over an Arch's own (an int >= 1): the Arch applies its limit when it is
made, so the error names its field (``input.resolution``) like any other bad value of the Arch."""


def _finite_float(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadArgument(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise BadArgument(f"must be a finite number {'>=' if allow_zero else '>'} 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite float > 0."""
    return _finite_float(text, allow_zero=False)


def non_negative_float(text: str) -> float:
    """An argparse type: a finite float >= 0."""
    return _finite_float(text, allow_zero=True)


def precision_spec(text: str) -> Any:
    """An argparse type: a :class:`~nas.arch.Precision` written ``WEIGHTS[/ACTIVATIONS]`` (``int8``,
    ``int8:channel/int8:affine``; :meth:`~nas.arch.Precision.from_spec`)."""
    from nas.arch import Precision

    try:
        return Precision.from_spec(text, path="")
    except ConfigError as error:
        raise BadArgument(f"{error} (written WEIGHTS[/ACTIVATIONS], e.g. int8 or int8:channel/int8:affine)") from None


def _check_writable(folder: Path) -> None:
    """Refuse a folder where no file can be created; the probe is an unnamed temporary file, gone at once."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadArgument(f"{folder}: cannot create a file there ({exc.strerror or exc})") from None


def output_file(text: str) -> Path:
    """An argparse type: a file to write, not a folder. Its folder may be missing if the folder's parent exists
    (the writer creates that one folder); what exists must be a writable folder."""
    path = Path(text)
    if path.is_dir():
        raise BadArgument(f"{path}: is a folder; give the path of a file")
    folder = path.parent
    existing = folder if folder.exists() else folder.parent
    if not existing.exists():
        raise BadArgument(f"{folder}: no such folder, nor its parent {existing} (create them first)")
    if not existing.is_dir():
        raise BadArgument(f"{existing}: not a folder")
    _check_writable(existing)
    return path


def output_dir(text: str) -> Path:
    """An argparse type: a folder to write into, created if missing; what exists of the path must be a writable
    folder."""
    path = Path(text)
    existing = next(part for part in (path, *path.parents) if part.exists())
    if not existing.is_dir():
        raise BadArgument(f"{existing}: exists and is not a folder")
    _check_writable(existing)
    return path


_THREADS_HELP = ("torch intra-op threads (default 1: proxy-scale networks are too small to gain from more, and "
                 "extra threads slow down on a busy machine)")


def max_threads() -> int:
    """The most ``--threads`` can ask for: the machine's CPUs."""
    return os.cpu_count() or 1


def threads_option(parser: argparse.ArgumentParser, *, help_text: str | None = None) -> None:
    parser.add_argument("--threads", type=count(max_threads, bound="the CPUs of this machine"), default=1,
                        metavar="N", help=help_text or _THREADS_HELP)


def set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)


def device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--amp``, shared by every command that trains."""
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="where to train: cpu (default), auto (CUDA when present), cuda, cuda:N or mps")
    parser.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off",
                        help="mixed precision: bf16 autocast, fp16 autocast with a gradient scaler (CUDA only), "
                             "or off (default)")


def placement_of(args: argparse.Namespace) -> Any:
    """The :class:`~nas.supernet.device.Placement` of ``--device``/``--amp``; fails before any work starts."""
    from nas.supernet.device import Placement

    return Placement.parse(args.device, args.amp)
