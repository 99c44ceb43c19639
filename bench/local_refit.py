"""Refit the local eager-PyTorch predictor on the timings a profile cached, with and without fused attention.

Times nothing: it reads the timings ``nas profile --target local`` cached (``~/.cache/nas/profile/
torch_fp32_1t.json``) for the models that profile drew (``sample_archs(space, fit + held, resolution, seed)``,
the first ``fit`` fitted, the rest held out), takes each model's fastest run over all passes, and refits the
``local`` target's default setting twice: as the runtime runs ``F.scaled_dot_product_attention`` op by op,
and as one fused kernel (``fused_attention``, :mod:`nas.latency.fused_attention`). Per variant it prints the
held-out figures of the profile's own split and the mean share within +-10% (and MAPE) over random
fit/held-out splits of the same size, since one split of 60 models moves by several points with the split alone.

Usage::

    python bench/local_refit.py [--splits 12] [--fit 60] [--held 60]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from nas.latency.local import cache_path, fit_local, sample_archs
from nas.latency.machine import machine_facts
from nas.latency.measure import Protocol
from nas.latency.profile_timings import cache_header, joined, load_cached
from nas.latency.targets import local_target_path, parse_target
from nas.yamlio import load_yaml


def _fastest_ms(ids: list[str]) -> np.ndarray:
    """Each model's fastest run over all the passes ``nas profile`` cached on this machine."""
    protocol = Protocol()
    path = cache_path(protocol)
    cached = load_cached(path, cache_header(protocol, machine_facts().cpu_model))
    missing = [arch_id for arch_id in ids if arch_id not in cached]
    if missing or not local_target_path().is_file():
        raise SystemExit(f"{path} has no timings of this machine for {len(missing)} of the models, or "
                         f"{local_target_path()} is missing: run `nas profile --target local` first")
    return np.array([joined(cached[arch_id]).latency_ms("min") for arch_id in ids])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=12, help="random fit/held-out splits")
    parser.add_argument("--fit", type=int, default=60)
    parser.add_argument("--held", type=int, default=60)
    parser.add_argument("--space", default="metaformer")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = args.fit + args.held
    archs = sample_archs(args.space, count, args.resolution, args.seed)
    measured = _fastest_ms([arch.id for arch in archs])
    document = json.loads(json.dumps(load_yaml(local_target_path())))
    name = document["default_setting"]
    for fused in (False, True):
        document["settings"][name]["fused_attention"] = fused
        setting = parse_target(document, local_target_path()).setting(name)
        _, _, held, _ = fit_local(setting, archs[:args.fit], measured[:args.fit], archs[args.fit:],
                                  measured[args.fit:])
        rng = np.random.default_rng(1)
        within, mape = [], []
        for _ in range(args.splits):
            order = rng.permutation(count)
            fit, out = order[:args.fit], order[args.fit:]
            _, _, figures, _ = fit_local(setting, [archs[i] for i in fit], measured[fit], [archs[i] for i in out],
                                         measured[out])
            within.append(figures.within_10_pct)
            mape.append(figures.mape_pct)
        print(f"fused_attention={str(fused).lower():5s}  profile split: within +-10% {held.within_10_pct:.1f}%, "
              f"MAPE {held.mape_pct:.2f}%  |  {args.splits} random splits: within +-10% {np.mean(within):.1f}% "
              f"(min {np.min(within):.1f}, max {np.max(within):.1f}), MAPE {np.mean(mape):.2f}%")


if __name__ == "__main__":
    main()
