"""The calibration toolchain stays apart from prediction: prediction never loads it, and each of its modules
imports on its own (no import cycle), each in a fresh interpreter so nothing imported earlier hides a cycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import ConfigError
from nas.latency.calibration import select
from tests.conftest import ROOT

TOOLCHAIN = "nas.latency.calibration"


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("module", ["fit", "validate", "select"])
def test_each_toolchain_module_imports_first(module: str) -> None:
    loaded = json.loads(_python(f"import json, sys; import {TOOLCHAIN}.{module}; "
                                f"print(json.dumps(sorted(sys.modules)))"))
    assert f"{TOOLCHAIN}.{module}" in loaded


def test_predict_and_targets_load_no_toolchain_module() -> None:
    out = _python("import json, sys\n"
                  "from nas.cli import main\n"
                  "codes = [main(['predict', 'efficientformer_l1', '--target', 'iphone12']), main(['targets'])]\n"
                  f"loaded = sorted(name for name in sys.modules if name.startswith({TOOLCHAIN!r}))\n"
                  "print(json.dumps({'codes': codes, 'loaded': loaded}))")
    result = json.loads(out.splitlines()[-1])
    assert result == {"codes": [0, 0], "loaded": []}
    assert "ms" in out  # the prediction was printed


@pytest.mark.parametrize("target", select.TARGETS)
def test_every_target_has_a_name_table_of_known_shape(target: str) -> None:
    table = select.name_table(target)
    assert table.models
    assert all(pick.reference and (pick.resolution is None or pick.resolution > 0)
               for pick in [*table.models.values(), *(pick for _, _, pick in table.by_runtime)])


def test_a_malformed_name_table_names_its_file_and_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "v100.yaml").write_text("models:\n  ResNet18: {reference: resnet18, resolution: big}\n")
    monkeypatch.setattr(select, "_NAMES_DIR", tmp_path)
    select.name_table.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"v100\.yaml: models\.ResNet18: expected a reference name"):
            select.name_table("v100")
    finally:
        select.name_table.cache_clear()
