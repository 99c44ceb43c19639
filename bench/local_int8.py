"""The local predictor on real int8 execution: `nas profile --target local --runtime onnxruntime` with mixed precision.

Times random metaformer models on this machine with onnxruntime (one thread):
float models, which fit and validate the fp32 coefficients, and mixed-precision
models (each block int8 or fp32, run as their int8 QDQ models, the ones
``nas export --format onnx`` writes), which fit and validate the int8 processor
(:mod:`nas.latency.local_int8`). Prints, for the held-out mixed-precision
models, Spearman rho, MAPE and the share within +-15% (acceptance, issue 25:
>= 90% of them), each model's measured and predicted latency, and the
1-minute load the timings ran under (the machine may be
shared: a loaded machine widens the spread). Writes the local target under
``$NAS_HOME`` (default ``~/.cache/nas``) like the command does; timings are
cached there, so a killed run resumes.

Usage::

    python bench/local_int8.py                  # 30 + 10 float, 40 + 20 mixed models at 96 px (tens of minutes)
    python bench/local_int8.py --smoke          # 4 + 3 float, 4 + 3 mixed at 64 px, one repeat (CI)
    python bench/local_int8.py --mixed-held-out 40 --resolution 128
"""

from __future__ import annotations

import argparse
import sys

from nas.latency.local import ProfileOptions, profile_local
from nas.latency.measure import Protocol


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run (CI)")
    parser.add_argument("--fit-archs", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=10)
    parser.add_argument("--mixed-fit", type=int, default=40)
    parser.add_argument("--mixed-held-out", type=int, default=20)
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.smoke:
        args.fit_archs, args.held_out, args.mixed_fit, args.mixed_held_out = 4, 3, 4, 3
        args.resolution, args.repeats = 64, 1
    protocol = Protocol(runtime="onnxruntime", threads=1, warmup=1, repeats=args.repeats)
    options = ProfileOptions(protocol=protocol, fit_archs=args.fit_archs, held_out_archs=args.held_out,
                             resolution=args.resolution, seed=args.seed, mixed_fit_archs=args.mixed_fit,
                             mixed_held_out_archs=args.mixed_held_out)
    command = "python bench/local_int8.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = profile_local(options, progress=True, command=command.strip())
    held, mixed = result.held_out, result.mixed
    if mixed is None:
        raise SystemExit("no mixed-precision models were timed (--mixed-fit/--mixed-held-out 0)")
    print(f"local/{result.setting}: {result.measured} models timed now, {result.wall_s:.0f} s, 1-minute load "
          f"{result.load['min']}-{result.load['max']} (median {result.load['median']}) on this machine's CPUs")
    print(f"float, held out {held.rows}: Spearman rho {held.spearman_rho:.3f}, MAPE {held.mape_pct:.1f}%, "
          f"within 10% {held.within_10_pct:.1f}%, within 20% {held.within_20_pct:.1f}%")
    print(f"int8 processor fitted on {mixed['fit_rows']} mixed-precision models: in-sample MAPE "
          f"{mixed['in_sample']['mape_pct']}%")
    figures = mixed["held_out"]
    print(f"mixed precision, held out {figures['rows']}: Spearman rho {figures['spearman_rho']}, MAPE "
          f"{figures['mape_pct']}%, within 15% {mixed['within_15_pct']}% (acceptance >= 90%: "
          f"{'met' if mixed['within_15_pct'] >= 90 else 'NOT met'})")
    _print_models(result)
    return 0


def _print_models(result: object) -> None:
    """Each held-out mixed-precision model: measured, predicted, error."""
    from nas.latency import get_target

    setting = get_target("local").setting(result.setting)  # type: ignore[attr-defined]
    rows = setting.validation["mixed_precision"]["predictions"]
    print(f"{'model':<14}{'measured ms':>12}{'predicted ms':>14}{'error %':>9}")
    for arch_id, _, measured, predicted in rows:
        print(f"{arch_id:<14}{measured:>12.3f}{predicted:>14.3f}{100 * (predicted / measured - 1):>9.1f}")


if __name__ == "__main__":
    sys.exit(main())
