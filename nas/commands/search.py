"""Search commands: ``nas search`` (start or resume a run), ``nas history``, ``nas plot`` and ``nas finalists``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nas.commands.base import (
    MAX_SEED,
    MAX_STEPS,
    Command,
    count,
    device_options,
    output_dir,
    output_file,
    placement_of,
    positive,
    print_json,
    print_table,
    set_threads,
    threads_option,
)
from nas.errors import NasError

__all__ = ["SearchCommand", "HistoryCommand", "PlotCommand", "FinalistsCommand"]


def _run_path(text: str) -> Path:
    return Path(text)


def _storage(text: str) -> str:
    """``--storage``: an RDB URL as given; a journal file (a path or ``journal:///path``) is an output file."""
    journal = text[len("journal://"):] if text.lower().startswith("journal://") else None if "://" in text else text
    if journal is not None:
        output_file(journal)
    return text


# `--quick`: a third of the default budget in generations half as large, so a short-train search on 2 CPUs
# (3 to 4 s per candidate per CPU) is a screen of about 10 minutes.
QUICK_BUDGET, QUICK_POPULATION = 96, 16


class SearchCommand(Command):
    """Search a space for the accuracy/latency Pareto front on a target; writes a run directory."""

    name = "search"
    _SETTINGS = ("space", "target", "setting", "strategy", "budget", "population", "seed", "accuracy", "max_latency",
                 "max_params", "max_macs", "storage", "study", "top", "supernet")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Every setting defaults to None: RunSettings' default (the one place defaults live), or the run.yaml's
        on --resume, where a given setting is an error."""
        from nas.runs.settings import RunSettings

        parser.add_argument("--space", help="a space name (see `nas spaces`) or a space YAML file")
        parser.add_argument("--target", help="the latency target (see `nas targets`)")
        parser.add_argument("--setting", help="the target's setting latency is predicted in, e.g. a precision regime "
                                              "(tensorflow_int8; NAME+fp32 keeps float32 ops in fp32; default: the "
                                              "target's default setting); each point's per-block precision is "
                                              "priced per op in it")
        parser.add_argument("--strategy", help="evolution (default), random, optuna-tpe, optuna-nsga2, optuna-gp, "
                                               "nni-evolution")
        parser.add_argument("--budget", type=positive, help=f"candidates to evaluate, by all workers of a --storage "
                                                              f"study together (default {RunSettings.budget})")
        parser.add_argument("--population", type=positive,
                            help=f"population / batch size (default {RunSettings.population})")
        parser.add_argument("--seed", type=count(MAX_SEED, minimum=0),
                            help=f"seed of every random choice (default {RunSettings.seed})")
        parser.add_argument("--accuracy", help="accuracy source: short-train (default: accuracy after 60 "
                                               "training steps alone, one candidate per CPU at a time; ranks "
                                               "best), supernet (one-shot accuracy under --supernet, or under a "
                                               "small supernet trained once per space on the bundled data; ranks "
                                               "sizes, not kinds), zero-cost, proxy (log10 MACs, a stand-in)")
        parser.add_argument("--supernet", metavar="CHECKPOINT", help="a trained supernet (`nas supernet train`) "
                                                                     "for one-shot accuracy (the source without "
                                                                     "--accuracy)")
        parser.add_argument("--max-latency", metavar="TIME", help="latency bound, e.g. 2ms, 500us")
        parser.add_argument("--max-params", metavar="COUNT", help="parameter bound, e.g. 10M")
        parser.add_argument("--max-macs", metavar="COUNT", help="MAC bound, e.g. 1G")
        parser.add_argument("--storage", type=_storage, metavar="URL",
                            help="an Optuna storage shared by parallel workers: a journal file path or an RDB URL "
                                 "(sqlite:///x.db)")
        parser.add_argument("--study", help="the study name in --storage (default: <space>-<target>-<strategy>-"
                                            "seed<seed>, so identical commands share it)")
        parser.add_argument("--top", type=positive,
                            help=f"Archs saved as YAML under <run>/top (default {RunSettings.top_k})")
        parser.add_argument("--resume", type=_run_path, metavar="RUN", help="continue a run directory (after a kill); "
                                                                            "its run.yaml holds every setting")
        parser.add_argument("--out", type=output_dir,
                            help="folder of run directories (default runs/)")
        parser.add_argument("--no-plot", action="store_true", help="do not draw pareto.png at the end")
        threads_option(parser)
        device_options(parser)
        parser.add_argument("--quick", action="store_true",
                            help=f"a screen of about 10 minutes on 2 CPUs with the default accuracy source: "
                                 f"{QUICK_BUDGET} candidates in generations of {QUICK_POPULATION} (unless --budget "
                                 f"or --population say otherwise)")
        parser.add_argument("--no-zoo-start", action="store_true",
                            help="start from random points only (by default evolution and random open their first "
                                 "generation with the zoo's models that are points of the space)")

    def run(self, args: argparse.Namespace) -> int:
        import optuna
        from tqdm import tqdm

        from nas.runs import Run, run_search

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        placement = placement_of(args)  # an absent device fails before anything is planned or written
        set_threads(args)
        if args.resume is not None:
            given = [f"--{name.replace('_', '-')}" for name in self._SETTINGS if getattr(args, name) is not None]
            given += [flag for flag, on in (("--no-zoo-start", args.no_zoo_start), ("--quick", args.quick)) if on]
            if given:
                raise NasError(f"--resume continues a run with the settings in its run.yaml; do not pass "
                               f"{', '.join(given)}")
            run = Run.open(args.resume)
            run.check()  # refused before the progress bar shows, so the error is the one line on stderr
        else:
            missing = [f"--{name}" for name in ("space", "target") if getattr(args, name) is None]
            if missing:
                raise NasError(f"{' and '.join(missing)} required (or --resume RUN)")
            try:
                run = self._start(args, placement)
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
            run_search(run, on_record=recorded, on_start=started, placement=placement)
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
            print_json({**run.summary(), "plot": None if plot_path is None else str(plot_path),
                         "pareto_front": json.loads(front[columns].to_json(orient="records"))})
            return 0
        accuracy = settings.objectives[0].label or f"{settings.accuracy} accuracy"
        where = settings.target if settings.latency_setting is None else f"{settings.target}/{settings.latency_setting}"
        print(f"Pareto front ({len(front)} of {run.count()} candidates; {accuracy}, latency on {where}):")
        print_table(json.loads(front[columns].round(4).to_json(orient="records")) if len(front) else [])
        print(f"run:  {run.path}")
        print(f"top:  {run.path / 'top'}")
        if plot_path is not None:
            print(f"plot: {plot_path}")
        print(f"next: nas finalists {run.path}   (trains the top 3 alone to check the ranking)")
        return 0

    @staticmethod
    def _start(args: argparse.Namespace, placement: Any) -> Any:
        from nas.runs import SearchRequest, start_search

        request = SearchRequest(
            space=args.space, target=args.target, strategy=args.strategy or None,
            budget=QUICK_BUDGET if args.quick and args.budget is None else args.budget,
            population=QUICK_POPULATION if args.quick and args.population is None else args.population,
            seed=args.seed, accuracy=args.accuracy or None,
            constraints={"max_latency": args.max_latency, "max_params": args.max_params, "max_macs": args.max_macs},
            storage=args.storage, study=args.study, top_k=args.top, supernet=args.supernet,
            zoo_start=False if args.no_zoo_start else None, latency_setting=args.setting)
        root = args.out or output_dir("runs")  # checked here: --resume does not use it
        return start_search(request, root=root, extra={"command": ["nas", *sys.argv[1:]]}, progress=not args.json,
                            log=None if args.json else print, placement=placement)


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
            print_json(rows)
            return 0
        shown = table.drop(columns=["arch", "key"], errors="ignore")
        if "arch" in table:
            designs = [_design(text) for text in table["arch"]]
            width = max(map(len, designs), default=0)
            shown["design"] = [design.ljust(width) for design in designs]  # text reads left-aligned
        if not len(shown):
            print(f"{run.path}: no candidates evaluated yet")
            return 0
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
            print(shown.round(4).to_string(index=False))
        return 0


def _design(arch_json: str | None) -> str:
    """The history's ``design`` column: what a candidate is made of (:func:`nas.summary.design_summary`)."""
    from nas.arch import Arch
    from nas.summary import design_summary

    return design_summary(Arch.from_json(arch_json)) if arch_json else ""


class PlotCommand(Command):
    """Draw a run's Pareto front and hypervolume curve (default: pareto.png in the run directory)."""

    name = "plot"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", help="a run directory (runs/<id>)")
        parser.add_argument("--out", type=output_file, metavar="FILE",
                            help="the PNG to write (default: RUN/pareto.png)")
        parser.add_argument("--no-zoo", action="store_true",
                            help="leave out the zoo's models of the run's space (pricing them takes seconds)")

    def run(self, args: argparse.Namespace) -> int:
        from nas.report import plot
        from nas.runs import PLOT_FILE, Run

        run = Run.open(args.run)
        path, info = plot(run, args.out or output_file(str(run.path / PLOT_FILE)), zoo_space=not args.no_zoo)
        if args.json:
            print_json({"path": str(path), "evaluated": len(info.numbers), "front": int(info.front.sum()),
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


class FinalistsCommand(Command):
    """Train a run's top candidates alone and compare with their search accuracy (`nas finalists runs/ID`)."""

    name = "finalists"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", type=Path, help="a run directory")
        parser.add_argument("--count", type=positive, default=3,
                            help="finalists, spread along the front (default 3)")
        parser.add_argument("--epochs", type=count(MAX_STEPS), default=3, help="training epochs each (default 3)")
        parser.add_argument("--data", metavar="PATH", help="dataset (default: the bundled Animal-MNIST)")
        threads_option(parser)
        device_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from nas.runs import Run
        from nas.runs.finalists import FINALISTS_FILE, train_finalists
        from nas.supernet import kendall_tau

        placement = placement_of(args)
        set_threads(args)
        run = Run.open(args.run)
        try:
            table = train_finalists(run, count=args.count, epochs=args.epochs, data=args.data,
                                    progress=not args.json, log=None if args.json else print, placement=placement)
        except KeyboardInterrupt:
            print(f"nas: interrupted; the same command continues: nas finalists {run.path}", file=sys.stderr)
            return 130
        first = run.settings.objectives[0].column
        tau = kendall_tau(list(table[first]), list(table["standalone_accuracy"])) if len(table) > 1 else None
        if args.json:
            print_json({"path": str(run.path / FINALISTS_FILE), "kendall_tau": tau,
                         "finalists": json.loads(table.to_json(orient="records"))})
            return 0
        print_table(json.loads(table.round(4).to_json(orient="records")))
        if tau is not None:
            print(f"Kendall tau, {first} (search) vs standalone_accuracy: {tau:+.2f} over {len(table)} finalists")
        print(f"table: {run.path / FINALISTS_FILE}")
        return 0
