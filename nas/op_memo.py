"""Replaying traced aten ops: an op met again on the same inputs is not run again.

Why: tracing a unit (:mod:`nas.cost`) runs every aten op through its meta kernel and, for a composite
op, its Python decomposition; that is most of what a trace costs, and a search meets the same op on the
same shapes in many units (every norm of a stage at one width and feature size). On the ``meta`` device
what a call does depends only on its key: the overload, its tensor inputs' layout (shape, stride, storage
offset and size, dtype, whether they require grad), its other arguments, and which of its inputs come from
the same producing op.
So :class:`OpMemo` keeps per key what one call recorded (the :class:`nas.cost.Op` fields of it and of
the ops it decomposed into, their sources renumbered against the call's inputs) and what it returned
(which inputs, or new tensors of which layout), and the recorder replays it: the same records, fresh
meta outputs of the same layout.

Not replayed: calls on other devices (the CPU fallback of data-dependent ops, whose results depend on
data) and calls with an argument it cannot key (a symbolic size, an unknown object); those always run.
``tests/test_cost.py`` checks that traces made with replays equal fresh ones on random units of every
kind.

A leaf module: it imports only :mod:`nas.lru`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nas.lru import LruCache

__all__ = ["MEMO", "Capture", "New", "OpMemo", "Replay", "Same", "key_of", "rebuild"]

_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


@dataclass(frozen=True, slots=True)
class Same:
    """A returned tensor that is input ``slot`` itself (an in-place op)."""

    slot: int


@dataclass(frozen=True, slots=True)
class New:
    """A returned tensor the call made: its layout, and whether it was a view (of a storage of ``storage``
    elements)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    storage: int
    dtype: torch.dtype
    view: bool

    def make(self) -> torch.Tensor:
        if not self.view and self.offset == 0:
            return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device="meta")
        return torch.empty((self.storage,), dtype=self.dtype, device="meta").as_strided(self.shape, self.stride,
                                                                                        self.offset)


@dataclass(frozen=True, slots=True)
class Replay:
    """What one call did, relative to its inputs.

    Attributes:
        records: the records it appended (without their unit, which the replay supplies), each with its
            sources as ints: ``k >= 0`` is the call's ``k``-th record, ``-1 - j`` the producer of input ``j``.
        outputs: the returned value: a :class:`Same` or :class:`New`, or a tuple / list of them and plain
            values.
        producers: per returned tensor, in order, the record that produced it (encoded as a source), or
            None when it has none.
    """

    records: tuple[tuple[Any, ...], ...]
    outputs: Any
    producers: tuple[int | None, ...]


def _walk(value: Any, tensors: list[torch.Tensor], parts: list[Any]) -> bool:
    """Append ``value``'s key parts and tensors; False if it cannot be keyed.

    Every call of a trace is keyed, so the common arguments take the shortest path: a list or tuple of plain
    ints (a size, a stride) is one three-item part, where any other sequence starts with a two-item one.
    """
    if isinstance(value, torch.Tensor):
        if not value.is_meta:
            return False
        tensors.append(value)
        parts.append(("T", tuple(value.shape), value.stride(), value.storage_offset(),
                      value.untyped_storage().nbytes(), value.dtype, value.requires_grad))
        return True
    if isinstance(value, (list, tuple)):
        name = type(value).__name__
        if all(type(item) is int for item in value):
            parts.append((name, "ints", tuple(value)))
            return True
        parts.append((name, len(value)))
        for item in value:
            if not _walk(item, tensors, parts):
                return False
        return True
    if isinstance(value, _SCALARS):
        parts.append((type(value).__name__, value))
        return True
    return False


def key_of(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
           producer: dict[int, int]) -> tuple[tuple[Any, ...], list[torch.Tensor], list[int | None]] | None:
    """``(key, input tensors, their producers)`` of a call, or None if it cannot be replayed.

    The key ends with which inputs share a producer (numbered in order of first appearance), since the
    sources of what the call records depend on it.
    """
    tensors: list[torch.Tensor] = []
    parts: list[Any] = [func, torch.get_default_dtype()]  # what a factory op without a dtype makes
    if not _walk(args, tensors, parts):
        return None
    for name, value in kwargs.items():
        parts.append(name)
        if not _walk(value, tensors, parts):
            return None
    producers = [producer.get(id(tensor)) for tensor in tensors]
    numbering: dict[int, int] = {}
    parts.append(tuple(None if found is None else numbering.setdefault(found, len(numbering))
                       for found in producers))
    return tuple(parts), tensors, producers


class Capture:
    """Turns what one call did into a :class:`Replay`, given the recorder's state before and after it."""

    def __init__(self, tensors: list[torch.Tensor], producers: list[int | None], start: int):
        self.tensors = tensors
        self.start = start
        self.slot_of: dict[int, int] = {}
        for slot, found in enumerate(producers):
            if found is not None:
                self.slot_of.setdefault(found, slot)
        self.by_id = {id(tensor): slot for slot, tensor in enumerate(tensors)}

    def _source(self, index: int) -> int | None:
        if index >= self.start:
            return index - self.start
        slot = self.slot_of.get(index)
        return None if slot is None else -1 - slot

    def replay(self, records: list[tuple[Any, ...]], out: Any, producer: dict[int, int]) -> Replay | None:
        """The replay of a call that appended ``records`` and returned ``out``; None if it cannot be encoded."""
        encoded = []
        for record in records:
            sources = tuple(self._source(source) for source in record[9])
            if None in sources:
                return None
            encoded.append((*record[1:9], sources, record[10]))
        produced: list[int | None] = []
        outputs = self._spec(out, producer, produced)
        if outputs is None:
            return None
        return Replay(tuple(encoded), outputs[0], tuple(produced))

    def _spec(self, value: Any, producer: dict[int, int], produced: list[int | None]) -> tuple[Any] | None:
        if isinstance(value, torch.Tensor):
            if value.device.type != "meta":  # a factory op without a device: replays make meta tensors only
                return None
            found = producer.get(id(value))
            source = None if found is None else self._source(found)
            if found is not None and source is None:
                return None
            produced.append(source)
            slot = self.by_id.get(id(value))
            if slot is not None:
                return (Same(slot),)
            return (New(tuple(value.shape), value.stride(), value.storage_offset(),
                        value.untyped_storage().nbytes() // max(value.element_size(), 1), value.dtype,
                        value._is_view()),)
        if isinstance(value, (list, tuple)):
            items = [self._spec(item, producer, produced) for item in value]
            if any(item is None for item in items):
                return None
            return (type(value)(item[0] for item in items),)  # type: ignore[index]
        if isinstance(value, _SCALARS):
            return (value,)
        return None


def rebuild(outputs: Any, tensors: list[torch.Tensor], made: list[torch.Tensor]) -> Any:
    """The returned value of a replay: inputs by slot, new meta tensors by layout (each returned tensor
    appended to ``made``, in order)."""
    if isinstance(outputs, Same):
        made.append(tensors[outputs.slot])
        return made[-1]
    if isinstance(outputs, New):
        made.append(outputs.make())
        return made[-1]
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(rebuild(item, tensors, made) for item in outputs)
    return outputs


OpMemo = LruCache[tuple[Any, ...], Replay]
MEMO: OpMemo = LruCache(maxsize=100_000)
"""The process-wide memo of replayable calls (see the module docstring)."""
