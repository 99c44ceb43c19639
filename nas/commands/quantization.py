"""Post-training quantisation commands: ``nas quantize`` (a calibrated model) and ``nas analyze`` (per-layer
statistics and quantisation error)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nas.commands.base import (
    MAX_BATCH,
    MAX_SEED,
    Command,
    count,
    output_dir,
    positive_float,
    print_json,
    print_table,
    resolve_arch,
    set_threads,
    threads_option,
)

__all__ = ["QuantizeCommand", "AnalyzeCommand"]

MAX_CALIBRATION_BATCHES = 10_000


def _calibration_options(parser: argparse.ArgumentParser, *, batches: int) -> None:
    """Arguments shared by `nas quantize` and `nas analyze`."""
    from nas.quantization import METHODS, WEIGHT_METHODS

    parser.add_argument("--method", choices=METHODS, default="minmax",
                        help="activation range estimator (default minmax)")
    parser.add_argument("--percentile", type=positive_float, default=99.99, metavar="P",
                        help="for --method percentile: the upper percentile kept, in (50, 100] (default 99.99)")
    parser.add_argument("--weights-method", choices=WEIGHT_METHODS, default="minmax",
                        help="weight range estimator (default minmax)")
    parser.add_argument("--batches", type=count(MAX_CALIBRATION_BATCHES), default=batches, metavar="N",
                        help=f"calibration batches from the training split (default {batches})")
    parser.add_argument("--batch-size", type=count(MAX_BATCH), default=64, help="images per batch (default 64)")
    parser.add_argument("--seed", type=count(MAX_SEED, minimum=0), default=0,
                        help="seed of the calibration images and the noisy bias")
    threads_option(parser)


def _settings(args: argparse.Namespace, *, noisy_bias: bool = False) -> Any:
    from nas.quantization import CalibrationSettings

    return CalibrationSettings(method=args.method, percentile=args.percentile, weights=args.weights_method,
                               batches=args.batches, noisy_bias=noisy_bias, seed=args.seed)


def _precision(spec: str) -> Any:
    import nas
    from nas.quantization.workflow import check_quantizes

    precision = nas.Precision.from_spec(spec)
    check_quantizes(precision)
    return precision


class QuantizeCommand(Command):
    """Calibrate a trained model at a precision (PTQ) and write it: model.pt (weights + quantiser ranges), arch.yaml."""

    name = "quantize"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name or a YAML/JSON arch file (a trained run's arch.yaml)")
        parser.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                            help="the float weights: a `nas train` run directory or its model.pt, or a state_dict")
        parser.add_argument("--precision", required=True, metavar="SPEC",
                            help="WEIGHTS[/ACTIVATIONS], each FORMAT[:channel][:affine] (e.g. int8, "
                                 "int8:channel/int8:affine, fp8_e4m3)")
        parser.add_argument("--data", metavar="PATH",
                            help="calibration and test data: a dataset path (default: the bundled Animal-MNIST)")
        parser.add_argument("--noisy-bias", action="store_true",
                            help="NoisyQuant's noisy bias on the layers with integer activations that take it")
        parser.add_argument("--eval-images", type=count(10**9, minimum=0), metavar="N",
                            help="score float and quantised models on the first N test images (default: all; "
                                 "0: do not score)")
        _calibration_options(parser, batches=8)
        parser.add_argument("--out", type=output_dir, required=True, metavar="DIR",
                            help="folder for the calibrated model (model.pt, arch.yaml)")

    def run(self, args: argparse.Namespace) -> int:
        from nas.data import load_dataset
        from nas.quantization import load_float, ptq, save_quantized

        set_threads(args)
        precision = _precision(args.precision)
        settings = _settings(args, noisy_bias=args.noisy_bias)
        arch, model = load_float(resolve_arch(args.arch), args.checkpoint)
        dataset = load_dataset(args.data)
        result = ptq(model, arch, precision, dataset, settings, batch_size=args.batch_size,
                     max_val=args.eval_images or None, evaluate=args.eval_images != 0)
        files = save_quantized(result.quantized, args.out, result.metrics)
        summary = {"arch_id": result.quantized.arch.id, "precision": precision.to_dict(),
                   "files": [str(path) for path in files], "metrics": result.metrics,
                   "noisy_bias": result.quantized.noisy_bias}
        if args.json:
            print_json(summary)
            return 0
        print(f"calibrated {arch.name or arch.id} at {args.precision} ({settings.method}, {settings.batches} "
              f"batches): {', '.join(summary['files'])}")
        if args.noisy_bias:
            print(f"  noisy bias on {len(result.quantized.noisy_bias)} layers (the others have no integer "
                  "activations, are not linear in a constant input, or were best without noise)")
        if result.metrics:
            print(f"  float accuracy      {result.metrics['float_accuracy']:.4f}")
            print(f"  quantised accuracy  {result.metrics['quantized_accuracy']:.4f}  "
                  f"(drop {result.metrics['drop']:+.4f})")
        elif args.eval_images != 0:
            print(f"  not scored: the data has {dataset.num_classes} classes, the model's head "
                  f"{arch.head.num_classes}")
        return 0


class AnalyzeCommand(Command):
    """Per-layer activation statistics (max |x|, kurtosis, outliers) and quantisation error at a precision."""

    name = "analyze"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name or a YAML/JSON arch file")
        parser.add_argument("--checkpoint", type=Path, metavar="CKPT",
                            help="float weights (a `nas train` run or its model.pt, or a state_dict; default: a "
                                 "seeded random initialisation)")
        parser.add_argument("--data", metavar="PATH", help="the data run through it (default: the bundled dataset)")
        parser.add_argument("--precision", default="int8", metavar="SPEC",
                            help="the precision whose error is measured (default int8)")
        _calibration_options(parser, batches=4)
        parser.add_argument("--out", type=output_dir, metavar="DIR",
                            help="also write layers.csv and layers.png into DIR")

    def run(self, args: argparse.Namespace) -> int:
        import torch

        from nas.atomic import write_atomic
        from nas.build import build
        from nas.data import load_dataset
        from nas.quantization import analyze, load_float, summarize
        from nas.report import render_layer_statistics

        set_threads(args)
        precision = _precision(args.precision)
        settings = _settings(args)
        arch = resolve_arch(args.arch)
        if args.checkpoint is not None:
            arch, model = load_float(arch, args.checkpoint)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                model = build(arch).eval()
        dataset = load_dataset(args.data)
        table = analyze(model, arch, precision, dataset, settings, batch_size=args.batch_size)
        files = []
        if args.out is not None:
            write_atomic(args.out / "layers.csv", table.to_csv(index=False))
            title = f"{arch.name or arch.id} at {args.precision} ({settings.method})"
            files = [args.out / "layers.csv", render_layer_statistics(table, args.out / "layers.png", title=title)]
        if args.json:
            print_json({"layers": table.to_dict(orient="records"), "summary": summarize(table),
                        "files": [str(path) for path in files]})
            return 0
        print_table(table.round(4).to_dict(orient="records"))
        print("  ".join(f"{key} {value:.4g}" for key, value in summarize(table).items()))
        for path in files:
            print(f"wrote {path}")
        return 0
