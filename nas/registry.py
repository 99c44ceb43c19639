"""A small name -> class registry: duplicates raise, unknown names list the known ones (closest first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from nas.errors import NasError, UnknownKindError, closest_first

__all__ = ["Registry", "DuplicateNameError"]

T = TypeVar("T")


class DuplicateNameError(NasError, ValueError):
    """A second entry under a registered name: a programming error, so also a ``ValueError``."""


class Registry(Generic[T]):
    """Names to classes for one kind of thing (``strategy``, ``objective``, ``mixer kind``).

    Example:
        >>> things: Registry[type] = Registry("thing")
        >>> @things.register("a")
        ... class A: ...
        >>> things.get("a") is A
        True
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        """Store ``entry`` under ``name``.

        Raises:
            DuplicateNameError: ``name`` is taken.
        """
        if name in self._entries:
            taken = self._entries[name]
            raise DuplicateNameError(
                f"{self.what} {name!r} is already registered to {getattr(taken, '__name__', repr(taken))}")
        self._entries[name] = entry

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator storing the class under ``name``; a second class of the same name raises."""

        def decorate(entry: T) -> T:
            self.add(name, entry)
            return entry

        return decorate

    def get(self, name: str, *, path: str = "") -> T:
        """The entry registered under ``name``.

        Args:
            name: the name looked up.
            path: where the name was read (a config field path), placed on the error.

        Raises:
            UnknownKindError: no such name; the message lists the known ones, closest first.
        """
        if name not in self._entries:
            close = closest_first(str(name), self._entries)
            raise UnknownKindError(f"unknown {self.what} {name!r}; known: {', '.join(close)}", path=path)
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
