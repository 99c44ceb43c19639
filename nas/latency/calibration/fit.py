"""Refit the packaged targets' coefficients to their calibration rows, validate them, and write the YAML.

The fit is :func:`nas.latency.calibration.solver.fit`, the validation
:func:`nas.latency.calibration.validate.validate`; this module only ties them to
the targets and the command line. Refit and write the YAML (coefficients and
validation figures, atomically)::

    python -m nas.latency.calibration.fit --target v100 --write
    python -m nas.latency.calibration.fit --target xeon --setting paddle_mkldnn_fp32
    python -m nas.latency.calibration.fit --all --write

``--keep-coefficients`` leaves the stored coefficients as they are and rewrites the validation block only:
the families they were fitted on (the stored ``fitted_families``, else ``families``) are validated
leave-one-family-out among themselves, and the rows of families added since are predicted by the stored
coefficients, which never saw them -- what ``nas predict`` gives for those families. For a setting whose new
rows are validated but whose refit is not taken.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from nas.errors import NasError
from nas.latency.calibration.dataset import dataset_for
from nas.latency.calibration.solver import fit
from nas.latency.calibration.validate import summary_line, validate, write_fit
from nas.latency.targets import Setting, get_target, list_targets

__all__ = ["fitted_families", "main"]

_MODULE = "nas.latency.calibration.fit"


def _settings(args: argparse.Namespace) -> list[Setting]:
    names = list_targets() if args.all else [args.target]
    out = []
    for name in names:
        target = get_target(name)
        out.extend(target.settings.values() if args.setting is None else [target.setting(args.setting)])
    return out


def fitted_families(setting: Setting) -> frozenset[str]:
    """The families ``setting``'s stored coefficients were fitted on, from its validation block."""
    validation = setting.validation or {}
    families = validation.get("fitted_families") or list(validation.get("families") or {})
    if setting.coefficients is None or not families:
        raise NasError(f"{setting.label}: --keep-coefficients, but no fit (coefficients and its families) is stored")
    return frozenset(families)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nas.latency.calibration.fit``: refit, validate (leave-one-family-out), optionally write."""
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", help="target name (predictors/<target>.yaml)")
    which.add_argument("--all", action="store_true", help="every target")
    parser.add_argument("--setting", help="only this setting (default: every setting of the target)")
    parser.add_argument("--write", action="store_true", help="write coefficients and validation into the YAML")
    parser.add_argument("--keep-coefficients", action="store_true",
                        help="do not refit: validate the current rows and write only the validation block")
    args = parser.parse_args(argv)
    command = f"python -m {_MODULE} " + " ".join(sys.argv[1:] if argv is None else argv)
    today = datetime.date.today().isoformat()
    try:
        for setting in _settings(args):
            dataset = dataset_for(setting)
            if args.keep_coefficients:
                report = validate(dataset, setting.coefficients, fitted_families(setting))
                coefficients = setting.coefficients
            else:
                coefficients = fit(dataset)
                report = validate(dataset, coefficients)
            print(summary_line(setting, report))
            if args.write:
                write_fit(setting, coefficients, report, command=command, date=today)
    except NasError as error:
        print(f"{_MODULE}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
