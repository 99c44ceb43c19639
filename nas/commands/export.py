"""``nas export``: a run's top candidates or one Arch as a config file or a runnable model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nas.commands.base import Command, output_dir, positive, print_json, resolve_arch
from nas.errors import NasError

__all__ = ["ExportCommand"]


def _export_source(reference: str) -> tuple[Any, list[tuple[Any, str | None]]]:
    """``(run or None, [(arch, file stem)])`` from a run directory, a zoo name or an arch file."""
    from nas.runs import Run

    path = Path(reference)
    is_arch_file = reference.endswith((".yaml", ".yml", ".json"))
    if path.is_dir() or (not is_arch_file and ("/" in reference or reference.startswith("."))):
        return Run.open(path), []
    return None, [(resolve_arch(reference), None)]


class ExportCommand(Command):
    """Export a run's top candidates or one Arch as yaml, json, torch (torch.export), onnx or coreml."""

    name = "export"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", metavar="RUN|ARCH",
                            help="a run directory (its best candidates), a zoo model name or an arch file")
        parser.add_argument("--format", required=True, metavar="FORMAT",
                            help="yaml, json, torch, onnx (checked in onnxruntime) or coreml (needs nas[coreml])")
        parser.add_argument("--top", type=positive, metavar="K",
                            help="for a run: export the K best (the Pareto front first, in the run's NSGA-II "
                                 "order, as in RUN/top/); default 1")
        parser.add_argument("--out", type=output_dir, metavar="DIR",
                            help="destination folder (default: RUN/export for a run, else the current folder)")
        parser.add_argument("--checkpoint", type=Path, metavar="FILE",
                            help="trained weights (a state_dict file) for one exported model")

    def run(self, args: argparse.Namespace) -> int:
        from nas.export import FORMATS, export_many

        if args.format not in FORMATS:
            from nas.errors import UnknownKindError

            raise UnknownKindError(f"unknown export format {args.format!r}; known: {', '.join(FORMATS)}")
        run, items = _export_source(args.source)
        if run is None and args.top is not None:
            raise NasError("--top applies to a run directory; an arch is exported on its own")
        if run is not None:
            top = run.top(args.top or 1)
            if not top:
                raise NasError(f"{run.path}: the run has no feasible candidate to export")
            space = Path(run.settings.space).stem
            items = [(arch.replace(name=f"{space}_{run.settings.target}_top{rank}"), f"{rank:02d}-{record.arch_id}")
                     for rank, (record, arch) in enumerate(top, start=1)]
        if args.checkpoint is not None and len(items) != 1:
            raise NasError(f"--checkpoint holds the weights of one model; {len(items)} would be exported")
        out = args.out if args.out is not None else output_dir(str(run.path / "export" if run is not None else "."))
        results = export_many([arch for arch, _ in items], out, format=args.format,
                              names=[stem for _, stem in items],
                              checkpoints=[args.checkpoint] * len(items))
        if args.json:
            print_json([result.to_dict() for result in results])
            return 0
        for result in results:
            check = "" if result.max_abs_diff is None else f"  (max |diff| to torch {result.max_abs_diff:.2g})"
            print(f"{result.arch_id}: {', '.join(str(path) for path in result.files)}{check}")
            for note in result.notes:
                print(f"  note: {note}")
        return 0
