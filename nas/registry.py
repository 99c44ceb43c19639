"""A small name -> class registry: duplicates raise, unknown names list the known ones (closest first)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from nas.errors import NasError, UnknownKindError, closest_first

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to classes for one kind of thing (``strategy``, ``objective``, ``accuracy source``).

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

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator storing the class under ``name``; a second class of the same name raises."""

        def decorate(entry: T) -> T:
            if name in self._entries:
                raise NasError(f"{self.what} {name!r} is already registered (by {self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        """The entry registered under ``name``.

        Raises:
            UnknownKindError: no such name; the message lists the known ones, closest first.
        """
        if name not in self._entries:
            known = list(self._entries)
            close = closest_first(str(name), known)
            raise UnknownKindError(f"unknown {self.what} {name!r}; known: {', '.join(close)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
