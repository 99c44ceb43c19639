"""The papers' models as named Archs, read from ``spaces/zoo/*.yaml`` (one file per model).

Each file records the model's published parameter count and MACs with their
source; ``tests/test_zoo.py`` checks the built model against them.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from nas.arch import Arch
from nas.errors import UnknownKindError, closest_first

__all__ = ["zoo_dir", "list_zoo", "get", "path_of"]


def zoo_dir() -> Path:
    """Folder holding the zoo's YAML files (inside the installed package)."""
    return Path(str(resources.files("nas.spaces.zoo")))


def list_zoo() -> list[str]:
    """Names of every zoo model, sorted."""
    return sorted(path.stem for path in zoo_dir().glob("*.yaml"))


def path_of(name: str) -> Path:
    """The YAML file of zoo model ``name``."""
    path = zoo_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_zoo()
        close = closest_first(name, known)
        raise UnknownKindError(f"unknown zoo model {name!r}; known: {', '.join(close)}")
    return path


@cache
def get(name: str) -> Arch:
    """The zoo model ``name`` as an Arch."""
    return Arch.load(path_of(name))
