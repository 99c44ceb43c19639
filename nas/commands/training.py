"""Training commands: ``nas supernet train`` (a weight-sharing supernet) and ``nas train`` (one Arch alone)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nas.commands.base import (
    MAX_BATCH,
    MAX_SEED,
    MAX_STEPS,
    BadArgument,
    Command,
    count,
    device_options,
    non_negative_float,
    output_dir,
    placement_of,
    positive,
    positive_float,
    precision_spec,
    print_json,
    resolution,
    resolve_arch,
    set_threads,
    threads_option,
)
from nas.errors import NasError

if TYPE_CHECKING:
    from nas.data import Dataset
    from nas.supernet import TrainOptions, TrainResult, TrainSettings

__all__ = ["SupernetCommand", "TrainCommand"]


def _train_options(parser: argparse.ArgumentParser, *, epochs: int) -> None:
    """Arguments shared by `nas supernet train` and `nas train`."""
    parser.add_argument("--data", metavar="PATH", help="dataset: a folder of class folders, CIFAR python batches or "
                                                       "an .npz file (default: the bundled Animal-MNIST)")
    parser.add_argument("--epochs", type=count(MAX_STEPS), default=epochs,
                        help=f"passes over the data (default {epochs})")
    parser.add_argument("--proxy-width", type=positive_float, default=0.25, metavar="W",
                        help="multiplier on every width (default 0.25)")
    parser.add_argument("--resolution", type=resolution, default=32, metavar="R",
                        help="input resolution in pixels (default 32)")
    parser.add_argument("--batch-size", type=count(MAX_BATCH), default=64,
                        help="images per step and process (default 64)")
    parser.add_argument("--lr", type=positive_float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--seed", type=count(MAX_SEED, minimum=0), default=0,
                        help="seed of data order, augmentation and sampling")
    parser.add_argument("--sam", action="store_true", help="sharpness-aware minimisation (twice the compute)")
    parser.add_argument("--sigma-reparam", action="store_true", help="sigmaReparam on linear weights")
    parser.add_argument("--patch-mixing", action="store_true", help="Patch Mixing augmentation")
    parser.add_argument("--mixup", type=non_negative_float, default=0.0, metavar="ALPHA",
                        help="mixup with Beta(ALPHA, ALPHA) shares (e.g. 0.8; default 0: off)")
    parser.add_argument("--cutmix", type=non_negative_float, default=0.0, metavar="ALPHA",
                        help="CutMix with Beta(ALPHA, ALPHA) shares (e.g. 1.0; default 0: off); with --mixup, one "
                             "of the two per batch")
    parser.add_argument("--randaugment", type=count(16, minimum=0), default=0, metavar="OPS",
                        help="RandAugment: OPS operations per image (e.g. 2; default 0: off)")
    parser.add_argument("--randaugment-magnitude", type=count(30, minimum=0), default=9, metavar="M",
                        help="RandAugment's magnitude in [0, 30] (default 9)")
    parser.add_argument("--out", type=output_dir, metavar="DIR",
                        help="run directory (default runs/<kind>-<name>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--checkpoint-every", type=count(MAX_STEPS), default=100, metavar="STEPS",
                        help="steps between checkpoints (default 100)")
    parser.add_argument("--max-steps", type=count(MAX_STEPS), metavar="STEPS",
                        help="stop after this many steps in total (resume later with --resume)")
    threads_option(parser)
    device_options(parser)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile a stand-alone model (falls back to eager, with a warning, where a kind "
                             "does not compile; a supernet is never compiled)")


def _annealed_share(text: str) -> float:
    """An argparse type: the share of training under confidence-guided annealing, in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise BadArgument(f"must be < 1 (a share of the training steps), got {text}")
    return value


def _boundary_width(text: str) -> float:
    """An argparse type: how close to a rounding boundary (in grid steps) a weight keeps training, in (0, 0.5)."""
    value = positive_float(text)
    if value >= 0.5:
        raise BadArgument(f"must be < 0.5 (half a grid step is every weight), got {text}")
    return value


def _train_run(args: argparse.Namespace, kind: str, name: str) -> tuple[Dataset, TrainSettings, Path]:
    """Dataset, settings and run directory from the shared arguments.

    The settings hold the shared flags; `nas supernet train` adds its sandwich flags with
    :func:`dataclasses.replace`, which checks them as :class:`TrainSettings` checks every field.
    """
    import time

    from nas.data import load_dataset
    from nas.supernet import TrainSettings

    if args.resume and args.out is None:
        raise NasError("--resume needs --out DIR, the run directory to continue")
    args.placement = placement_of(args)  # an absent device fails here, before the data loads
    set_threads(args)
    dataset = load_dataset(args.data)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, sam=args.sam,
                             sigma_reparam=args.sigma_reparam, patch_mixing=args.patch_mixing, mixup=args.mixup,
                             cutmix=args.cutmix, randaugment_ops=args.randaugment,
                             randaugment_magnitude=args.randaugment_magnitude)
    out = args.out or output_dir(f"runs/{kind}-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    return dataset, settings, out


def _train_options_of(args: argparse.Namespace) -> TrainOptions:
    """Checkpoints and early stop from the shared arguments; the bar and log lines on rank 0 unless --json."""
    from tqdm import tqdm

    from nas.supernet import TrainOptions

    show = not args.json and _is_rank_zero()
    return TrainOptions(checkpoint_every=args.checkpoint_every, max_steps=args.max_steps, progress=show,
                        log=tqdm.write if show else None, placement=args.placement, compile=args.compile)


def _print_training(args: argparse.Namespace, result: TrainResult) -> int:
    summary = {"out": str(result.out), "steps": result.steps, "total_steps": result.total_steps,
               "completed": result.completed, "metrics": result.metrics, "seconds": round(result.seconds, 2),
               "images_per_second": round(result.images_per_second, 1),
               "final_losses": result.history[-1]["losses"] if result.history else []}
    if result.history and "auxiliary_losses" in result.history[-1]:  # MoE load balancing, added to the loss
        summary["final_auxiliary_losses"] = result.history[-1]["auxiliary_losses"]
    if args.json:
        print_json(summary)
        return 0
    state = "done" if result.completed else f"stopped at step {result.steps} of {result.total_steps}"
    print(f"{state}: {result.images_per_second:.0f} images/s; run directory {result.out}")
    for key, value in result.metrics.items():
        print(f"  {key:<20} {value:.4f}")
    if "final_auxiliary_losses" in summary:
        print(f"  {'auxiliary loss':<20} {summary['final_auxiliary_losses'][0]:.4f} (MoE load balancing, last step)")
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
        train.add_argument("--num-random", type=count(MAX_BATCH, minimum=0), default=2, metavar="K",
                           help="random subnets per step besides the largest and smallest (default 2)")
        train.add_argument("--ends", choices=("fixed", "varied"), default="fixed",
                           help="sandwich ends: the same largest and smallest points every step (default), or drawn "
                                "each step with extreme sizes and random kinds")
        train.add_argument("--no-distill", action="store_true", help="train every subnet on the labels")
        train.add_argument("--scan", type=positive, default=1000, metavar="N",
                           help="sampled points that size the shared weights (default 1000)")
        train.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    def run(self, args: argparse.Namespace) -> int:
        from dataclasses import replace

        from nas.supernet import train_supernet

        space_name = Path(args.space).stem if args.space.endswith((".yaml", ".yml")) else args.space
        dataset, shared, out = _train_run(args, "supernet", space_name)
        settings = replace(shared, num_random=args.num_random, ends=args.ends, distill=not args.no_distill)
        result = train_supernet(args.space, dataset, settings, width=args.proxy_width, resolution=args.resolution,
                                scan=args.scan, data_spec=args.data, out=out, resume=args.resume,
                                options=_train_options_of(args))
        return _print_training(args, result) if _is_rank_zero() else 0


class TrainCommand(Command):
    """Train one architecture stand-alone (a zoo name or an arch file), at the proxy scale unless --full-scale."""

    name = "train"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name (see `nas zoo`) or a YAML/JSON arch file")
        _train_options(parser, epochs=10)
        parser.add_argument("--full-scale", action="store_true",
                            help="the arch's own widths and resolution (ignores --proxy-width/--resolution)")
        parser.add_argument("--precision", type=precision_spec, metavar="SPEC",
                            help="quantisation-aware training: every block's weights and activations fake-quantised "
                                 "to SPEC = WEIGHTS[/ACTIVATIONS], each FORMAT[:channel][:affine] (fp16, bf16, "
                                 "fp8_e4m3, fp8_e5m2, int8, int4; e.g. int8, int4:channel/int8:affine); default: "
                                 "the arch's own (float32 unless its blocks name one)")
        parser.add_argument("--init", metavar="PATH",
                            help="start from a trained model's weights (the model.pt or run directory of an earlier "
                                 "`nas train` of this arch at this scale; a float32 one for quantisation-aware "
                                 "fine-tuning)")
        parser.add_argument("--statsq", action="store_true",
                            help="OFQ's statistical weight quantisation: integer weight ranges +-2 mean|w| instead of "
                                 "min-max")
        parser.add_argument("--cga", type=_annealed_share, default=0.0, metavar="SHARE",
                            help="OFQ's confidence-guided annealing over the last SHARE of training (e.g. 0.1): "
                                 "integer weights away from a rounding boundary freeze (default 0: off)")
        parser.add_argument("--cga-boundary", type=_boundary_width, default=0.005, metavar="WIDTH",
                            help="under --cga, weights within WIDTH grid steps of a rounding boundary keep training "
                                 "(default 0.005)")
        parser.add_argument("--qkr", action="store_true",
                            help="OFQ's query-key reparameterisation: each attention head's logits from its merged "
                                 "query-key matrix, quantised in place of the query and key rows (needs integer "
                                 "weights, e.g. --precision int8); recorded in the arch, so the exported model stays "
                                 "merged")

    def run(self, args: argparse.Namespace) -> int:
        from dataclasses import replace

        from nas.supernet import train_model

        arch = resolve_arch(args.arch)
        if args.precision is not None:
            arch = arch.with_precision(args.precision)
        if args.qkr:
            from nas.blocks.qkr import merge_query_key

            arch = merge_query_key(arch)
        dataset, shared, out = _train_run(args, "train", arch.name or arch.id)
        settings = replace(shared, statsq=args.statsq, cga=args.cga, cga_boundary=args.cga_boundary)
        result = train_model(arch, dataset, settings, width=1.0 if args.full_scale else args.proxy_width,
                             resolution=None if args.full_scale else args.resolution, data_spec=args.data, out=out,
                             resume=args.resume, options=_train_options_of(args), init=args.init)
        return _print_training(args, result) if _is_rank_zero() else 0
