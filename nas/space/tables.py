"""Compact codes for parts of a point, and tables of verdicts keyed by them, filled on first use.

A *part* is a few nodes of the space's tree judged together (a mixer; a norm
with its block's layer scale and precision; a stage's width and downsample).
Its :class:`Code` is the rank of the part's configuration in a mixed-radix
numbering that follows the tree: a choice adds its option's offset to the rank
of the option's sub-tree, a record multiplies the ranges of its fields, a tie
reads the tied decision. The rank is a sum of per-slot contributions (a
decision that does not exist adds 0), so a batch of codes is one gather and one
sum, and the range is the number of the part's configurations: small for a
component, so a code indexes a :class:`Verdicts` table directly. Larger parts
get compact ids from a codebook; parts beyond int64 are interned by their raw
slot values.

Parts with the same structure get the same codes (a space's YAML anchors repeat
one FFN choice in every stage), so :func:`signature` lets them share tables.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from nas.space.tree import Const, Node, Pick, Record, Run, Same, Single

__all__ = ["DIRECT", "Code", "Codebook", "Verdicts", "signature"]

DIRECT = 1 << 10  # a part with at most this many configurations indexes tables by its code
_WIDE = 1 << 62  # a part with more is interned by raw slot values
UNKNOWN = np.iinfo(np.int64).min  # a table cell not computed yet


def _digits(node: Node, multiplier: int, out: dict[int, list[int]], card: np.ndarray) -> int:
    """Add ``node``'s per-slot rank contributions, scaled by ``multiplier``, to ``out``; return its range."""
    if isinstance(node, Pick):
        contributions = out.setdefault(node.slot, [0] * (int(card[node.slot]) + 1))  # index 0: unset
        offset = 0
        for index, option in enumerate(node.options):
            contributions[index + 1] += multiplier * offset
            offset += _digits(option, multiplier, out, card)
        return offset
    if isinstance(node, Same):
        return _digits(node.target, multiplier, out, card)
    return _product(_children(node), multiplier, out, card)


def _product(nodes: Sequence[Node], multiplier: int, out: dict[int, list[int]], card: np.ndarray) -> int:
    size = 1
    for node in nodes:
        size *= _digits(node, multiplier * size, out, card)
    return size


def _children(node: Node) -> list[Node]:
    """The sub-nodes whose values make up ``node``'s, for the mixed-radix numbering."""
    if isinstance(node, Record):
        return list(node.fields.values())
    if isinstance(node, Run):
        return [node.repeat, *(block for unit in node.units for block in unit)]
    if isinstance(node, Single):
        return [node.block]
    if isinstance(node, Const):
        return []
    return list(node.parts)  # type: ignore[attr-defined]


def signature(node: Node) -> Hashable:
    """A structural fingerprint: nodes with equal signatures take equal values at equal codes."""
    if isinstance(node, Const):
        return ("const", type(node.constant), node.constant)
    if isinstance(node, Pick):
        return ("pick", tuple(signature(option) for option in node.options))
    if isinstance(node, Same):
        return signature(node.target)  # a tie is numbered and valued as the choice it ties to
    if isinstance(node, Record):
        return ("record", node.cls, tuple((name, signature(field)) for name, field in node.fields.items()))
    if isinstance(node, Run):
        return ("run", node.independent, tuple(signature(child) for child in _children(node)))
    return (type(node).__name__, tuple(signature(child) for child in _children(node)))


class Code:
    """Per row of a batch, the codes of one or more parts, computed together (one gather, one sum per part).

    Args:
        parts: each a list of nodes whose configurations are numbered together.
        card: options per slot (of the whole vector).

    Attributes:
        sizes: per part, the range of its codes (its number of configurations), or None where the codes
            are interned by raw slot values (more configurations than int64 holds).
    """

    def __init__(self, parts: Sequence[Sequence[Node]], card: np.ndarray):
        self.sizes: list[int | None] = []
        self.interned: list[tuple[int, np.ndarray, dict[bytes, int]]] = []  # part, its slots, raw values -> code
        columns: list[int] = []
        tables: list[list[int]] = []
        starts: list[int] = []
        for index, nodes in enumerate(parts):
            digits: dict[int, list[int]] = {}
            size = _product(nodes, 1, digits, card)
            self.sizes.append(size if size <= _WIDE else None)
            if size > _WIDE:
                self.interned.append((index, np.array(sorted(digits), dtype=np.int64), {}))
                digits = {}
            starts.append(len(columns))
            for slot in sorted(digits) or [0]:  # a part without decisions reads slot 0 and adds 0
                columns.append(slot)
                # options first, then 0 for an unset decision: index -1 (unset) reads it, here or, from the
                # next table's base, at the end of this one
                table = digits.get(slot, [0] * (int(card[slot]) + 1)) if len(card) else [0]
                tables.append(table[1:] + table[:1])
        self.empty = not len(card)
        self.columns = np.array(columns, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.flat = np.array([value for table in tables for value in table], dtype=np.int64)
        self.bases = np.cumsum([0] + [len(table) for table in tables[:-1]]).astype(np.int64)
        self.single = len(columns) == 1

    def codes(self, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``len(rows) x len(parts)`` int64 codes; equal codes mean equal configurations of the part."""
        if self.empty:
            codes = np.zeros((len(rows), len(self.sizes)), dtype=np.int64)
        elif self.single:
            codes = self.flat[vectors[rows, self.columns[0]]][:, None]
        else:
            values = vectors[rows[:, None], self.columns[None, :]]
            codes = np.add.reduceat(self.flat[values + self.bases], self.starts, axis=1)
        for index, slots, interned in self.interned:
            codes[:, index] = _intern(vectors[rows[:, None], slots[None, :]], interned)
        return codes  # type: ignore[no-any-return]


def _intern(values: np.ndarray, interned: dict[bytes, int]) -> np.ndarray:
    """A code per row of raw slot values, numbered in order of first sight."""
    if not values.shape[1]:  # a part without decisions has one configuration
        return np.full(len(values), interned.setdefault(b"", 0), dtype=np.int64)
    raw = np.ascontiguousarray(values).view(np.dtype((np.void, values.itemsize * values.shape[1])))[:, 0]
    unique, inverse = np.unique(raw, return_inverse=True)
    codes = np.fromiter((interned.setdefault(item.tobytes(), len(interned)) for item in unique), np.int64,
                        len(unique))
    return codes[inverse.reshape(-1)]  # type: ignore[no-any-return]


class Codebook:
    """Compact ids for the codes of a large part, assigned in order of first sight (sorted arrays, numpy lookups)."""

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def size(self) -> int:
        return len(self.codes)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def get(self, codes: np.ndarray) -> np.ndarray:
        known = self.codes
        if len(known):
            position = np.minimum(np.searchsorted(known, codes), len(known) - 1)
            out = self.ids[position]
            missing = np.flatnonzero(known[position] != codes)
            if not len(missing):
                return out  # type: ignore[no-any-return]
        else:
            out = np.zeros(len(codes), dtype=np.int64)
            missing = np.arange(len(codes))
        new, inverse = np.unique(codes[missing], return_inverse=True)
        new_ids = np.arange(len(known), len(known) + len(new), dtype=np.int64)
        out[missing] = new_ids[inverse.reshape(-1)]
        merged = np.concatenate([known, new])
        order = np.argsort(merged, kind="stable")
        self.codes, self.ids = merged[order], np.concatenate([self.ids, new_ids])[order]
        return out  # type: ignore[no-any-return]


class Verdicts:
    """A dense ``id x site`` table of int64 results, grown as ids and sites appear, filled on first use."""

    def __init__(self) -> None:
        self.cells = np.full((0, 0), UNKNOWN, dtype=np.int64)

    @property
    def size(self) -> int:
        return int(self.cells.size)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def get(self, ids: np.ndarray, sites: np.ndarray, shape: tuple[int, int], fill: Callable[[int], int]) -> np.ndarray:
        """The cells ``(ids[i], sites[i])``; ``fill(i)`` computes a missing one from position ``i`` of the batch.

        Args:
            shape: ids and sites there may be (the table grows to hold them).
        """
        if not len(ids):
            return np.zeros(0, dtype=np.int64)
        rows, columns = self.cells.shape
        if shape[0] > rows or shape[1] > columns:
            grown = np.full((max(shape[0], 2 * rows), max(shape[1], 2 * columns, 8)), UNKNOWN, dtype=np.int64)
            grown[:rows, :columns] = self.cells
            self.cells = grown
        cells = self.cells
        out = cells[ids, sites]
        if out.min() != UNKNOWN:
            return out  # type: ignore[no-any-return]
        missing = np.flatnonzero(out == UNKNOWN)
        _, first = np.unique(ids[missing] * cells.shape[1] + sites[missing], return_index=True)
        for index in missing[first]:
            cells[ids[index], sites[index]] = fill(int(index))
        out[missing] = cells[ids[missing], sites[missing]]
        return out  # type: ignore[no-any-return]
