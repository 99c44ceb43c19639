"""The ``nas`` command: thin over the library; parses, calls the API, prints.

Each subcommand is a class with ``add_arguments(parser)`` and ``run(args) -> int``
(:mod:`nas.commands`, one module per group), listed once in :data:`COMMANDS`;
its docstring's first line is its help. Every command takes ``--json`` for
machine-readable output. Errors the user can fix (a bad file, an unknown name)
print one line to stderr and exit with status 2, having written nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from nas.commands.base import Command
from nas.commands.catalog import BuildCommand, SpaceCommand, SpacesCommand, ZooCommand
from nas.commands.export import ExportCommand
from nas.commands.latency import PredictCommand, ProfileCommand, TargetsCommand
from nas.commands.quantization import AnalyzeCommand, QuantizeCommand
from nas.commands.search import FinalistsCommand, HistoryCommand, PlotCommand, SearchCommand
from nas.commands.training import SupernetCommand, TrainCommand
from nas.errors import NasError, NasWarning

__all__ = ["main", "COMMANDS"]

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command whose reader left


COMMANDS: tuple[Command, ...] = (ZooCommand(), BuildCommand(), SpacesCommand(), SpaceCommand(), PredictCommand(),
                                 TargetsCommand(), ProfileCommand(), PlotCommand(),
                                 ExportCommand(), SearchCommand(), HistoryCommand(), FinalistsCommand(),
                                 SupernetCommand(), TrainCommand(), QuantizeCommand(), AnalyzeCommand())


class _Parser(argparse.ArgumentParser):
    """argparse with a bad argument reported like every other bad input: one line on stderr, exit status 2.

    argparse's own ``error`` prints the usage block first; the line alone names the argument and the rule
    (``nas search: error: argument --budget: must be <= 1000000, got ...``), and ``--help`` shows the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="Neural-architecture search for vision backbones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        help_line = (command.__doc__ or "").strip().splitlines()[0]
        command_parser = sub.add_parser(command.name, help=help_line, description=help_line)
        command_parser.add_argument("--json", action="store_true", help="machine-readable output")
        command.add_arguments(command_parser)
        command_parser.set_defaults(handler=command)
    return parser


def _one_line_warnings(default: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints a :class:`NasWarning` as one line on stderr, like an error, and
    hands any other warning to ``default``."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if issubclass(category, NasWarning):
            print(f"nas: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas`` console script."""
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            return args.handler.run(args)
        except NasError as exc:
            print(f"nas: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:  # `nas history RUN | head`: the reader left; stop quietly, as cat does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
