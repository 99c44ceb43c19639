"""nas: neural-architecture search and design-space exploration for vision backbones.

The public API; the ``nas`` command is a thin layer over it.

Example:
    >>> import nas
    >>> arch = nas.zoo.get("poolformer_s12")
    >>> model = nas.build(arch)
    >>> nas.cost.profile(arch).params_m  # doctest: +SKIP
"""

from __future__ import annotations

from nas import (
    blocks,  # noqa: F401  (registers every kind before an Arch is parsed)
    cost,
    export,
    latency,
    report,
    runs,
    search,
    space,
    supernet,
    zoo,
)
from nas.arch import Arch, Block, Component, InputSpec, Precision, Published, Stage
from nas.build import Model, build
from nas.cost import profile
from nas.errors import ConfigError, NasError, UnknownKindError
from nas.space import Space

__all__ = [
    "Arch",
    "Block",
    "Component",
    "ConfigError",
    "InputSpec",
    "Model",
    "NasError",
    "Precision",
    "Published",
    "Space",
    "Stage",
    "UnknownKindError",
    "build",
    "cost",
    "export",
    "latency",
    "profile",
    "report",
    "runs",
    "search",
    "space",
    "supernet",
    "zoo",
]
