"""Acceptance bench of issue 25: do clipped softmax and gated attention shrink the INT8 PTQ drop?

Paper: "Quantizable Transformers: Removing Outliers by Helping Attention Heads Do Nothing", Bondarenko, Nagel and
Blankevoort, NeurIPS 2023, arXiv:2306.12929. Its claim: a head that wants to leave a token alone must push its
softmax scores to extremes, which grows activation outliers; clipped softmax and gated attention let it do nothing
with small values, so the outliers, the kurtosis and the INT8 drop all shrink.

What runs: a small isotropic ViT (patch 4 on 32 px, 64 tokens and a class token, dim 64, 4 heads, 4 blocks, MLP
ratio 2) trained alone on the bundled default dataset three times, from the same seed and data order:

* ``softmax``: plain attention;
* ``clipped``: clipped softmax with ``zeta = 1``, ``gamma = -alpha / T`` (the paper's parametrisation;
  ``alpha`` = :data:`CLIP_ALPHA`, ``T`` = 65 tokens);
* ``gated``: the per-head conditional gate.

For each it prints, on the 8 calibration batches (training images):

* over the residual stream (every block's output, what the paper's Table 2 measures): the largest ``max |x|``
  and the mean kurtosis (Pearson's, over all elements of a block's output);
* over the inputs of every quantised layer (``nas analyze``'s table): the largest ``max |x|`` and the mean
  kurtosis. These are what fake quantisation rounds here: block layers' inputs (after LayerNorm for ``qkv`` and
  ``fc1``, the heads' output for ``proj``, the GELU output for ``fc2``); the residual stream itself stays float;

then the float top-1 on the validation split, the top-1 after PTQ (default ``int8``: weights and activations
int8 per tensor, min-max calibration on 8 training batches, ``nas quantize``'s defaults) and the drop, and the
top-1 after the same PTQ with NoisyQuant's noisy bias (``nas quantize --noisy-bias``).

Usage::

    python bench/quant.py                 # 2 epochs each: about 5 minutes on one busy core
    python bench/quant.py --epochs 30     # longer training, where outliers have time to grow
    python bench/quant.py --seeds 0 1 2   # several seeds, one line per variant and seed
    python bench/quant.py --precision int4   # the same models at another precision
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import nas
from nas.data import load_dataset
from nas.quantization import CalibrationSettings, analyze, load_float, ptq, summarize
from nas.quantization.analyze import LayerAccumulator
from nas.supernet import EvalBatches, TrainOptions, TrainSettings, train_model

TOKENS = 65  # 8 x 8 patches and the class token
CLIP_ALPHA = 0.5  # gamma = -alpha / T: alpha >= 1 would clip a uniform (initial) attention row to all zeros
VARIANTS: dict[str, dict[str, object]] = {
    "softmax": {},
    "clipped": {"clip_zeta": 1.0, "clip_gamma": -CLIP_ALPHA / TOKENS},
    "gated": {"gated": True},
}


def arch_of(variant: str) -> nas.Arch:
    mixer = {"kind": "attention", "heads": 4, **VARIANTS[variant]}
    return nas.Arch.from_dict({
        "schema": 1, "name": f"quant_bench_{variant}", "input": {"resolution": 32, "channels": 3},
        "stem": {"kind": "patch", "patch": 4, "class_token": True, "pos_embed": True, "dim": 64},
        "stages": [{"dim": 64, "downsample": None,
                    "blocks": {"repeat": 4, "block": {"mixer": mixer, "ffn": {"kind": "mlp", "ratio": 2},
                                                      "norm": "layernorm"}}}],
        "head": {"kind": "linear", "pool": "cls", "norm": "layernorm", "num_classes": 10},
    })


@torch.no_grad()
def residual_stream(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """The largest ``max |x|`` and the mean kurtosis of the blocks' outputs over ``images``."""
    blocks = [block for stage in model.stages for block in stage]
    accumulators = [LayerAccumulator() for _ in blocks]
    handles = [block.register_forward_hook(lambda module, inputs, output, acc=acc: acc.add_input(output))
               for block, acc in zip(blocks, accumulators, strict=True)]
    try:
        for batch in images:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {"residual_max_abs": max(acc.max_abs for acc in accumulators),
            "residual_kurtosis": sum(acc.kurtosis() for acc in accumulators) / len(accumulators)}


def measure(variant: str, seed: int, epochs: int, precision: nas.Precision, dataset: object,
            folder: Path) -> dict[str, float]:
    arch = arch_of(variant)
    started = time.perf_counter()
    out = folder / f"{variant}-{seed}"
    train_model(arch, dataset, TrainSettings(epochs=epochs, batch_size=64, lr=2e-3, seed=seed), width=1.0,
                resolution=32, out=out, options=TrainOptions(progress=False))
    trained_s = time.perf_counter() - started
    arch, model = load_float(arch, out)
    settings = CalibrationSettings(seed=seed)
    calibration = EvalBatches.from_dataset(dataset, resolution=32, channels=3, calibration_batches=settings.batches,
                                           batch_size=64, seed=seed, max_val=1).calibration
    residual = residual_stream(model, [images for images, _ in calibration])
    stats = summarize(analyze(model, arch, precision, dataset, settings))
    metrics = ptq(model, arch, precision, dataset, settings).metrics
    noisy = ptq(model, arch, precision, dataset, replace(settings, noisy_bias=True)).metrics
    return {**residual, **stats, **metrics, "noisy_accuracy": noisy["quantized_accuracy"], "train_s": trained_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per variant (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    parser.add_argument("--precision", default="int8", help="the PTQ precision, WEIGHTS[/ACTIVATIONS] (default int8)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    precision = nas.Precision.from_spec(args.precision)
    dataset = load_dataset(None)
    print(f"{dataset.name}: {dataset.num_train} training / {len(dataset.val_labels)} validation images; "
          f"{args.epochs} epochs; PTQ at {args.precision} (per tensor unless :channel), min-max, 8 batches")
    print(f"{'':<13} {'residual stream':>17}  {'quantised inputs':>18}")
    print(f"{'variant':<8} {'seed':>4} {'max|x|':>8} {'kurt':>8}  {'max|x|':>8} {'kurt':>8}  {'float':>7} "
          f"{'PTQ':>7} {'drop':>7} {'PTQ+NQ':>7} {'train s':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for variant in VARIANTS:
                row = measure(variant, seed, args.epochs, precision, dataset, Path(folder))
                print(f"{variant:<8} {seed:>4} {row['residual_max_abs']:>8.2f} {row['residual_kurtosis']:>8.2f}  "
                      f"{row['max_abs']:>8.2f} {row['kurtosis_mean']:>8.2f}  {row['float_accuracy']:>7.4f} "
                      f"{row['quantized_accuracy']:>7.4f} {row['drop']:>+7.4f} {row['noisy_accuracy']:>7.4f} "
                      f"{row['train_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
