"""The ``nas`` command: thin over the library; parses, calls the API, prints.

Each subcommand is a class with ``add_arguments(parser)`` and ``run(args) -> int``;
its docstring's first line is its help. Every command takes ``--json`` for
machine-readable output. Errors the user can fix (a bad file, an unknown name)
print one line to stderr and exit with status 2, having written nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nas.errors import NasError

__all__ = ["main", "COMMANDS"]

EXIT_USAGE = 2


class Command:
    """Base of subcommands."""

    name: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's own arguments."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _print_table(rows: list[dict[str, Any]]) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False))


def resolve_arch(reference: str, resolution: int | None = None) -> Any:
    """An Arch from a zoo name or a YAML/JSON file path, optionally at another resolution."""
    import nas

    looks_like_file = reference.endswith((".yaml", ".yml", ".json")) or "/" in reference
    arch = nas.Arch.load(Path(reference)) if looks_like_file else nas.zoo.get(reference)
    return arch if resolution is None else arch.with_resolution(resolution)


class ZooCommand(Command):
    """List the papers' models with parameters and MACs, measured and published."""

    name = "zoo"

    def run(self, args: argparse.Namespace) -> int:
        from tqdm import tqdm

        import nas

        rows = []
        names = nas.zoo.list_zoo()
        for name in tqdm(names, desc="tracing zoo", unit="model", disable=args.json or None, leave=False):
            arch = nas.zoo.get(name)
            report = nas.cost.profile(arch)
            row: dict[str, Any] = {
                "name": name,
                "resolution": arch.input.resolution,
                "params_m": round(report.params_m, 3),
                "gmacs": round(report.gmacs, 3),
            }
            if arch.published is not None:
                published = arch.published
                row.update({
                    "published_params_m": published.params_m,
                    "published_gmacs": published.gmacs,
                    "params_diff_pct": round(100 * (report.params_m / published.params_m - 1), 2),
                    "gmacs_diff_pct": round(100 * (report.gmacs / published.gmacs - 1), 2),
                    "source": published.source,
                })
            rows.append(row)
        if args.json:
            _print_json(rows)
        else:
            _print_table([{key: value for key, value in row.items() if key != "source"} for row in rows])
        return 0


class BuildCommand(Command):
    """Build a zoo model or an arch file, run one forward pass, print its size and cost."""

    name = "build"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name (see `nas zoo`) or a YAML/JSON arch file")
        parser.add_argument("--resolution", type=int, help="input resolution to build at (default: the arch's)")
        parser.add_argument("--export", type=Path, metavar="FILE",
                            help="write the arch as YAML (or JSON for a .json path) after a successful build")

    def run(self, args: argparse.Namespace) -> int:
        import torch

        import nas

        arch = resolve_arch(args.arch, args.resolution)
        model = nas.build(arch).eval()
        shape = (1, arch.input.channels, arch.input.resolution, arch.input.resolution)
        with torch.no_grad():
            output = model(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
        report = nas.cost.profile(arch)
        if args.export is not None:
            arch.save(args.export)
        result = {
            "name": arch.name,
            "id": arch.id,
            "input_shape": list(shape),
            "output_shape": list(output.shape),
            "params": sum(parameter.numel() for parameter in model.parameters()),
            "macs": report.macs,
            "stages": [{"dim": stage.dim, "blocks": len(stage.blocks)} for stage in arch.stages],
            "exported": None if args.export is None else str(args.export),
        }
        if args.json:
            _print_json(result)
            return 0
        print(f"{arch.name or args.arch}  id {arch.id}")
        print(f"  params   {result['params'] / 1e6:.3f} M")
        print(f"  MACs     {report.gmacs:.3f} G at {arch.input.resolution}x{arch.input.resolution}")
        print(f"  output   {tuple(output.shape)} from input {shape}")
        print(f"  stages   {', '.join(f'{s.dim}x{len(s.blocks)}' for s in arch.stages)}  (width x blocks)")
        if args.export is not None:
            print(f"  exported {args.export}")
        return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class SpacesCommand(Command):
    """List the search spaces with their size."""

    name = "spaces"

    def run(self, args: argparse.Namespace) -> int:
        import nas

        rows = []
        for name in nas.space.list_spaces():
            space = nas.space.load_space(name)
            size = space.size()
            rows.append({
                "name": name,
                "decisions": space.num_slots,
                "size": (size if size < 10**15 else None) if args.json else space.size_text(),
                "log10_size": round(space.log10_size(), 2),
                "description": space.description,
            })
        if args.json:
            _print_json(rows)
        else:
            _print_table([{**row, "description": row["description"].split(". ")[0][:60]} for row in rows])
        return 0


class SpaceCommand(Command):
    """Show a search space's choice tree, or sample points of it (`nas space show|sample NAME`)."""

    name = "space"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        show = actions.add_parser("show", help="the choice tree: every decision, its options and when it exists",
                                  description="Print the choice tree of a space.")
        sample = actions.add_parser("sample", help="sample valid points and print them as Arch YAML (JSON with --json)",
                                    description="Sample valid points of a space.")
        for action in (show, sample):
            action.add_argument("space", help="a space name (see `nas spaces`) or a space YAML file")
            action.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                help="machine-readable output")
        sample.add_argument("-n", "--count", type=_positive, default=1, help="number of points (default 1)")
        sample.add_argument("--seed", type=int, default=0, help="seed of the random generator (default 0)")

    def run(self, args: argparse.Namespace) -> int:
        import numpy as np

        import nas

        space = nas.space.load_space(args.space)
        if args.action == "show":
            if args.json:
                _print_json(space.describe())
            else:
                print(space.show())
            return 0
        vectors = space.sample_vectors(np.random.default_rng(args.seed), args.count)
        archs = [space.decode(vector).replace(name=f"{space.name}_seed{args.seed}_{index}")
                 for index, vector in enumerate(vectors)]
        if args.json:
            _print_json([arch.to_dict() for arch in archs])
        else:
            print("---\n".join(arch.to_yaml() for arch in archs), end="")
        return 0


def _figures_text(validation: dict[str, Any] | None) -> str:
    """One line of a predictor's validation figures."""
    if not validation:
        return "not validated (coefficients are the priors; run python -m nas.latency.fit --write)"
    lofo = validation.get("lofo")
    families = ", ".join(validation.get("families", {}))
    held = validation.get("held_out")
    if held:
        return (f"held out {held.get('rows')} models never fitted ({families}): Spearman rho "
                f"{held.get('spearman_rho')}, MAPE {held.get('mape_pct')}%, within 10% {held.get('within_10_pct')}%, "
                f"within 20% {held.get('within_20_pct')}%")
    if not lofo:
        inside = validation.get("in_sample", {})
        return (f"in-sample only (one family: {families}): MAPE {inside.get('mape_pct')}%, "
                f"{validation.get('rows')} rows")
    return (f"leave-one-family-out over {validation.get('rows')} rows, {len(validation.get('families', {}))} "
            f"families: Spearman rho {lofo.get('spearman_rho')}, MAPE {lofo.get('mape_pct')}%, within 10% "
            f"{lofo.get('within_10_pct')}%, within 20% {lofo.get('within_20_pct')}% ({families})")


class PredictCommand(Command):
    """Predict the latency of a zoo model or an arch file on a hardware target, with a per-op breakdown."""

    name = "predict"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name (see `nas zoo`) or a YAML/JSON arch file")
        parser.add_argument("--target", required=True, help="hardware target (see `nas targets`)")
        parser.add_argument("--setting", help="the target's measurement setting (default: its default setting)")
        parser.add_argument("--batch", type=_positive, default=1, help="inputs per forward pass (default 1)")
        parser.add_argument("--resolution", type=_positive, help="input resolution (default: the arch's)")

    def run(self, args: argparse.Namespace) -> int:
        import nas.latency

        arch = resolve_arch(args.arch, args.resolution)
        result = nas.latency.predict(arch, target=args.target, setting=args.setting, batch=args.batch)
        if args.json:
            _print_json({**result.to_dict(), "arch": arch.name or args.arch})
            return 0
        print(f"{arch.name or args.arch} on {result.target}/{result.setting}, batch {result.batch}: "
              f"{result.latency_ms:.3f} ms")
        for kind, value in sorted(result.breakdown.items(), key=lambda item: -item[1]):
            print(f"  {kind:<14} {value:9.3f} ms  {100 * value / result.latency_ms:5.1f}%")
        print(f"  predictor: {_figures_text(result.validation)}")
        return 0


class TargetsCommand(Command):
    """List the hardware targets: each setting (runtime, precision, batch) and its validation figures."""

    name = "targets"

    def run(self, args: argparse.Namespace) -> int:
        import nas.latency
        from nas.latency.predict import validation_summary

        rows = []
        for name in nas.latency.list_targets():
            target = nas.latency.get_target(name)
            for setting in target.settings.values():
                summary = validation_summary(setting)
                lofo = (summary or {}).get("lofo") or (summary or {}).get("held_out") or {}
                rows.append({
                    "target": name,
                    "setting": setting.name,
                    "default": setting.name == target.default_setting,
                    "device": setting.device.title,
                    "runtime": setting.runtime,
                    "precision": setting.precision,
                    "batch_sizes": list(setting.batch_sizes),
                    "fitted": setting.coefficients is not None,
                    "validation": summary,
                    "rho": lofo.get("spearman_rho"),
                    "mape_pct": lofo.get("mape_pct"),
                    "within_20_pct": lofo.get("within_20_pct"),
                    "families": len((summary or {}).get("families", {})),
                })
        if args.json:
            _print_json([{key: value for key, value in row.items()
                          if key not in ("rho", "mape_pct", "within_20_pct", "families")} for row in rows])
        else:
            _print_table([{"target": row["target"], "setting": row["setting"] + (" *" if row["default"] else ""),
                           "precision": row["precision"], "batch": ",".join(map(str, row["batch_sizes"])),
                           "LOFO rho": row["rho"], "MAPE %": row["mape_pct"], "within 20 %": row["within_20_pct"],
                           "families": row["families"]} for row in rows])
            print("* default setting; figures: leave-one-family-out over the calibration rows (predictors/*.yaml); "
                  "local: held-out models measured here (nas profile --target local)")
        return 0


def _profile_options(args: argparse.Namespace) -> Any:
    from nas.latency.local import ProfileOptions
    from nas.latency.measure import Protocol

    protocol = Protocol(runtime=args.runtime, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                        chunk=args.chunk, statistic=args.statistic)
    return ProfileOptions(protocol=protocol, fit_archs=args.fit_archs, held_out_archs=args.held_out,
                          resolution=args.resolution, seed=args.seed, resume=not args.fresh)


class ProfileCommand(Command):
    """Measure this machine (random metaformer models, end to end), fit its latency predictor, validate it."""

    name = "profile"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", required=True, choices=("local",), help="the target to measure: local")
        parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                            help="what runs the models (default torch eager)")
        parser.add_argument("--threads", type=_positive, default=1, help="intra-op threads (default 1)")
        parser.add_argument("--fit-archs", type=_positive, default=60, help="random models to fit on (default 60)")
        parser.add_argument("--held-out", type=_positive, default=60,
                            help="further random models to validate on, never fitted (default 60)")
        parser.add_argument("--resolution", type=_positive, default=128,
                            help="input resolution (the nearest valid one per model; default 128)")
        parser.add_argument("--repeats", type=_positive, default=7, help="timed runs per model (default 7)")
        parser.add_argument("--statistic", choices=("min", "median"), default="min",
                            help="a model's latency from its timed runs (default min: load only slows runs down)")
        parser.add_argument("--warmup", type=int, default=2, help="untimed runs per model first (default 2)")
        parser.add_argument("--chunk", type=_positive, default=4, help="models timed round-robin (default 4)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the random models (default 0)")
        parser.add_argument("--fresh", action="store_true", help="ignore timings cached by an earlier profile")

    def run(self, args: argparse.Namespace) -> int:
        from nas.latency.local import profile_local

        command = "nas " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["profile"] else "nas profile --target local"
        result = profile_local(_profile_options(args), progress=not args.json, command=command)
        if args.json:
            _print_json(result.to_dict())
            return 0
        fit, held = result.fit, result.held_out
        print(f"local/{result.setting} written to {result.path} ({result.wall_s:.0f} s; {result.measured} models "
              f"timed now; 1-min load {result.load['min']}-{result.load['max']})")
        print(f"  fit on {fit.rows} models: MAPE {fit.mape_pct:.1f}%")
        print(f"  held out {held.rows} models: Spearman rho {held.spearman_rho:.3f}, MAPE {held.mape_pct:.1f}%, "
              f"within 10% {held.within_10_pct:.1f}%, within 20% {held.within_20_pct:.1f}%")
        for name, figures in result.xeon.items():
            print(f"  xeon/{name} vs these measurements: rho {figures['spearman_rho']}, MAPE {figures['mape_pct']}%; "
                  f"after scale x{figures['scale']}: MAPE {figures['scaled_mape_pct']}%, within 10% "
                  f"{figures['scaled_within_10_pct']}%")
        return 0


class PlotCommand(Command):
    """Draw a run's Pareto front and hypervolume curve (default: pareto.png in the run directory)."""

    name = "plot"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", help="a run directory (runs/<id>)")
        parser.add_argument("--out", type=Path, metavar="FILE", help="the PNG to write (default: RUN/pareto.png)")
        parser.add_argument("--no-zoo", action="store_true",
                            help="leave out the zoo's models of the run's space (pricing them takes seconds)")

    def run(self, args: argparse.Namespace) -> int:
        from nas.report import plot
        from nas.runs import Run

        run = Run.open(args.run)
        path, info = plot(run, args.out, zoo_space=not args.no_zoo)
        if args.json:
            _print_json({"path": str(path), "evaluated": len(info.numbers), "front": int(info.front.sum()),
                         "infeasible": int(info.infeasible.sum()),
                         "hypervolume": float(info.hypervolume[-1]) if len(info.hypervolume) else 0.0,
                         "references": [{"name": point.name, "arch_id": point.arch_id,
                                         "values": {key: _finite(value) for key, value in point.values.items()}}
                                        for point in info.references]})
        else:
            print(path)
        return 0


def _finite(value: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return value if value == value and abs(value) != float("inf") else None


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
        parser.add_argument("--top", type=_positive, metavar="K",
                            help="for a run: export the K best (the Pareto front first, in the run's NSGA-II "
                                 "order, as in RUN/top/); default 1")
        parser.add_argument("--out", type=Path, metavar="DIR",
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
        out = args.out if args.out is not None else (run.path / "export" if run is not None else Path("."))
        results = export_many([arch for arch, _ in items], out, format=args.format,
                              names=[stem for _, stem in items],
                              checkpoints=[args.checkpoint] * len(items))
        if args.json:
            _print_json([result.to_dict() for result in results])
            return 0
        for result in results:
            check = "" if result.max_abs_diff is None else f"  (max |diff| to torch {result.max_abs_diff:.2g})"
            print(f"{result.arch_id}: {', '.join(str(path) for path in result.files)}{check}")
            for note in result.notes:
                print(f"  note: {note}")
        return 0


def _run_path(text: str) -> Path:
    return Path(text)


class SearchCommand(Command):
    """Search a space for the accuracy/latency Pareto front on a target; writes a run directory."""

    name = "search"
    _SETTINGS = ("space", "target", "strategy", "budget", "population", "seed", "accuracy", "max_latency",
                 "max_params", "max_macs", "storage", "study", "top", "supernet")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--space", help="a space name (see `nas spaces`) or a space YAML file")
        parser.add_argument("--target", help="the latency target (see `nas targets`)")
        parser.add_argument("--strategy", help="evolution (default), random, optuna-tpe, optuna-nsga2, optuna-gp, "
                                               "nni-evolution")
        parser.add_argument("--budget", type=_positive, help="candidates to evaluate (default 300)")
        parser.add_argument("--population", type=_positive, help="population / batch size (default 32)")
        parser.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
        parser.add_argument("--accuracy", help="accuracy source: supernet (default: one-shot accuracy under "
                                               "--supernet, or under a small supernet trained once per space on "
                                               "the bundled data and reused), zero-cost, short-train (60 "
                                               "training steps per candidate: ~20 s each, ranks best), proxy "
                                               "(log10 MACs, a stand-in)")
        parser.add_argument("--supernet", metavar="CHECKPOINT", help="a trained supernet (`nas supernet train`) "
                                                                     "for one-shot accuracy")
        parser.add_argument("--max-latency", metavar="TIME", help="latency bound, e.g. 2ms, 500us")
        parser.add_argument("--max-params", metavar="COUNT", help="parameter bound, e.g. 10M")
        parser.add_argument("--max-macs", metavar="COUNT", help="MAC bound, e.g. 1G")
        parser.add_argument("--storage", metavar="URL", help="an Optuna storage shared by parallel workers: a journal "
                                                             "file path or an RDB URL (sqlite:///x.db)")
        parser.add_argument("--study", help="the study name in --storage (default: <space>-<target>-<strategy>-"
                                            "seed<seed>, so identical commands share it)")
        parser.add_argument("--top", type=_positive, help="Archs saved as YAML under <run>/top (default 5)")
        parser.add_argument("--resume", type=_run_path, metavar="RUN", help="continue a run directory (after a kill); "
                                                                            "its run.yaml holds every setting")
        parser.add_argument("--out", type=Path, default=Path("runs"), help="folder of run directories (default runs/)")
        parser.add_argument("--no-plot", action="store_true", help="do not draw pareto.png at the end")
        _threads_option(parser)
        parser.add_argument("--no-zoo-start", action="store_true",
                            help="start from random points only (by default evolution and random open their first "
                                 "generation with the zoo's models that are points of the space)")

    def run(self, args: argparse.Namespace) -> int:
        import optuna
        from tqdm import tqdm

        from nas.runs import Run, run_search

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _set_threads(args)
        if args.resume is not None:
            given = [f"--{name.replace('_', '-')}" for name in self._SETTINGS if getattr(args, name) is not None]
            given += ["--no-zoo-start"] if args.no_zoo_start else []
            if given:
                raise NasError(f"--resume continues a run with the settings in its run.yaml; do not pass "
                               f"{', '.join(given)}")
            run = Run.open(args.resume)
        else:
            missing = [f"--{name}" for name in ("space", "target") if getattr(args, name) is None]
            if missing:
                raise NasError(f"{' and '.join(missing)} required (or --resume RUN)")
            try:
                run = self._start(args)
            except KeyboardInterrupt:
                print("nas: interrupted before the search started; the same command continues where it stopped",
                      file=sys.stderr)
                return 130
        settings = run.settings
        bar = tqdm(total=settings.budget, unit="cand", desc=f"{settings.strategy} {run.name}",
                   disable=args.json, dynamic_ncols=True)
        feasible = [0]

        def started(count: int) -> None:
            bar.update(count)
            if count:
                tqdm.write(f"resuming {run.path}: {count} of {settings.budget} candidates already evaluated")

        def recorded(record: Any) -> None:
            feasible[0] += record.feasible
            bar.update(1)
            bar.set_postfix(feasible=feasible[0], generation=record.generation, refresh=False)

        try:
            run_search(run, on_record=recorded, on_start=started)
        except KeyboardInterrupt:
            bar.close()
            print(f"nas: interrupted; continue with: nas search --resume {run.path}", file=sys.stderr)
            return 130
        finally:
            bar.close()
        plot_path = None
        if not args.no_plot:
            try:
                from nas.report import plot

                plot_path, _ = plot(run)
            except (ImportError, NasError) as exc:
                print(f"nas: note: no plot ({exc})", file=sys.stderr)
        front = run.pareto()
        columns = ["number", "arch_id", *[spec.column for spec in settings.objectives],
                   *[column for column in ("params_m", "gmacs") if column in front.columns], "generation"]
        if args.json:
            _print_json({**run.summary(), "plot": None if plot_path is None else str(plot_path),
                         "pareto_front": json.loads(front[columns].to_json(orient="records"))})
            return 0
        print(f"Pareto front ({len(front)} of {run.count()} candidates; {settings.accuracy} accuracy, "
              f"latency on {settings.target}):")
        _print_table(json.loads(front[columns].round(4).to_json(orient="records")) if len(front) else [])
        print(f"run:  {run.path}")
        print(f"top:  {run.path / 'top'}")
        if plot_path is not None:
            print(f"plot: {plot_path}")
        print(f"next: nas finalists {run.path}   (trains the top 3 alone to check the ranking)")
        return 0

    @staticmethod
    def _start(args: argparse.Namespace) -> Any:
        from nas.runs import start_search

        return start_search(
            args.out, extra={"command": ["nas", *sys.argv[1:]]}, space=args.space, target=args.target,
            strategy=args.strategy or "evolution", budget=args.budget or 300, population=args.population or 32,
            seed=0 if args.seed is None else args.seed, accuracy=args.accuracy or "auto",
            constraints={"max_latency": args.max_latency, "max_params": args.max_params,
                         "max_macs": args.max_macs},
            storage=args.storage, study=args.study, top_k=args.top or 5, supernet=args.supernet,
            zoo_start=not args.no_zoo_start, progress=not args.json, log=None if args.json else print)


class FinalistsCommand(Command):
    """Train a run's top candidates alone and compare with their search accuracy (`nas finalists runs/ID`)."""

    name = "finalists"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="a run directory")
        parser.add_argument("--count", type=_positive, default=3,
                            help="finalists, spread along the front (default 3)")
        parser.add_argument("--epochs", type=_positive, default=3, help="training epochs each (default 3)")
        parser.add_argument("--data", metavar="PATH", help="dataset (default: the bundled Animal-MNIST)")
        _threads_option(parser)

    def run(self, args: argparse.Namespace) -> int:
        from nas.runs import Run
        from nas.runs.finalists import FINALISTS_FILE, train_finalists
        from nas.supernet import kendall_tau

        _set_threads(args)
        run = Run.open(args.run)
        try:
            table = train_finalists(run, count=args.count, epochs=args.epochs, data=args.data,
                                    progress=not args.json, log=None if args.json else print)
        except KeyboardInterrupt:
            print(f"nas: interrupted; the same command continues: nas finalists {run.path}", file=sys.stderr)
            return 130
        first = run.settings.objectives[0].column
        tau = kendall_tau(list(table[first]), list(table["standalone_accuracy"])) if len(table) > 1 else None
        if args.json:
            _print_json({"path": str(run.path / FINALISTS_FILE), "kendall_tau": tau,
                         "finalists": json.loads(table.to_json(orient="records"))})
            return 0
        _print_table(json.loads(table.round(4).to_json(orient="records")))
        if tau is not None:
            print(f"Kendall tau, {first} (search) vs standalone_accuracy: {tau:+.2f} over {len(table)} finalists")
        print(f"table: {run.path / FINALISTS_FILE}")
        return 0


class HistoryCommand(Command):
    """Print a run's history: one row per evaluated candidate (`nas history runs/ID`)."""

    name = "history"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="a run directory")
        parser.add_argument("--pareto", action="store_true", help="only the feasible non-dominated candidates")

    def run(self, args: argparse.Namespace) -> int:
        from nas.runs import Run

        run = Run.open(args.run)
        table = run.pareto() if args.pareto else run.history()
        if args.json:
            rows = json.loads(table.to_json(orient="records"))
            for row in rows:
                row["arch"] = json.loads(row["arch"]) if row.get("arch") else None
            _print_json(rows)
            return 0
        shown = table.drop(columns=["arch", "key"], errors="ignore")
        if not len(shown):
            print(f"{run.path}: no candidates evaluated yet")
            return 0
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
            print(shown.round(4).to_string(index=False))
        return 0


def _train_options(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    """Arguments shared by `nas supernet train` and `nas train`."""
    parser.add_argument("--data", metavar="PATH", help="dataset: a folder of class folders, CIFAR python batches or "
                                                       "an .npz file (default: the bundled Animal-MNIST)")
    parser.add_argument("--epochs", type=_positive, default=epochs, help=f"passes over the data (default {epochs})")
    parser.add_argument("--proxy-width", type=float, default=0.25, metavar="W",
                        help="multiplier on every width (default 0.25)")
    parser.add_argument("--resolution", type=_positive, default=32, metavar="R",
                        help="input resolution in pixels (default 32)")
    parser.add_argument("--batch-size", type=_positive, default=64, help="images per step and process (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation and sampling")
    parser.add_argument("--sam", action="store_true", help="sharpness-aware minimisation (twice the compute)")
    parser.add_argument("--sigma-reparam", action="store_true", help="sigmaReparam on linear weights")
    parser.add_argument("--patch-mixing", action="store_true", help="Patch Mixing augmentation")
    parser.add_argument("--out", type=Path, metavar="DIR", help="run directory (default runs/<kind>-<name>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--checkpoint-every", type=_positive, default=100, metavar="STEPS",
                        help="steps between checkpoints (default 100)")
    parser.add_argument("--max-steps", type=_positive, metavar="STEPS",
                        help="stop after this many steps in total (resume later with --resume)")
    _threads_option(parser)


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive, default=1, metavar="N",
                        help="torch intra-op threads (default 1: proxy-scale networks are small, and two threads ran "
                             "5x slower than one on a busy 2-core machine)")


def _set_threads(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)


def _train_run(args: argparse.Namespace, kind: str, name: str, **extra: Any) -> tuple[Any, Any, Path]:
    """Dataset, settings and run directory from the shared arguments."""
    import time

    from nas.data import load_dataset
    from nas.supernet import TrainSettings

    if args.resume and args.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    _set_threads(args)
    dataset = load_dataset(args.data)
    settings_values = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                       "sam": args.sam, "sigma_reparam": args.sigma_reparam, "patch_mixing": args.patch_mixing}
    settings_values.update(extra)
    out = args.out or Path("runs") / f"{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return dataset, TrainSettings(**settings_values), out


def _print_training(args: argparse.Namespace, result: Any) -> int:
    summary = {"out": str(result.out), "steps": result.steps, "total_steps": result.total_steps,
               "completed": result.completed, "metrics": result.metrics, "seconds": round(result.seconds, 2),
               "images_per_second": round(result.images_per_second, 1),
               "final_losses": result.history[-1]["losses"] if result.history else []}
    if args.json:
        _print_json(summary)
        return 0
    state = "done" if result.completed else f"stopped at step {result.steps} of {result.total_steps}"
    print(f"{state}: {result.images_per_second:.0f} images/s; run directory {result.out}")
    for key, value in result.metrics.items():
        print(f"  {key:<20} {value:.4f}")
    if not result.completed:
        print(f"  continue with --resume --out {result.out}")
    return 0


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


class SupernetCommand(Command):
    """Train a weight-sharing supernet over a space (`nas supernet train --space NAME`); torchrun scales it out."""

    name = "supernet"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        train = actions.add_parser("train", help="train with the sandwich rule and in-place distillation",
                                   description="Train a supernet at a proxy scale; writes checkpoint.pt and "
                                               "result.json in the run directory.")
        train.add_argument("--space", required=True, help="a space name (see `nas spaces`) or a space YAML file")
        _train_options(train, epochs=10)
        train.add_argument("--num-random", type=int, default=2, metavar="K",
                           help="random subnets per step besides the largest and smallest (default 2)")
        train.add_argument("--ends", choices=("fixed", "varied"), default="fixed",
                           help="sandwich ends: the same largest and smallest points every step (default), or drawn "
                                "each step with extreme sizes and random kinds")
        train.add_argument("--no-distill", action="store_true", help="train every subnet on the labels")
        train.add_argument("--scan", type=_positive, default=1000, metavar="N",
                           help="sampled points that size the shared weights (default 1000)")
        train.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    def run(self, args: argparse.Namespace) -> int:
        from tqdm import tqdm

        from nas.supernet import train_supernet

        space_name = Path(args.space).stem if args.space.endswith((".yaml", ".yml")) else args.space
        dataset, settings, out = _train_run(args, "supernet", space_name, num_random=args.num_random,
                                            ends=args.ends, distill=not args.no_distill)
        show = not args.json and _is_rank_zero()
        result = train_supernet(args.space, dataset, settings, width=args.proxy_width, resolution=args.resolution,
                                scan=args.scan, data_spec=args.data, out=out, resume=args.resume,
                                checkpoint_every=args.checkpoint_every, max_steps=args.max_steps, progress=show,
                                log=tqdm.write if show else None)
        return _print_training(args, result) if _is_rank_zero() else 0


class TrainCommand(Command):
    """Train one architecture stand-alone (a zoo name or an arch file), at the proxy scale unless --full-scale."""

    name = "train"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name (see `nas zoo`) or a YAML/JSON arch file")
        _train_options(parser, epochs=10)
        parser.add_argument("--full-scale", action="store_true",
                            help="the arch's own widths and resolution (ignores --proxy-width/--resolution)")

    def run(self, args: argparse.Namespace) -> int:
        from tqdm import tqdm

        from nas.supernet import train_model

        arch = resolve_arch(args.arch)
        dataset, settings, out = _train_run(args, "train", arch.name or arch.id)
        show = not args.json and _is_rank_zero()
        result = train_model(arch, dataset, settings, width=1.0 if args.full_scale else args.proxy_width,
                             resolution=None if args.full_scale else args.resolution, data_spec=args.data, out=out,
                             resume=args.resume, checkpoint_every=args.checkpoint_every, max_steps=args.max_steps,
                             progress=show, log=tqdm.write if show else None)
        return _print_training(args, result) if _is_rank_zero() else 0


COMMANDS: tuple[Command, ...] = (ZooCommand(), BuildCommand(), SpacesCommand(), SpaceCommand(), PredictCommand(),
                                 TargetsCommand(), ProfileCommand(), PlotCommand(),
                                 ExportCommand(), SearchCommand(), HistoryCommand(), FinalistsCommand(),
                                 SupernetCommand(), TrainCommand())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas", description="Neural-architecture search for vision backbones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        help_line = (command.__doc__ or "").strip().splitlines()[0]
        command_parser = sub.add_parser(command.name, help=help_line, description=help_line)
        command_parser.add_argument("--json", action="store_true", help="machine-readable output")
        command.add_arguments(command_parser)
        command_parser.set_defaults(handler=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nas`` console script."""
    args = _parser().parse_args(argv)
    try:
        return args.handler.run(args)
    except NasError as exc:
        print(f"nas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
