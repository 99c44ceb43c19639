"""One bounded cache: a least-recently-used mapping with hit and miss counters.

Caches of derived values (traced unit costs, proxied archs, supernet checks,
unit layouts) must not grow with the length of a search, and a cache that is
cleared when full throws its hot entries away with the cold ones. This one
drops the least recently used entry instead.

A leaf module: it imports only :mod:`nas.errors`, so every package may use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, NamedTuple, TypeVar

from nas.errors import NasError

__all__ = ["CacheInfo", "LruCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class CacheInfo(NamedTuple):
    """A cache's counters: lookups answered, lookups missed, entries held, capacity."""

    hits: int
    misses: int
    size: int
    maxsize: int


class LruCache(Generic[K, V]):
    """A mapping of at most ``maxsize`` entries; storing one more drops the least recently used.

    Safe to share between threads: each lookup and insert holds a lock. :meth:`get_or_make` does not hold it
    while it makes a value, so two threads missing the same key at once both make it (the values are equal:
    the cache is for deterministic derived values).

    Args:
        maxsize: the most entries held (>= 1).

    Example:
        >>> cache = LruCache[str, int](maxsize=2)
        >>> cache.get_or_make("a", lambda: 1), cache.get_or_make("b", lambda: 2), cache.get("a")
        (1, 2, 1)
        >>> cache.put("c", 3); cache.get("b") is None, cache.info()
        (True, CacheInfo(hits=1, misses=3, size=2, maxsize=2))
    """

    def __init__(self, *, maxsize: int):
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise NasError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def _lookup(self, key: K) -> object:
        with self._lock:
            found = self._entries.get(key, _MISSING)
            if found is _MISSING:
                self._misses += 1
            else:
                self._hits += 1
                self._entries.move_to_end(key)
            return found

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` (now the most recently used), or None; counts a hit or a miss."""
        found = self._lookup(key)
        return None if found is _MISSING else found  # type: ignore[return-value]

    def put(self, key: K, value: V) -> None:
        """Store ``value`` for ``key`` as the most recently used, dropping the least recently used beyond
        ``maxsize``."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value for ``key``; on a miss, ``make()`` stored and returned (None is a value like any other)."""
        found = self._lookup(key)
        if found is not _MISSING:
            return found  # type: ignore[return-value]
        value = make()
        self.put(key, value)
        return value

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the lock out (a module holding a cache stays deep-copyable)."""
        with self._lock:
            return {key: value for key, value in self.__dict__.items() if key != "_lock"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held; unlike :meth:`get`, counts nothing and leaves the order alone."""
        with self._lock:
            return key in self._entries

    def clear(self) -> None:
        """Drop every entry and reset the counters (for cold-start measurements)."""
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0

    def info(self) -> CacheInfo:
        """Hits, misses, size and capacity."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._entries), self.maxsize)
