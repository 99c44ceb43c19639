"""What every ``nas`` subcommand shares: the :class:`Command` base and the helpers that print and parse."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nas.errors import ConfigError

__all__ = ["Command", "print_json", "print_table", "resolve_arch", "positive", "threads_option", "set_threads"]


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


def positive(text: str) -> int:
    """An argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive, default=1, metavar="N",
                        help="torch intra-op threads (default 1: proxy-scale networks are too small to gain from more, "
                             "and extra threads slow down on a busy machine)")


def set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
