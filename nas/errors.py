"""The project's exceptions: one root, so callers and the CLI catch one type.

Every message names the problem and where it is: a file, a line, a field path
(``stages[2].blocks[0].mixer.heads``), so the user can fix it without a debugger.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["NasError", "NasWarning", "ConfigError", "UnknownKindError", "closest_first"]


class NasError(Exception):
    """Root of every error ``nas`` raises on purpose."""


class NasWarning(UserWarning):
    """Root of the warnings ``nas`` gives on purpose: something read past that the user should hear about.

    The ``nas`` command prints each as one line (``nas: warning: ...``) on stderr.
    """


class ConfigError(NasError):
    """A config (an Arch, a space, a YAML file) is malformed or invalid.

    Args:
        message: what is wrong, without the location.
        path: the field path inside the document, e.g. ``stages[1].dim``.
        source: the file it came from, if any.
        line: the 1-based line in ``source``, if known.
    """

    def __init__(self, message: str, *, path: str = "", source: str | None = None, line: int | None = None):
        self.message = message
        self.path = path
        self.source = source
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.source:
            where = f"{self.source}:{self.line}: " if self.line else f"{self.source}: "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"

    def located(self, *, source: str | None = None, line: int | None = None, prefix: str = "") -> ConfigError:
        """A copy with the file, line and a leading path segment filled in where missing."""
        path = self.path
        if prefix:
            path = f"{prefix}{'' if not path or path.startswith('[') else '.'}{path}"
        return ConfigError(
            self.message,
            path=path,
            source=self.source or source,
            line=self.line or line,
        )


class UnknownKindError(ConfigError):
    """A kind (mixer, target, strategy, ...) that no registry knows."""


def closest_first(name: str, known: Iterable[str]) -> list[str]:
    """Every known name, the closest to ``name`` first: what an "unknown ..." error lists."""
    known = list(known)
    return difflib.get_close_matches(str(name), known, n=len(known), cutoff=0.0)
