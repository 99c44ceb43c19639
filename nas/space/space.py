"""The :class:`Space`: a compiled space file with sampling, mutation, crossover, encoding and description.

The parts it is made of: :mod:`nas.space.compiler` (file -> tree),
:mod:`nas.space.vectors` (the point vector and numpy moves on it),
:mod:`nas.space.validity` (which vectors decode to a valid Arch, in batches)
and :mod:`nas.space.match` (Arch -> vector, or why not).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import Arch
from nas.errors import ConfigError
from nas.space.compiler import CompiledSpace, compile_space, yaml_key_path
from nas.space.match import Matcher, first_difference, match
from nas.space.tree import VECTOR_DTYPE, Decision, Where
from nas.space.validity import Validity
from nas.space.vectors import Layout
from nas.yamlio import load_yaml

__all__ = ["Space"]

_FEASIBILITY_TRIES = 4096
_DIAGNOSE_SAMPLES = 200
_WHOLE_REDRAW_EVERY = 16  # sampling: every 16th retry of a point draws all of it again, not only the failing part
# Retries of few points try several candidates per point in one batch: a batch check costs much more per call
# than per row (it walks the space's structure), so the last few points would otherwise take many calls.
_RETRY_ROWS = 256
_MAX_COPIES = 32


class Space:
    """A search space: decisions over Arch points, with vector operations for search.

    Points are ``int16`` vectors of length :attr:`num_slots`: slot ``i`` holds the
    index of the option taken for decision ``decisions[i]``, or -1 where that
    decision does not exist. Vectors from this class are canonical (every
    existing decision set, every other slot -1), so equal vectors are equal
    points. Two vectors may still decode to the same Arch when the file offers
    the same design twice (say a uniform stage both as a run and as a pattern).

    Validity is Arch's: a vector is valid when its Arch constructs. For speed,
    batches are checked by :class:`~nas.space.validity.Validity`, which calls the
    components' own ``check`` and ``output_size`` once per part and site and
    looks the rest up with numpy; ``tests/test_space.py`` checks that it agrees
    with Arch construction.

    The lookup tables grow as points are seen (bounded, then cleared), so a
    Space is not safe to share between threads; processes each load their own.
    Create with :meth:`Space.load` or :func:`~nas.space.load_space`.

    Example:
        >>> import numpy as np
        >>> import nas
        >>> space = nas.space.load_space("efficientformer")
        >>> rng = np.random.default_rng(0)
        >>> parents = space.sample_vectors(rng, 8)
        >>> children = space.mutate_vectors(parents, rng)
        >>> space.decode(children[0]).num_blocks > 0
        True
    """

    def __init__(self, compiled: CompiledSpace):
        self.name = compiled.name
        self.description = compiled.description
        self.source = compiled.source
        self.decisions: tuple[Decision, ...] = compiled.decisions
        self._tree = compiled
        self._layout = Layout(compiled.decisions, name=compiled.name)
        self._validity = Validity(compiled, self._layout.card)
        self.num_features = self._layout.num_features
        # the slots each fail code's part depends on (its own and those it ties to): what a retry redraws
        parts = [np.union1d(compiled.input.slots(), compiled.stem.slots())]
        parts += [node.slots() for node in compiled.stages] + [compiled.head.slots()]
        self._redraw = np.zeros((len(parts), self.num_slots), dtype=bool)
        for index, slots in enumerate(parts):
            self._redraw[index, slots] = True

    # -- loading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Space:
        """Read a space file; errors name the file, line and key path.

        Raises:
            ConfigError: malformed YAML, a duplicate key, an unknown kind or key, a value of the wrong
                type, or a space in which bounded sampling finds no valid point.
        """
        path = Path(path)
        try:
            data = load_yaml(path)
        except ConfigError as exc:
            if exc.line and not exc.path and path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")  # the error may be undecodable bytes
                raise ConfigError(exc.message, path=yaml_key_path(text, exc.line),
                                  source=exc.source, line=exc.line) from None
            raise
        return cls.from_data(data, source=str(path), default_name=path.stem)

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<space>", default_name: str = "space") -> Space:
        """A space from (located) YAML data; see :meth:`load`."""
        space = cls(compile_space(data, source=source, default_name=default_name))
        space._check_feasible()
        return space

    def _check_feasible(self) -> None:
        rng = np.random.default_rng(0)
        batch = 64
        for _ in range(_FEASIBILITY_TRIES // batch):
            if self._valid_rows(self._layout.draw(rng, batch)).any():
                return
        raise self._infeasible(_FEASIBILITY_TRIES)

    def _infeasible(self, tries: int) -> ConfigError:
        """The error for a space where sampling finds no valid point, placed at the most frequent culprit."""
        rng = np.random.default_rng(1)
        culprits: Counter[tuple[str, int | None]] = Counter()
        examples: dict[tuple[str, int | None], ConfigError] = {}
        for vector in self._layout.draw(rng, _DIAGNOSE_SAMPLES):
            try:
                self._arch(vector)
            except ConfigError as exc:
                where = self._locate(vector, exc.path)
                culprits[(where.path, where.line)] += 1
                examples.setdefault((where.path, where.line), exc)
        if not culprits:
            return ConfigError(f"constraint infeasible in this space: no valid point in {tries} tries",
                               source=self.source)
        (path, line), count = culprits.most_common(1)[0]
        example = examples[(path, line)]
        share = 100 * count / _DIAGNOSE_SAMPLES
        return ConfigError(f"constraint infeasible in this space: no valid point in {tries} tries; {share:.0f}% of "
                           f"samples fail here, e.g. {example.path}: {example.message}",
                           path=path, source=self.source, line=line)

    # -- the point vector ---------------------------------------------------------------

    @property
    def num_slots(self) -> int:
        """Length of a point vector (one slot per decision)."""
        return len(self.decisions)

    def size(self) -> int:
        """Exact number of distinct decision vectors (points before the Arch's own constraints)."""
        tree = self._tree
        total = tree.input.count() * tree.stem.count() * tree.head.count()
        return total * math.prod(stage.count() for stage in tree.stages)

    def log10_size(self) -> float:
        """``log10(size())``, for spaces too large to print."""
        return math.log10(self.size())

    def is_valid(self, vector: np.ndarray) -> bool:
        """Whether the canonical ``vector`` decodes to a valid Arch (same answer as :meth:`decode` succeeding)."""
        return bool(self._validity.fail_codes(self._layout.check(vector))[0] < 0)

    def canonical_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """A canonical copy of ``vectors`` whose options were set directly: a decision that no longer exists is
        unset (-1), one that comes into existence takes its first option.

        Why: a caller that sets options itself (the constraint probe's smallest points: a lower depth drops the
        decisions of the blocks beyond it) would otherwise hold vectors that no other method accepts.
        """
        vectors = np.array(vectors, dtype=VECTOR_DTYPE, ndmin=2)  # a copy: repair works in place
        return self._layout.repair(vectors, np.zeros_like(vectors))

    def _valid_rows(self, vectors: np.ndarray) -> np.ndarray:
        return self._validity.fail_codes(vectors) < 0

    # -- sampling, mutation, crossover ---------------------------------------------------

    def sample_vectors(self, rng: np.random.Generator, count: int, *, max_tries: int = 1000,
                       valid_only: bool = True) -> np.ndarray:
        """``count x num_slots`` valid points, each decision drawn uniformly over its options.

        A point that Arch rejects is drawn again from the part it rejects first
        (the stem, one stage, or the head, with the decisions it ties to), so a
        stage that is valid after the stages before it is kept; every 16th retry
        draws the whole point again.
        When few points are left, several redraws of each are tried at once and
        the first valid one is kept (without one, the first redraw goes on).
        This is uniform per decision within each part, not exactly uniform over
        the valid points. At most ``max_tries`` draws per point.

        Args:
            rng: the only source of randomness.
            count: number of points.
            max_tries: draws per point before giving up.
            valid_only: False skips the Arch's constraints (the points may be invalid), for diagnostics.

        Raises:
            ConfigError: "constraint infeasible in this space" when some point found no valid draw.

        Example:
            >>> import numpy as np
            >>> import nas
            >>> space = nas.space.load_space("convnext")
            >>> space.sample_vectors(np.random.default_rng(0), 4).shape == (4, space.num_slots)
            True
        """
        _check_rng(rng)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        layout = self._layout
        vectors = layout.draw(rng, count)
        if not valid_only:
            return vectors
        codes = self._validity.fail_codes(vectors)
        tries = 1
        while tries < max_tries:
            redo = np.flatnonzero(codes >= 0)
            if not len(redo):
                return vectors
            copies = _copies(len(redo), max_tries - tries)
            index = np.repeat(redo, copies)
            attempt = tries + np.tile(np.arange(copies), len(redo))
            inside = self._redraw[codes[index]] | (attempt % _WHOLE_REDRAW_EVERY == 0)[:, None]
            fresh = layout.random_values(rng, len(index))
            fresh = np.where(inside, fresh, vectors[index])
            candidates = layout.repair(fresh, fresh)
            found = self._validity.fail_codes(candidates).reshape(len(redo), copies)
            valid = found < 0
            pick = np.where(valid.any(axis=1), valid.argmax(axis=1), 0)  # the first valid redraw, else the first
            rows = np.arange(len(redo))
            vectors[redo] = candidates.reshape(len(redo), copies, -1)[rows, pick]
            codes[redo] = found[rows, pick]
            tries += copies
        if (codes >= 0).any():
            raise self._infeasible(max_tries)
        return vectors

    def sample(self, rng: np.random.Generator) -> Arch:
        """One valid Arch drawn uniformly per decision (see :meth:`sample_vectors`)."""
        return self.decode(self.sample_vectors(rng, 1)[0])

    def mutate_vectors(self, vectors: np.ndarray, rng: np.random.Generator, *, max_tries: int = 100) -> np.ndarray:
        """One small move per point: a random existing decision steps to a neighbouring option.

        Ordered decisions (ordinal, range: widths, depths) move one step up or
        down; categorical ones take any other option. Decisions that come into
        existence are drawn at random, those that vanish become -1. A move giving
        an invalid point is redrawn, at most ``max_tries`` times.

        Args:
            vectors: ``n x num_slots`` (or one vector) canonical points.

        Returns:
            ``n x num_slots`` valid points, each differing from its parent.
        """
        _check_rng(rng)
        parents = self._layout.check(vectors)
        movable = self._layout.movable(parents)
        if not movable.any(axis=1).all():
            raise ConfigError(f"space {self.name!r}: a point without any decision to change cannot be mutated")
        out = parents.copy()
        todo = np.arange(len(parents))
        tries = 0
        while len(todo) and tries < max_tries:
            copies = _copies(len(todo), max_tries - tries)
            index = np.repeat(todo, copies)
            todo = self._keep_first_valid(out, todo, self._layout.move(parents[index], movable[index], rng), copies)
            tries += copies
        if len(todo):
            raise ConfigError(f"constraint infeasible in space {self.name!r}: no valid move from point "
                              f"{int(todo[0])} in {max_tries} tries", source=self.source)
        return out

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A valid neighbour of ``arch`` one small move away (see :meth:`mutate_vectors`)."""
        return self.decode(self.mutate_vectors(self.encode(arch), rng)[0])

    def crossover_vectors(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator, *,
                          max_tries: int = 100) -> np.ndarray:
        """Uniform crossover: each decision from either parent; decisions only one parent has come from it.

        Args:
            first, second: ``n x num_slots`` (or single) canonical points.

        Returns:
            ``n x num_slots`` valid children; a pair without a valid child in
            ``max_tries`` draws raises ConfigError.
        """
        _check_rng(rng)
        first, second = self._layout.check(first), self._layout.check(second)
        if first.shape != second.shape:
            raise ConfigError(f"parents must have the same shape, got {first.shape} and {second.shape}")
        out = first.copy()
        todo = self._fill_valid(out, lambda index: self._layout.cross(first[index], second[index], rng), max_tries)
        if len(todo):
            raise ConfigError(f"constraint infeasible in space {self.name!r}: no valid child of pair "
                              f"{int(todo[0])} in {max_tries} tries", source=self.source)
        return out

    def merge_vectors(self, base: np.ndarray, donors: np.ndarray, take: np.ndarray, rng: np.random.Generator, *,
                      max_tries: int = 100) -> np.ndarray:
        """Points with ``donors``' options at the decisions in ``take`` and ``base``'s everywhere else.

        Why: to draw some decision groups at random while holding the rest at one point (the supernet
        sharing bench draws only the trunk kinds, only the sizes, ...). Decisions that come into existence
        take the donor's option where it has one, else a random one.

        Args:
            base: one canonical point.
            donors: ``n x num_slots`` (or single) canonical points.
            take: bool per decision.

        Returns:
            ``n x num_slots`` valid points; a donor without a valid merge in ``max_tries`` draws raises
            ConfigError.
        """
        _check_rng(rng)
        (base,) = self._layout.check(base)
        donors = self._layout.check(donors)
        take = np.asarray(take, dtype=bool)
        if take.shape != base.shape:
            raise ConfigError(f"take must have one flag per decision ({base.shape[0]}), got shape {take.shape}")

        def merged(index: np.ndarray) -> np.ndarray:
            fill = np.where(donors[index] >= 0, donors[index], self._layout.random_values(rng, len(index)))
            return self._layout.repair(np.where(take, donors[index], base), fill)

        out = donors.copy()
        todo = self._fill_valid(out, merged, max_tries)
        if len(todo):
            raise ConfigError(f"constraint infeasible in space {self.name!r}: no valid merge of donor "
                              f"{int(todo[0])} in {max_tries} tries", source=self.source)
        return out

    def _fill_valid(self, out: np.ndarray, candidates_of: Callable[[np.ndarray], np.ndarray],
                    max_tries: int) -> np.ndarray:
        """Fill each row of ``out`` with the first valid candidate ``candidates_of(rows)`` gives, several
        candidates per row per round, at most ``max_tries`` per row; returns the rows left without one."""
        todo = np.arange(len(out))
        tries = 0
        while len(todo) and tries < max_tries:
            copies = _copies(len(todo), max_tries - tries)
            todo = self._keep_first_valid(out, todo, candidates_of(np.repeat(todo, copies)), copies)
            tries += copies
        return todo

    def _keep_first_valid(self, out: np.ndarray, todo: np.ndarray, candidates: np.ndarray,
                          copies: int) -> np.ndarray:
        """Write each row's first valid candidate (``copies`` per row of ``todo``, in order) into ``out``;
        returns the rows without one."""
        valid = (self._validity.fail_codes(candidates) < 0).reshape(len(todo), copies)
        found = np.flatnonzero(valid.any(axis=1))
        out[todo[found]] = candidates.reshape(len(todo), copies, -1)[found, valid[found].argmax(axis=1)]
        return np.delete(todo, found)

    def crossover(self, first: Arch, second: Arch, rng: np.random.Generator) -> Arch:
        """A valid child mixing the decisions of two points (see :meth:`crossover_vectors`)."""
        return self.decode(self.crossover_vectors(self.encode(first), self.encode(second), rng)[0])

    def neighbour_vectors(self, vector: np.ndarray) -> np.ndarray:
        """Every valid point one move away: ordered decisions +-1, categorical ones any other option.

        Decisions that come into existence take their first option.
        """
        (base,) = self._layout.check(vector)
        out = self._layout.neighbours(base)
        return out[self._valid_rows(out)] if len(out) else out

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every valid Arch one move away from ``arch`` (see :meth:`neighbour_vectors`)."""
        return [self.decode(vector) for vector in self.neighbour_vectors(self.encode(arch))]

    def part_slots(self) -> list[np.ndarray]:
        """The slots each part's value depends on (ties included), in order: input and stem together, each
        stage, the head. Anything computed from one part alone may be cached by these slots' contents
        (:class:`nas.search.vector_scorer.VectorScorer` does)."""
        return [np.flatnonzero(row) for row in self._redraw]

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """Numeric features for predictors: ``n x num_features`` float32.

        Categorical decisions become one-hot columns, ordered ones one column
        ``index / (options - 1)``; a decision that does not exist gives zeros.
        """
        return self._layout.features(vectors)

    # -- encode, decode, contains ----------------------------------------------------------

    def decode(self, vector: np.ndarray) -> Arch:
        """The Arch of a point vector.

        Raises:
            ConfigError: the vector is not a canonical point of this space, or its Arch is invalid
                (the Arch's field path, with the line of the responsible choice in the space file).
        """
        (v,) = self._layout.check(vector)
        try:
            return self._arch(v)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=exc.path, source=self.source,
                              line=self._locate(v, exc.path).line) from None

    def _arch(self, v: np.ndarray) -> Arch:
        tree = self._tree
        return Arch(input=tree.input.value(v), stem=tree.stem.value(v),
                    stages=tuple(node.value(v) for node in tree.stages), head=tree.head.value(v))

    def _locate(self, v: np.ndarray, path: str) -> Where:
        """The space location of the longest prefix of an Arch path that ``v``'s parts trace to."""
        tree = self._tree
        trace: dict[str, Where] = {}
        tree.input.trace(v, "input", trace)
        tree.stem.trace(v, "stem", trace)
        for index, node in enumerate(tree.stages):
            node.trace(v, f"stages[{index}]", trace)
        tree.head.trace(v, "head", trace)
        while path:
            if path in trace:
                return trace[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return Where("", None)

    def encode(self, arch: Arch) -> np.ndarray:
        """The point vector of ``arch`` (``num_slots`` int16).

        Raises:
            ConfigError: ``arch`` is not a point of this space (the reason names the first field that differs).
        """
        found, reason = self._match(arch)
        if found is None:
            raise ConfigError(f"not a point of space {self.name!r}: {reason}")
        return found

    def contains(self, arch: Arch) -> tuple[bool, str]:
        """Whether ``arch`` is a point of the space, and if not why.

        Returns:
            ``(True, '')``, or ``(False, reason)`` such as
            ``"stages[2].blocks[0].mixer.heads: 5 is not one of [4, 8]"``.
        """
        found, reason = self._match(arch)
        return found is not None, reason

    def _match(self, arch: Arch) -> tuple[np.ndarray | None, str]:
        tree = self._tree
        m = Matcher(arch.stages[0].dim)
        if len(arch.stages) != len(tree.stages):
            return None, f"stages: {len(arch.stages)} stages; the space has {len(tree.stages)}"
        parts = [(tree.input, arch.input, "input"), (tree.stem, arch.stem, "stem")]
        parts += [(node, stage, f"stages[{index}]") for index, (node, stage) in enumerate(zip(tree.stages,
                                                                                             arch.stages, strict=True))]
        parts.append((tree.head, arch.head, "head"))
        vector = np.full(self.num_slots, -1, dtype=VECTOR_DTYPE)
        for node, value, path in parts:
            found = match(node, value, path, m)
            if found is None:
                return None, m.reason
            for slot, index in found.items():
                vector[slot] = index
        try:  # parts of the Arch that disagree where the space ties them can leave a vector that is not a point
            decoded = self._arch(self._layout.check(vector)[0])
        except ConfigError as exc:
            return None, f"{exc.path}: the Arch differs where the space ties decisions together ({exc.message})"
        if (decoded.input, decoded.stem, decoded.stages, decoded.head) != (arch.input, arch.stem, arch.stages,
                                                                          arch.head):
            mine, theirs = decoded.to_dict(), arch.replace(name=None, published=None).to_dict()
            return None, first_difference(theirs, mine, "")  # a tie the Arch breaks, or the stem width
        return vector, ""

    # -- description ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Plain data for ``nas space show --json``: name, size and every decision."""
        size = self.size()
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "size": size if size < 10**15 else None,
            "log10_size": round(self.log10_size(), 3),
            "decisions": [
                {"slot": slot, "path": d.path, "line": d.line, "form": d.form, "options": list(d.options),
                 "parent": d.parent, "when": [self.decisions[d.parent].options[i] for i in d.when]
                 if d.parent >= 0 else []}
                for slot, d in enumerate(self.decisions)
            ],
        }

    def size_text(self) -> str:
        """The size for people: exact up to 10^15, else ``~10^x``."""
        size = self.size()
        return f"{size:,}" if size < 10**15 else f"~10^{self.log10_size():.1f}"

    def show(self) -> str:
        """The choice tree as text: each decision with its options, nested under the option it depends on."""
        lines = [f"{self.name}: {self.size_text()} points, {self.num_slots} decisions ({self.source})"]
        if self.description:
            lines.append(f"  {self.description}")
        level: dict[int, int] = {}
        headed: dict[int, tuple[int, ...]] = {}
        for slot, d in enumerate(self.decisions):
            name = d.path
            if d.parent < 0:
                level[slot] = 0
            else:
                parent = self.decisions[d.parent]
                level[slot] = level[d.parent] + 2
                if headed.get(d.parent) != d.when:
                    headed[d.parent] = d.when
                    lines.append(f"{'  ' * (level[slot] - 1)}{_when_text(parent, d.when)}:")
                name = _relative_path(parent.path, d.path)
            options = ", ".join(d.options[:12]) + (f", ... ({len(d.options)})" if len(d.options) > 12 else "")
            lines.append(f"{'  ' * level[slot]}{name}: {d.form} [{options}]")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Space(name={self.name!r}, decisions={self.num_slots}, size={self.size_text()})"


def _when_text(parent: Decision, when: tuple[int, ...]) -> str:
    """``[2] pooling`` for one option; ``>= 3`` for an ordered suffix such as the depths that keep a block."""
    if len(when) == 1:
        return f"[{when[0]}] {parent.options[when[0]]}"
    if parent.ordered and when == tuple(range(when[0], len(parent.options))):
        return f"if {parent.path} >= {parent.options[when[0]]}"
    return "if " + " | ".join(parent.options[index] for index in when)


def _relative_path(parent: str, path: str) -> str:
    if not path.startswith(parent):
        return path
    rest = path[len(parent):]
    rest = re.sub(r"^\.(choice|ordinal)\[\d+\]", "", rest)
    return rest.lstrip(".") or "(value)"


def _copies(pending: int, tries_left: int) -> int:
    """Candidates per pending point in the next retry: about ``_RETRY_ROWS`` in all, 1 for a large batch."""
    return max(1, min(tries_left, _MAX_COPIES, -(-_RETRY_ROWS // pending)))


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
