"""Packaging: every package under nas/ and every data folder is installed, not only in editable mode."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_code_package_is_listed() -> None:
    found = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "nas").rglob("__init__.py")}
    listed = set(_setuptools()["packages"])
    assert found <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"


def test_every_data_package_maps_to_a_folder() -> None:
    config = _setuptools()
    for package, folder in config["package-dir"].items():
        assert package in config["packages"]
        assert (ROOT / folder / "__init__.py").is_file(), f"{folder} needs an __init__.py to install as {package}"


def test_every_data_file_inside_a_code_package_is_package_data() -> None:
    """A non-Python file under nas/ (a name table, a bundled dataset) installs only if package-data lists it."""
    package_data = _setuptools()["package-data"]
    for path in (ROOT / "nas").rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        package_dir = next(parent for parent in path.parents if (parent / "__init__.py").is_file())
        package = ".".join(package_dir.relative_to(ROOT).parts)
        relative = path.relative_to(package_dir).as_posix()
        patterns = package_data.get(package, [])
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (
            f"{path.relative_to(ROOT)} is not in pyproject.toml [tool.setuptools.package-data] {package!r}")
