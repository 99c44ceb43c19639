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

For each it prints, over the inputs of every quantised layer (``nas analyze``'s table on the calibration
batches): the largest ``max |x|``, the largest and the mean kurtosis; then the float top-1 on the validation split,
the top-1 after INT8 PTQ (weights and activations int8 per tensor, min-max calibration on 8 training batches:
``nas quantize``'s defaults) and the drop. Those figures are what the paper's Table 2 reports for its models.

Usage::

    python bench/quant.py                 # 2 epochs each: about 5 minutes on one busy core
    python bench/quant.py --epochs 30     # longer training, where outliers have time to grow
    python bench/quant.py --seeds 0 1 2   # several seeds, one line per variant and seed
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import nas
from nas.data import load_dataset
from nas.quantization import CalibrationSettings, analyze, load_float, ptq, summarize
from nas.supernet import TrainOptions, TrainSettings, train_model

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


def measure(variant: str, seed: int, epochs: int, dataset: object, folder: Path) -> dict[str, float]:
    arch = arch_of(variant)
    started = time.perf_counter()
    out = folder / f"{variant}-{seed}"
    train_model(arch, dataset, TrainSettings(epochs=epochs, batch_size=64, lr=2e-3, seed=seed), width=1.0,
                resolution=32, out=out, options=TrainOptions(progress=False))
    trained_s = time.perf_counter() - started
    arch, model = load_float(arch, out)
    precision = nas.Precision.from_spec("int8")
    settings = CalibrationSettings(seed=seed)
    stats = summarize(analyze(model, arch, precision, dataset, settings))
    metrics = ptq(model, arch, precision, dataset, settings).metrics
    return {**stats, **metrics, "train_s": trained_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per variant (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(None)
    print(f"{dataset.name}: {dataset.num_train} training / {len(dataset.val_labels)} validation images; "
          f"{args.epochs} epochs; INT8 PTQ: int8 weights and activations per tensor, min-max, 8 batches")
    header = (f"{'variant':<8} {'seed':>4} {'max|x|':>8} {'kurt max':>9} {'kurt mean':>9} {'float':>7} "
              f"{'int8':>7} {'drop':>7} {'train s':>8}")
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        for seed in args.seeds:
            for variant in VARIANTS:
                row = measure(variant, seed, args.epochs, dataset, Path(folder))
                print(f"{variant:<8} {seed:>4} {row['max_abs']:>8.2f} {row['kurtosis_max']:>9.2f} "
                      f"{row['kurtosis_mean']:>9.2f} {row['float_accuracy']:>7.4f} {row['quantized_accuracy']:>7.4f} "
                      f"{row['drop']:>+7.4f} {row['train_s']:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
