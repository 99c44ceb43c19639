"""The size limits every config is checked against before anything is allocated.

A width, resolution, depth or class count of 10^9 is a typo, not a design: left
alone it reaches torch and dies in ``MemoryError`` or an overflow, even on
``meta``. The walk through an Arch (:mod:`nas.walk`), the YAML loader
(:mod:`nas.yamlio`), the space compiler and the cost model check their numbers
against these limits first, and the error names the limit and how to raise it.

Each limit is read from its environment variable (``NAS_MAX_WIDTH=32768``), so
one setting reaches every entry point and every process of a run (the CLI, the
library, torchrun and parallel search workers) without threading an argument
through every API. The defaults are far above every zoo model and every point
of the shipped spaces (``tests/test_fuzz_inputs.py`` checks this), and low
enough that the largest model they allow still fits int64 shapes on ``meta``.

Example:
    >>> from nas.limits import current
    >>> current().width
    16384
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache

from nas.errors import ConfigError

__all__ = ["Limits", "current", "variable", "ENV_PREFIX"]

ENV_PREFIX = "NAS_MAX_"


@dataclass(frozen=True)
class Limits:
    """The largest value each kind of number may take.

    Attributes:
        width: any channel width (stage and stem ``dim``, input channels) and any other number a component
            holds (kernel, heads, window, ratio): 2^14 keeps a ``width^2 x kernel^2`` weight within int64.
        resolution: the input image's side.
        blocks: the blocks of one stage (and so any ``repeat``).
        classes: the head's ``num_classes``.
        params: the parameters of a whole model, counted on ``meta``.
        macs: the multiply-accumulates of one forward pass at batch 1, counted on ``meta``.
        yaml_depth: nesting of brackets and indentation in a YAML or JSON file.
        yaml_nodes: values in a YAML file once its aliases are expanded (billion laughs).
    """

    width: int = 16_384
    resolution: int = 4_096
    blocks: int = 1_024
    classes: int = 1_000_000
    params: int = 1_000_000_000
    macs: int = 1_000_000_000_000
    yaml_depth: int = 100
    yaml_nodes: int = 1_000_000

    def exceeded(self, name: str, value: float) -> str | None:
        """The message if ``value`` exceeds the limit ``name``, else None."""
        limit = getattr(self, name)
        return f"{value} exceeds the limit {variable(name)}={limit}" if value > limit else None

    def check(self, name: str, value: float, path: str) -> None:
        """Raise a :class:`ConfigError` at ``path`` if ``value`` exceeds the limit ``name``."""
        problem = self.exceeded(name, value)
        if problem:
            raise ConfigError(problem, path=path)


def variable(name: str) -> str:
    """The environment variable that sets limit ``name``."""
    return f"{ENV_PREFIX}{name.upper()}"


_NAMES = tuple(item.name for item in fields(Limits))
_VARIABLES = tuple(variable(name) for name in _NAMES)


def _environment_reader() -> Callable[[], tuple[str | bytes | None, ...]]:
    """A function giving the raw values of the limit variables, in ``_NAMES`` order.

    Why not ``os.environ.get``: the walk asks for the limits at every step of every Arch it validates, and
    each ``os.environ.get`` encodes its key and decodes its value in Python, which made the nine lookups a
    visible share of decoding a search point. On CPython, ``os.environ`` keeps its items in ``_data`` under
    encoded keys, and every change made through it (``monkeypatch.setenv`` too) updates ``_data`` at once,
    so reading there sees exactly what ``os.environ.get`` would. Elsewhere, the plain lookups.
    """
    environ = os.environ
    data = getattr(environ, "_data", None)
    encode = getattr(environ, "encodekey", None)
    if not isinstance(data, dict) or encode is None:
        return lambda: tuple(map(environ.get, _VARIABLES))
    keys = tuple(encode(name) for name in _VARIABLES)
    return lambda: tuple(map(data.get, keys))


_read_environment = _environment_reader()


def current() -> Limits:
    """The limits in force: the defaults, overridden by ``NAS_MAX_<NAME>`` environment variables.

    Raises:
        ConfigError: a variable is not a positive integer.
    """
    return _parse(_read_environment())


@lru_cache(maxsize=8)
def _parse(values: tuple[str | bytes | None, ...]) -> Limits:
    settings = {}
    for name, raw in zip(_NAMES, values, strict=True):
        if raw is None:
            continue
        text = os.environ.decodevalue(raw) if isinstance(raw, bytes) else raw  # type: ignore[attr-defined]
        try:
            number = int(text.replace("_", ""))
        except ValueError:
            number = 0
        if number < 1:
            raise ConfigError(f"must be a positive integer, got {text!r}", source=f"${variable(name)}")
        settings[name] = number
    return Limits(**settings)
