"""Latency commands: ``nas predict``, ``nas targets`` and ``nas profile`` (measure this machine)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nas.commands.base import (
    MAX_BATCH,
    MAX_SEED,
    MAX_STEPS,
    Command,
    arch_resolution,
    count,
    positive,
    print_json,
    print_table,
    resolution,
    resolve_arch,
    threads_option,
)

__all__ = ["PredictCommand", "TargetsCommand", "ProfileCommand"]


def _figures_text(validation: dict[str, Any] | None) -> str:
    """One line of a predictor's validation figures."""
    if not validation:
        return "not validated (coefficients are the priors; run python -m nas.latency.calibration.fit --write)"
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
        parser.add_argument("--batch", type=count(MAX_BATCH), default=1, help="inputs per forward pass (default 1)")
        parser.add_argument("--resolution", type=arch_resolution, help="input resolution (default: the arch's)")

    def run(self, args: argparse.Namespace) -> int:
        import nas.latency

        arch = resolve_arch(args.arch, args.resolution)
        result = nas.latency.predict(arch, target=args.target, setting=args.setting, batch=args.batch)
        if args.json:
            print_json({**result.to_dict(), "arch": arch.name or args.arch})
            return 0
        print(f"{arch.name or args.arch} on {result.target}/{result.setting}, batch {result.batch}: "
              f"{result.latency_ms:.3f} ms")
        width = max([14, *map(len, result.breakdown)])  # kinds, and kinds with their format ("conv [fp16 on a53]")
        for kind, value in sorted(result.breakdown.items(), key=lambda item: -item[1]):
            print(f"  {kind:<{width}} {value:9.3f} ms  {100 * value / result.latency_ms:5.1f}%")
        print(f"  predictor: {_figures_text(result.validation)}")
        _print_fallback_priors(result)
        return 0


def _print_fallback_priors(result: Any) -> None:
    """Say how much of a prediction runs on a fallback processor priced on priors only (the ZCU104's A53)."""
    import nas.latency
    from nas.latency.provenance import coefficient_sources, fallback_prior_ms

    sources = coefficient_sources(nas.latency.get_target(result.target).setting(result.setting))
    share = fallback_prior_ms(result.breakdown, sources)
    if share > 0:
        print(f"  priors: {share:.3f} ms ({100 * share / result.latency_ms:.1f}%) runs on the fallback processor "
              f"{sources.fallback_device} or switches to it, priced on priors only (no calibration row exercises "
              "them; see `nas targets`)")


class TargetsCommand(Command):
    """List the hardware targets: each setting, its validation over CNN and transformer families, its priors."""

    name = "targets"

    def run(self, args: argparse.Namespace) -> int:
        import nas.latency
        from nas.latency.predict import validation_summary
        from nas.latency.provenance import coefficient_sources

        rows = []
        for name in nas.latency.list_targets():
            target = nas.latency.get_target(name)
            for setting in target.settings.values():
                rows.append({
                    "target": name,
                    "setting": setting.name,
                    "default": setting.name == target.default_setting,
                    "device": setting.device.title,
                    "runtime": setting.runtime,
                    "precision": setting.precision,
                    "batch_sizes": list(setting.batch_sizes),
                    "fitted": setting.coefficients is not None,
                    "validation": validation_summary(setting),
                    "coefficients": coefficient_sources(setting).to_dict(),
                    "_setting": setting,
                })
        if args.json:
            print_json([{key: value for key, value in row.items() if key != "_setting"} for row in rows])
            return 0
        print_table([_targets_line(row) for row in rows])
        print("* default setting. LOFO: leave-one-family-out over the calibration rows (predictors/*.yaml), all "
              "families, then the CNN and the transformer families apart (rho / MAPE %); local: held-out models "
              "measured here (nas profile --target local). coefficients: fitted to measurements / left at their "
              "priors (not matched by the setting's fit.free); those set from a local measurement are named below.")
        for line in _prior_lines(rows):
            print(line)
        return 0


def _pair(figures: dict[str, Any] | None) -> str:
    """``rho / MAPE`` of a stored figures block, or ``-``."""
    if not figures:
        return "-"
    rho = figures.get("spearman_rho")
    return f"{'n/a' if rho is None else f'{rho:.3f}'} / {figures.get('mape_pct'):.1f}"


def _targets_line(row: dict[str, Any]) -> dict[str, Any]:
    summary = row["validation"] or {}
    overall = summary.get("lofo") or summary.get("held_out")
    by_architecture = summary.get("lofo_by_architecture") or {}
    kinds = list((summary.get("architectures") or {}).values())
    coefficients = row["coefficients"]
    return {"target": row["target"], "setting": row["setting"] + (" *" if row["default"] else ""),
            "precision": row["precision"], "batch": ",".join(map(str, row["batch_sizes"])),
            "LOFO rho / MAPE": _pair(overall), "CNN": _pair(by_architecture.get("cnn")),
            "transformer": _pair(by_architecture.get("transformer")),
            "families cnn/tr": f"{kinds.count('cnn')}/{kinds.count('transformer')}" if kinds
            else len(summary.get("families", {})),
            "coefficients fitted/priors": f"{len(coefficients['fitted'])}/{len(coefficients['priors'])}"}


def _prior_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per setting, the coefficients left at their priors (fallback processors first and in words), then those set
    from a local measurement."""
    from nas.latency.provenance import coefficient_sources, compact_names

    lines = []
    for row in rows:
        setting = row["_setting"]
        sources = coefficient_sources(setting)
        every = tuple(setting.priors.names())
        label = f"  {row['target']}/{row['setting']}"
        if sources.fallback_priors:
            kinds = ", ".join(sources.fallback_kinds)
            lines.append(f"{label}: ops on the fallback processor {sources.fallback_device} ({kinds}: softmax, layer "
                         f"norms and attention matmuls among them) are priced on priors only: "
                         f"{', '.join(compact_names(sources.fallback_priors, every))}")
        others = tuple(name for name in sources.priors if name not in sources.fallback_priors)
        if others:
            lines.append(f"{label}: priors, not fitted: {', '.join(compact_names(others, every))}")
        if sources.measured:
            how = setting.measurement or {}
            lines.append(f"{label}: set from local measurement ({how.get('date', '?')}, {how.get('command', '?')}): "
                         f"{', '.join(compact_names(sources.measured, every))}")
    return lines


def _profile_options(args: argparse.Namespace) -> Any:
    from nas.latency.local import ProfileOptions
    from nas.latency.measure import Protocol

    protocol = Protocol(runtime=args.runtime, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
                        chunk=args.chunk, statistic=args.statistic, passes=args.passes)
    return ProfileOptions(protocol=protocol, fit_archs=args.fit_archs, held_out_archs=args.held_out,
                          resolution=args.resolution, seed=args.seed, resume=not args.fresh,
                          mixed_fit_archs=args.mixed_fit, mixed_held_out_archs=args.mixed_held_out)


class ProfileCommand(Command):
    """Measure this machine (random metaformer models, end to end), fit its latency predictor, validate it."""

    name = "profile"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", required=True, choices=("local",), help="the target to measure: local")
        parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                            help="what runs the models (default torch eager)")
        threads_option(parser, help_text="intra-op threads (default 1)")
        parser.add_argument("--fit-archs", type=positive, default=60, help="random models to fit on (default 60)")
        parser.add_argument("--held-out", type=positive, default=60,
                            help="further random models to validate on, never fitted (default 60)")
        parser.add_argument("--mixed-fit", type=count(MAX_STEPS, minimum=0), metavar="N",
                            help="onnxruntime: random mixed-precision (int8 + fp32 blocks) models to fit the int8 "
                                 "processor on (default 40; 0: none)")
        parser.add_argument("--mixed-held-out", type=count(MAX_STEPS, minimum=0), metavar="N",
                            help="onnxruntime: further mixed-precision models to validate it on (default 20)")
        parser.add_argument("--resolution", type=resolution, default=128,
                            help="input resolution (the nearest valid one per model; default 128)")
        parser.add_argument("--repeats", type=count(MAX_STEPS), default=7, help="timed runs per model (default 7)")
        parser.add_argument("--passes", type=count(MAX_STEPS), default=2,
                            help="sweeps over all the models, one after the other, so that a slowdown of a few "
                                 "minutes does not hit every run of a model; two or more also say how far the "
                                 "measurement repeats (default 2)")
        parser.add_argument("--statistic", choices=("min", "median"), default="min",
                            help="a model's latency from its timed runs (default min: load only slows runs down)")
        parser.add_argument("--warmup", type=count(MAX_STEPS, minimum=0), default=2,
                            help="untimed runs per model first (default 2)")
        parser.add_argument("--chunk", type=positive, default=4, help="models timed round-robin (default 4)")
        parser.add_argument("--seed", type=count(MAX_SEED, minimum=0), default=0,
                            help="seed of the random models (default 0)")
        parser.add_argument("--fresh", action="store_true", help="ignore timings cached by an earlier profile")

    def run(self, args: argparse.Namespace) -> int:
        from nas.latency.local import profile_local

        command = "nas " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["profile"] else "nas profile --target local"
        result = profile_local(_profile_options(args), progress=not args.json, command=command)
        if args.json:
            print_json(result.to_dict())
            return 0
        fit, held = result.fit, result.held_out
        print(f"local/{result.setting} written to {result.path} ({result.wall_s:.0f} s; {result.measured} models "
              f"timed now; 1-min load {result.load['min']}-{result.load['max']})")
        print(f"  fit on {fit.rows} models: MAPE {fit.mape_pct:.1f}%")
        print(f"  held out {held.rows} models: Spearman rho {held.spearman_rho:.3f}, MAPE {held.mape_pct:.1f}%, "
              f"within 10% {held.within_10_pct:.1f}%, within 20% {held.within_20_pct:.1f}%")
        if result.passes_agree_pct is not None:
            print(f"  the measurement itself: {result.passes_agree_pct:.1f}% of the models timed within 10% in every "
                  f"pass (near 100% on a quiet machine; lower, this machine's noise alone moves models out of the "
                  f"10% band)")
        if result.mixed is not None:
            mixed = result.mixed["held_out"]
            print(f"  int8 processor fitted on {result.mixed['fit_rows']} mixed-precision models: in-sample MAPE "
                  f"{result.mixed['in_sample']['mape_pct']}%")
            print(f"  held out {mixed['rows']} mixed-precision (int8 + fp32) models: Spearman rho "
                  f"{mixed['spearman_rho']}, MAPE {mixed['mape_pct']}%, within 15% {result.mixed['within_15_pct']}% "
                  f"(acceptance: >= 90%)")
        for name, figures in result.xeon.items():
            print(f"  xeon/{name} vs these measurements: rho {figures['spearman_rho']}, MAPE {figures['mape_pct']}%; "
                  f"after scale x{figures['scale']}: MAPE {figures['scaled_mape_pct']}%, within 10% "
                  f"{figures['scaled_within_10_pct']}%")
        return 0
