"""nas.lru.LruCache: the one bounded cache (least recently used dropped first)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest

import nas
from nas.errors import NasError
from nas.lru import CacheInfo, LruCache


def test_drops_the_least_recently_used_and_counts() -> None:
    cache = LruCache[str, int](maxsize=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.info() == CacheInfo(hits=3, misses=1, size=2, maxsize=2)
    assert "a" in cache and "b" not in cache and cache.info().hits == 3  # membership counts nothing
    cache.clear()
    assert len(cache) == 0 and cache.info() == CacheInfo(0, 0, 0, 2)


def test_get_or_make_makes_once_and_caches_none() -> None:
    cache = LruCache[str, object](maxsize=4)
    made = []
    for _ in range(3):
        assert cache.get_or_make("k", lambda: made.append(1)) is None
    assert made == [1] and cache.info().hits == 2


def test_a_failing_make_stores_nothing() -> None:
    cache = LruCache[str, int](maxsize=4)
    with pytest.raises(ValueError):
        cache.get_or_make("k", lambda: int("x"))
    assert len(cache) == 0


def test_copies_keep_the_entries_and_get_their_own_lock() -> None:
    cache = LruCache[str, int](maxsize=3)
    cache.put("a", 1)
    for clone in (copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))):
        assert clone.get("a") == 1 and clone._lock is not cache._lock
        clone.put("b", 2)
        assert cache.get("b") is None


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, True])
def test_refuses_a_bad_size(maxsize) -> None:
    with pytest.raises(NasError, match="maxsize must be an integer >= 1"):
        LruCache(maxsize=maxsize)


def test_no_hand_rolled_lru_outside_nas_lru() -> None:
    """Bounded caches use LruCache; ``move_to_end`` (refreshing an entry's recency) is the hand-rolled LRU's mark."""
    package = Path(nas.__file__).parent
    rolled = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
              if path.name != "lru.py" and "move_to_end" in path.read_text(encoding="utf-8")]
    assert rolled == []
