"""Commands that show what exists: the zoo (``nas zoo``), one built point (``nas build``) and the spaces
(``nas spaces``, ``nas space show|sample``)."""

from __future__ import annotations

import argparse
import re
from typing import Any

from nas.commands.base import (
    MAX_PRINTED_POINTS,
    MAX_SEED,
    Command,
    arch_resolution,
    count,
    output_file,
    print_json,
    print_table,
    resolve_arch,
)

__all__ = ["ZooCommand", "BuildCommand", "SpacesCommand", "SpaceCommand"]

_ARXIV = re.compile(r"arXiv:\s*(\d{4}\.\d{4,5})")


def _paper(source: str) -> str:
    """The paper a published figure cites: the first arXiv id in its source, else an empty string."""
    found = _ARXIV.search(source)
    return f"arXiv:{found.group(1)}" if found else ""


class ZooCommand(Command):
    """List the papers' models with parameters and MACs, measured and published, and the paper (arXiv id)."""

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
                    "gmacs_diff_pct": None if published.gmacs is None else round(
                        100 * (nas.cost.comparable_macs(report, published) / 1e9 / published.gmacs - 1), 2),
                    "paper": _paper(published.source),
                    "source": published.source,
                })
            rows.append(row)
        if args.json:
            print_json(rows)
        else:
            print_table([{key: value for key, value in row.items() if key != "source"} for row in rows])
        return 0


class BuildCommand(Command):
    """Build a zoo model or an arch file, run one forward pass, print its size and cost."""

    name = "build"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arch", help="a zoo model name (see `nas zoo`) or a YAML/JSON arch file")
        parser.add_argument("--resolution", type=arch_resolution,
                            help="input resolution to build at (default: the arch's)")
        parser.add_argument("--export", type=output_file, metavar="FILE",
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
            print_json(result)
            return 0
        print(f"{arch.name or args.arch}  id {arch.id}")
        print(f"  params   {result['params'] / 1e6:.3f} M")
        print(f"  MACs     {report.gmacs:.3f} G at {arch.input.resolution}x{arch.input.resolution}")
        print(f"  output   {tuple(output.shape)} from input {shape}")
        print(f"  stages   {', '.join(f'{s.dim}x{len(s.blocks)}' for s in arch.stages)}  (width x blocks)")
        if args.export is not None:
            print(f"  exported {args.export}")
        return 0


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
            print_json(rows)
        else:
            print_table([{**row, "description": row["description"].split(". ")[0][:60]} for row in rows])
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
        points = count(MAX_PRINTED_POINTS, bound="the most points one command prints")
        sample.add_argument("-n", "--count", type=points, default=1,
                            help=f"number of points (default 1, at most {MAX_PRINTED_POINTS})")
        sample.add_argument("--seed", type=count(MAX_SEED, minimum=0), default=0,
                            help="seed of the random generator (default 0)")

    def run(self, args: argparse.Namespace) -> int:
        import numpy as np

        import nas
        from nas.search.constraints import check_size_limits

        space = nas.space.load_space(args.space)
        if args.action == "show":
            if args.json:
                print_json(space.describe())
            else:
                print(space.show())
            return 0
        check_size_limits(space)
        vectors = space.sample_vectors(np.random.default_rng(args.seed), args.count)
        archs = [space.decode(vector).replace(name=f"{space.name}_seed{args.seed}_{index}")
                 for index, vector in enumerate(vectors)]
        if args.json:
            print_json([arch.to_dict() for arch in archs])
        else:
            print("---\n".join(arch.to_yaml() for arch in archs), end="")
        return 0
