"""Search spaces: declarative YAML files read into a :class:`Space` of :class:`~nas.arch.Arch` points.

A space file (``spaces/*.yaml``) has the shape of an Arch file (``schema: 1``,
``input``, ``stem``, ``stages``, ``head``) plus ``name`` and ``description``,
with a *choice* wherever a value may vary:

* ``{choice: [a, b, c]}``: categorical; a mutation may jump to any other option.
* ``{ordinal: [48, 64, 96]}``: ordered options; a mutation moves one step.
* ``{range: [2, 8], step: 2}``: the integers 2, 4, 6, 8 (both ends included), ordered.

Options may be whole sub-trees with choices of their own; those exist only
while their option is chosen (conditional choices). A mixer choice is written
``mixer: {choice: [{kind: pooling, pool_size: {choice: [3, 5]}}, {kind: attention,
heads: {choice: [4, 8]}}]}``; ``pool_size`` is a decision only when the mixer
is ``pooling``. Choices may stand for any value or sub-tree: a field, a
component, a block, a stage's ``blocks`` or a whole stage; the number of stages
is fixed per space. ``kind`` itself cannot be a choice: choose among whole
components instead, each with its own parameters.

A stage's ``blocks`` are written as in an Arch file: one block,
``{repeat: R, block: B}``, ``{repeat: R, pattern: [B1, B2]}`` or a list of
these (runs, in order). ``R`` may be a choice of integers; 0 drops the run (a
stage still needs one block). By default a run repeats *one* set of decisions
(every block of the run is the same); ``independent: true`` gives each repeated
block (or pattern) its own decisions, made only for blocks that exist at the
chosen depth. ``id: name`` on a choice and ``{same: name}`` elsewhere tie two
places to one decision (both blocks of a Swin pair share their heads).
Components, blocks and fields left out take the Arch file's defaults
(``ffn: none``, ``norm: none``, ``layer_scale: null``, float32 ``precision``,
each kind's own field defaults). ``spaces/README.md`` has the full format;
:mod:`nas.space_tree` holds the compiled tree.

Validity is decided by Arch construction alone (heads divide the width, the
window fits the feature map, ...): the space never restates those rules. A
point is a fixed-length ``int16`` vector with one slot per decision holding
the option index, ``-1`` where the decision does not exist (its option is not
taken, or its block is beyond the chosen depth). Sampling, mutation, crossover
and encoding work on these vectors with numpy and an explicit
``numpy.random.Generator``; only :meth:`Space.decode` builds an Arch. Sampling
under constraints draws again a bounded number of times, then fails with
"constraint infeasible in this space".

Example:
    >>> import numpy as np
    >>> import nas
    >>> space = nas.space.load_space("convnext")
    >>> arch = space.sample(np.random.default_rng(0))
    >>> space.contains(nas.zoo.get("convnext_tiny"))
    (True, '')
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections import Counter
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from nas.arch import SCHEMA_VERSION, Arch, Block, Component, InputSpec, Precision, Site
from nas.errors import ConfigError, UnknownKindError
from nas.space_tree import VECTOR_DTYPE, Compiler, Decision, Matcher, Node, Where, resolve, yaml_key_path
from nas.yamlio import load_yaml

__all__ = ["Space", "Decision", "VECTOR_DTYPE", "load_space", "list_spaces", "spaces_dir"]

_CACHE_LIMIT = 200_000
_BLOCK_MEMO_MAX = 4096  # blocks with at most this many configurations get a memo entry of their own
_FEASIBILITY_TRIES = 4096
_DIAGNOSE_SAMPLES = 200
_MISSING = object()
_KEEP = object()  # no downsample: the stage keeps the incoming map and width


class Space:
    """A search space: decisions over Arch points, with vector operations for search.

    Points are ``int16`` vectors of length :attr:`num_slots`: slot ``i`` holds the
    index of the option taken for decision ``decisions[i]``, or -1 where that
    decision does not exist. Vectors from this class are canonical (every
    existing decision set, every other slot -1), so equal vectors are equal
    points. Two vectors may still decode to the same Arch when the file offers
    the same design twice (say a uniform stage both as a run and as a pattern).

    Validity is Arch's: a vector is valid when its Arch constructs. For speed,
    :meth:`is_valid` repeats the order of :meth:`Arch._validate` over memoised
    parts, calling the components' own ``check`` and ``output_size``;
    ``tests/test_space.py`` checks that it agrees with Arch construction.

    The memo tables grow as points are seen (bounded, then cleared), so a
    Space is not safe to share between threads; processes each load their own.
    Create with :meth:`Space.load` or :func:`load_space`.

    Example:
        >>> space = load_space("efficientformer")
        >>> rng = np.random.default_rng(0)
        >>> parents = space.sample_vectors(rng, 8)
        >>> children = space.mutate_vectors(parents, rng)
        >>> space.decode(children[0]).num_blocks > 0
        True
    """

    def __init__(self, *, name: str, description: str, source: str, input_node: Node, stem: Node,
                 stages: list[Node], head: Node, decisions: list[Decision]):
        self.name = name
        self.description = description
        self.source = source
        self.decisions = tuple(decisions)
        self._input, self._stem, self._stages, self._head = input_node, stem, stages, head
        count = len(decisions)
        self._card = np.array([len(d.options) for d in decisions], dtype=np.int64)
        self._ordered = np.array([d.ordered for d in decisions], dtype=bool)
        self._parent = np.array([d.parent for d in decisions], dtype=np.int64)
        width = int(self._card.max()) + 1 if count else 1
        self._allowed = np.zeros((max(count, 1), width), dtype=bool)  # last column: a parent at -1 is not taken
        level = np.zeros(count, dtype=np.int64)
        for slot, decision in enumerate(decisions):
            if decision.parent >= 0:
                self._allowed[slot, list(decision.when)] = True
                level[slot] = level[decision.parent] + 1
        self._levels = [np.flatnonzero(level == depth) for depth in range(1, int(level.max(initial=0)) + 1)]
        self._valid: dict[bytes, int] = {}
        self._stage_memo: dict[tuple[Any, ...], Any] = {}
        self._parts: dict[tuple[Any, ...], Any] = {}
        self._small: dict[int, bool] = {}
        bounds = [(0, stem.hi)] + [(node.lo, node.hi) for node in stages] + [(head.lo, head.hi)]
        self._segment_lo = np.array([lo for lo, _ in bounds], dtype=np.int64)
        self._segment_hi = np.array([hi for _, hi in bounds], dtype=np.int64)
        self._stem_memo: dict[tuple[Any, ...], tuple[int, int, int, int] | None] = {}
        self._head_memo: dict[tuple[Any, ...], bool] = {}
        columns = np.where(self._ordered, 1, self._card)
        self._feature_offset = np.concatenate([[0], np.cumsum(columns)])[:-1]
        self.num_features = int(columns.sum())

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
                raise ConfigError(exc.message, path=yaml_key_path(path.read_text(encoding="utf-8"), exc.line),
                                  source=exc.source, line=exc.line) from None
            raise
        return cls.from_data(data, source=str(path), default_name=path.stem)

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<space>", default_name: str = "space") -> Space:
        """A space from (located) YAML data; see :meth:`load`."""
        compiler = Compiler(source)
        root = Where("", getattr(data, "line", None))
        data = compiler._mapping(data, root, "a space", ("schema", "name", "description", "input", "stem",
                                                          "stages", "head"),
                                 required=("schema", "input", "stem", "stages", "head"))
        if data["schema"] != SCHEMA_VERSION:
            raise compiler.error(f"must be {SCHEMA_VERSION}, got {data['schema']!r}", root.key(data, "schema"))
        for key in ("name", "description"):
            if key in data and not isinstance(data[key], str):
                raise compiler.error(f"must be a string, got {data[key]!r}", root.key(data, key))
        stages = data["stages"]
        if not isinstance(stages, list) or not stages:
            raise compiler.error("must be a non-empty list of stages (the number of stages is fixed per space)",
                                 root.key(data, "stages"))
        input_node = compiler.record(data["input"], root.key(data, "input"), InputSpec, "input")
        stem = compiler.component(data["stem"], root.key(data, "stem"), "stem")
        stages_where = root.key(data, "stages")
        stage_nodes = [compiler.stage(item, stages_where.item(stages, index)) for index, item in enumerate(stages)]
        head = compiler.component(data["head"], root.key(data, "head"), "head")
        space = cls(name=data.get("name", default_name), description=" ".join(data.get("description", "").split()),
                    source=source, input_node=input_node, stem=stem, stages=stage_nodes, head=head,
                    decisions=compiler.decisions)
        space._check_feasible()
        return space

    def _check_feasible(self) -> None:
        rng = np.random.default_rng(0)
        batch = 64
        for _ in range(_FEASIBILITY_TRIES // batch):
            if self._valid_rows(self._draw(rng, batch)).any():
                return
        raise self._infeasible(_FEASIBILITY_TRIES)

    def _infeasible(self, tries: int) -> ConfigError:
        """The error for a space where sampling finds no valid point, placed at the most frequent culprit."""
        rng = np.random.default_rng(1)
        culprits: Counter[tuple[str, int | None]] = Counter()
        examples: dict[tuple[str, int | None], ConfigError] = {}
        for vector in self._draw(rng, _DIAGNOSE_SAMPLES):
            failure = self._failure(vector)
            if failure is not None:
                error, where = failure
                culprits[(where.path, where.line)] += 1
                examples.setdefault((where.path, where.line), error)
        if not culprits:
            return ConfigError(f"constraint infeasible in this space: no valid point in {tries} tries",
                               source=self.source)
        (path, line), count = culprits.most_common(1)[0]
        example = examples[(path, line)]
        share = 100 * count / _DIAGNOSE_SAMPLES
        return ConfigError(f"constraint infeasible in this space: no valid point in {tries} tries; {share:.0f}% of "
                           f"samples fail here, e.g. {example.path}: {example.message}",
                           path=path, source=self.source, line=line)

    def _failure(self, v: np.ndarray) -> tuple[ConfigError, Where] | None:
        """Arch's error for ``v`` with the space location most responsible, or None if ``v`` is valid."""
        try:
            self._arch(v)
        except ConfigError as exc:
            trace: dict[str, Where] = {}
            self._trace(v, trace)
            return exc, _lookup(trace, exc.path)
        return None

    # -- the point vector ---------------------------------------------------------------

    @property
    def num_slots(self) -> int:
        """Length of a point vector (one slot per decision)."""
        return len(self.decisions)

    def size(self) -> int:
        """Exact number of distinct decision vectors (points before the Arch's own constraints)."""
        total = self._input.count() * self._stem.count() * self._head.count()
        return total * math.prod(stage.count() for stage in self._stages)

    def log10_size(self) -> float:
        """``log10(size())``, for spaces too large to print."""
        return math.log10(self.size())

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count x num_slots`` canonical vectors, uniform per decision, constraints not checked."""
        fresh = self._random_values(rng, count)
        return self._repair(fresh.copy(), fresh)

    def _random_values(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return (rng.random((count, self.num_slots)) * self._card).astype(VECTOR_DTYPE)

    def _repair(self, vectors: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """Make ``vectors`` canonical in place: slots that do not exist get -1, new ones take ``fill``."""
        for slots in self._levels:
            parents = vectors[:, self._parent[slots]]
            exists = self._allowed[slots[None, :], parents]
            current = vectors[:, slots]
            vectors[:, slots] = np.where(exists, np.where(current >= 0, current, fill[:, slots]), -1)
        return vectors

    def _check_vectors(self, vectors: Any) -> np.ndarray:
        """``vectors`` as an ``n x num_slots`` int16 array of canonical points, or a ConfigError naming the slot."""
        array = np.asarray(vectors)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.num_slots:
            raise ConfigError(f"a point of space {self.name!r} is a vector of {self.num_slots} slots, "
                              f"got shape {np.shape(vectors)}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ConfigError(f"a point vector holds integers, got dtype {array.dtype}")
        bad = (array < -1) | (array >= self._card[None, :])
        if bad.any():
            row, slot = np.argwhere(bad)[0]
            raise ConfigError(f"option index {array[row, slot]} out of range [-1, {self._card[slot]})",
                              path=self.decisions[slot].path)
        array = array.astype(VECTOR_DTYPE, copy=False)
        exists = self._exists(array)
        wrong = exists != (array >= 0)
        if wrong.any():
            row, slot = np.argwhere(wrong)[0]
            state = "exists here but is unset (-1)" if exists[row, slot] else "does not exist here but is set"
            raise ConfigError(f"this decision {state}", path=self.decisions[slot].path)
        return array

    def _exists(self, vectors: np.ndarray) -> np.ndarray:
        exists = np.ones(vectors.shape, dtype=bool)
        for slots in self._levels:
            exists[:, slots] = self._allowed[slots[None, :], vectors[:, self._parent[slots]]]
        return exists

    # -- validity -------------------------------------------------------------------------

    def is_valid(self, vector: np.ndarray) -> bool:
        """Whether the canonical ``vector`` decodes to a valid Arch (same answer as :meth:`decode` succeeding)."""
        return bool(self._fail_codes(self._check_vectors(vector))[0] < 0)

    def _valid_rows(self, vectors: np.ndarray) -> np.ndarray:
        return self._fail_codes(vectors) < 0

    def _fail_codes(self, vectors: np.ndarray) -> np.ndarray:
        """Per row: -1 if valid, else the segment Arch rejects first (0 stem, k + 1 stage k, then head)."""
        vectors = np.ascontiguousarray(vectors)
        buffer, width = vectors.tobytes(), vectors.shape[1] * vectors.itemsize
        cache = self._valid
        codes = []
        for index in range(len(vectors)):
            raw = buffer[index * width:(index + 1) * width]
            found = cache.get(raw)
            if found is None:
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                found = cache[raw] = self._walk(vectors[index], raw)
            codes.append(found)
        return np.array(codes, dtype=np.int64)

    def _walk(self, v: np.ndarray, raw: bytes) -> int:
        """Arch._validate's order over memoised stages, blocks and components (see the class docstring)."""
        first_dim = resolve(self._stages[0], v).fields["dim"].value(v)  # type: ignore[attr-defined]
        state = self._stem_state(v, raw, first_dim)
        if state is None:
            return 0
        memo = self._stage_memo
        for index, node in enumerate(self._stages):
            key = (index, state, node.key(v, raw))
            after = memo.get(key, _MISSING)
            if after is _MISSING:
                if len(memo) >= _CACHE_LIMIT:
                    memo.clear()
                after = memo[key] = self._stage_state(node, v, raw, state)
            if after is None:
                return index + 1
            state = after  # type: ignore[assignment]
        key = (state, self._head.key(v, raw))
        fits = self._head_memo.get(key)
        if fits is None:
            in_dim, height, width, prefix = state
            fits = self._head_memo[key] = _fits(self._head.value(v), Site(in_dim, in_dim, height, width,
                                                                            prefix_tokens=prefix))
        return -1 if fits else len(self._stages) + 1

    def _stem_state(self, v: np.ndarray, raw: bytes, first_dim: int) -> tuple[int, int, int, int] | None:
        key = (raw[:self._stem.bhi], first_dim)
        if key in self._stem_memo:
            return self._stem_memo[key]
        spec: InputSpec = self._input.value(v)
        stem = self._stem.value(v)
        state: tuple[int, int, int, int] | None = None
        if spec.resolution >= 1 and spec.channels >= 1:
            if stem.dim is None:
                stem = dataclasses.replace(stem, dim=first_dim)
            size = spec.resolution
            if _fits(stem, Site(spec.channels, stem.dim, size, size)):
                height, width = stem.output_size(size, size)
                if height >= 1 and width >= 1:
                    state = (stem.dim, height, width, getattr(stem, "prefix_tokens", 0))
        self._stem_memo[key] = state
        return state

    def _stage_state(self, node: Node, v: np.ndarray, raw: bytes,
                     state: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
        """The (in_dim, height, width, prefix) after a stage, or None where Arch would reject it."""
        fields = resolve(node, v).fields  # type: ignore[attr-defined]
        dim = fields["dim"].value(v)
        runs: list[tuple[list[Node], int]] = []
        fields["blocks"].expand(v, runs)
        in_dim, height, width, prefix = state
        if dim < 1 or not runs:
            return None
        downsample = fields["downsample"]
        key = (id(downsample), downsample.key(v, raw), in_dim, dim, height, width, prefix)
        size = self._parts.get(key, _MISSING)
        if size is _MISSING:
            size = self._parts[key] = _downsample_output(downsample.value(v), in_dim, dim, height, width, prefix)
        if size is None:
            return None
        if size is not _KEEP:
            in_dim, (height, width) = dim, size  # type: ignore[misc]
        for unit, count in runs:
            for _ in range(count):
                before = (in_dim, height, width)
                for block in unit:
                    size = self._block_output(block, v, raw, (in_dim, dim, height, width, prefix))
                    if size is None:
                        return None
                    in_dim, (height, width) = dim, size  # type: ignore[misc]
                if (in_dim, height, width) == before:
                    break  # the unit maps this site to itself: every further repeat is the same
        return in_dim, height, width, prefix

    def _block_output(self, node: Node, v: np.ndarray, raw: bytes,
                      site: tuple[int, int, int, int, int]) -> tuple[int, int] | None:
        """The map size after a block at ``site`` (in_dim, dim, height, width, prefix), or None if Arch rejects it.

        Memoised per block and, below that, per component: a component's verdict
        depends on its own decisions and the site. A check that reads
        ``site.block`` (a block-owning mixer looking at the block's norm or FFN)
        is seen by :class:`_BlockProbe` and then not reused for other blocks.
        """
        memo = self._parts
        small = self._small.get(id(node))
        if small is None:
            small = self._small[id(node)] = node.count() <= _BLOCK_MEMO_MAX
        if small:  # few configurations: one lookup per block; else the component lookups below are the memo
            block_key = (id(node), node.key(v, raw), site)
            known = memo.get(block_key, _MISSING)
            if known is not _MISSING:
                return known  # type: ignore[no-any-return]
        if len(memo) >= _CACHE_LIMIT:
            memo.clear()
        record = resolve(node, v)
        fields = record.fields  # type: ignore[attr-defined]
        size: tuple[int, int] | None = None
        for role in ("mixer", "ffn", "norm"):
            part = fields[role]
            key = (id(part), raw[part.blo:part.bhi] if part.extra is None else part.key(v, raw), site)
            verdict = memo.get(key)
            if verdict is None:
                verdict = memo[key] = _probe_check(part.value(v), site, record, v)
            ok, reads_block, output = verdict
            if reads_block:
                ok = _fits(part.value(v), Site(*site[:4], record.value(v), site[4]))
            if not ok:
                size = None
                break
            if role == "mixer":
                size = output
        else:
            layer_scale = fields["layer_scale"].value(v)
            precision = fields["precision"]
            key = (id(precision), precision.key(v, raw))
            fits = memo.get(key)
            if fits is None:
                fits = memo[key] = _precision_ok(precision.value(v))
            if not fits or (layer_scale is not None and layer_scale <= 0):
                size = None
        if small:
            memo[block_key] = size
        return size

    # -- sampling, mutation, crossover ---------------------------------------------------

    def sample_vectors(self, rng: np.random.Generator, count: int, *, max_tries: int = 1000,
                       valid_only: bool = True) -> np.ndarray:
        """``count x num_slots`` valid points, each decision drawn uniformly over its options.

        A point that Arch rejects is drawn again from the part it rejects first
        (the stem, one stage, or the head), so a stage that is valid after the
        stages before it is kept; every 16th retry draws the whole point again.
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
            >>> space = load_space("convnext")
            >>> space.sample_vectors(np.random.default_rng(0), 4).shape == (4, space.num_slots)
            True
        """
        _check_rng(rng)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        vectors = self._draw(rng, count)
        if not valid_only:
            return vectors
        codes = self._fail_codes(vectors)
        columns = np.arange(self.num_slots)
        for attempt in range(1, max_tries):
            redo = np.flatnonzero(codes >= 0)
            if not len(redo):
                return vectors
            fresh = self._random_values(rng, len(redo))
            if attempt % 16:
                part = codes[redo]
                inside = (columns >= self._segment_lo[part, None]) & (columns < self._segment_hi[part, None])
                fresh = np.where(inside, fresh, vectors[redo])
            vectors[redo] = self._repair(fresh, fresh)
            codes[redo] = self._fail_codes(vectors[redo])
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
        parents = self._check_vectors(vectors)
        movable = (parents >= 0) & (self._card[None, :] > 1)
        if not movable.any(axis=1).all():
            raise ConfigError(f"space {self.name!r}: a point without any decision to change cannot be mutated")
        out = parents.copy()
        todo = np.arange(len(parents))
        for _ in range(max_tries):
            out[todo] = self._move(parents[todo], movable[todo], rng)
            todo = todo[~self._valid_rows(out[todo])]
            if not len(todo):
                return out
        raise ConfigError(f"constraint infeasible in space {self.name!r}: no valid move from point {int(todo[0])} "
                          f"in {max_tries} tries", source=self.source)

    def _move(self, vectors: np.ndarray, movable: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.arange(len(vectors))
        slots = np.argmax(np.where(movable, rng.random(movable.shape), -1.0), axis=1)
        current = vectors[rows, slots].astype(np.int64)
        card = self._card[slots]
        step = np.where(rng.random(len(rows)) < 0.5, -1, 1)
        stepped = current + step
        stepped = np.where((stepped < 0) | (stepped >= card), current - step, stepped)
        jumped = (current + 1 + (rng.random(len(rows)) * (card - 1)).astype(np.int64)) % card
        moved = vectors.copy()
        moved[rows, slots] = np.where(self._ordered[slots], stepped, jumped)
        return self._repair(moved, self._random_values(rng, len(rows)))

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
        first, second = self._check_vectors(first), self._check_vectors(second)
        if first.shape != second.shape:
            raise ConfigError(f"parents must have the same shape, got {first.shape} and {second.shape}")
        out = first.copy()
        todo = np.arange(len(first))
        for _ in range(max_tries):
            a, b = first[todo], second[todo]
            take = rng.random(a.shape) < 0.5
            child, other = np.where(take, a, b), np.where(take, b, a)
            fill = np.where(other >= 0, other, self._random_values(rng, len(todo)))
            out[todo] = self._repair(child, fill)
            todo = todo[~self._valid_rows(out[todo])]
            if not len(todo):
                return out
        raise ConfigError(f"constraint infeasible in space {self.name!r}: no valid child of pair {int(todo[0])} "
                          f"in {max_tries} tries", source=self.source)

    def crossover(self, first: Arch, second: Arch, rng: np.random.Generator) -> Arch:
        """A valid child mixing the decisions of two points (see :meth:`crossover_vectors`)."""
        return self.decode(self.crossover_vectors(self.encode(first), self.encode(second), rng)[0])

    def neighbour_vectors(self, vector: np.ndarray) -> np.ndarray:
        """Every valid point one move away: ordered decisions +-1, categorical ones any other option.

        Decisions that come into existence take their first option.
        """
        (base,) = self._check_vectors(vector)
        moves = []
        for slot in np.flatnonzero((base >= 0) & (self._card > 1)):
            current, card = int(base[slot]), int(self._card[slot])
            targets = [current - 1, current + 1] if self._ordered[slot] else range(card)
            moves.extend((slot, target) for target in targets if 0 <= target < card and target != current)
        if not moves:
            return np.zeros((0, self.num_slots), dtype=VECTOR_DTYPE)
        out = np.repeat(base[None, :], len(moves), axis=0)
        slots, targets = np.array(moves).T
        out[np.arange(len(moves)), slots] = targets
        out = self._repair(out, np.zeros_like(out))
        return out[self._valid_rows(out)]

    def neighbours(self, arch: Arch) -> list[Arch]:
        """Every valid Arch one move away from ``arch`` (see :meth:`neighbour_vectors`)."""
        return [self.decode(vector) for vector in self.neighbour_vectors(self.encode(arch))]

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """Numeric features for predictors: ``n x num_features`` float32.

        Categorical decisions become one-hot columns, ordered ones one column
        ``index / (options - 1)``; a decision that does not exist gives zeros.
        """
        array = np.asarray(vectors)
        array = array[None, :] if array.ndim == 1 else array
        out = np.zeros((len(array), self.num_features), dtype=np.float32)
        ordered = np.flatnonzero(self._ordered)
        scale = np.maximum(self._card[ordered] - 1, 1)
        out[:, self._feature_offset[ordered]] = np.maximum(array[:, ordered], 0) / scale
        categorical = np.flatnonzero(~self._ordered)
        values = array[:, categorical]
        rows, columns = np.nonzero(values >= 0)
        out[rows, self._feature_offset[categorical[columns]] + values[rows, columns]] = 1.0
        return out

    # -- encode, decode, contains ----------------------------------------------------------

    def decode(self, vector: np.ndarray) -> Arch:
        """The Arch of a point vector.

        Raises:
            ConfigError: the vector is not a canonical point of this space, or its Arch is invalid
                (the Arch's field path, with the line of the responsible choice in the space file).
        """
        (v,) = self._check_vectors(vector)
        try:
            return self._arch(v)
        except ConfigError as exc:
            trace: dict[str, Where] = {}
            self._trace(v, trace)
            where = _lookup(trace, exc.path)
            raise ConfigError(exc.message, path=exc.path, source=self.source, line=where.line) from None

    def _arch(self, v: np.ndarray) -> Arch:
        return Arch(input=self._input.value(v), stem=self._stem.value(v),
                    stages=tuple(node.value(v) for node in self._stages), head=self._head.value(v))

    def _trace(self, v: np.ndarray, out: dict[str, Where]) -> None:
        self._input.trace(v, "input", out)
        self._stem.trace(v, "stem", out)
        for index, node in enumerate(self._stages):
            node.trace(v, f"stages[{index}]", out)
        self._head.trace(v, "head", out)

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
        m = Matcher(arch.stages[0].dim)
        if len(arch.stages) != len(self._stages):
            return None, f"stages: {len(arch.stages)} stages; the space has {len(self._stages)}"
        parts = [(self._input, arch.input, "input"), (self._stem, arch.stem, "stem")]
        parts += [(node, stage, f"stages[{index}]") for index, (node, stage) in enumerate(zip(self._stages,
                                                                                             arch.stages, strict=True))]
        parts.append((self._head, arch.head, "head"))
        assigned: dict[int, int] = {}
        for node, value, path in parts:
            found = node.match(value, path, m)
            if found is None:
                return None, m.reason
            assigned.update(found)
        vector = np.full(self.num_slots, -1, dtype=VECTOR_DTYPE)
        for slot, index in assigned.items():
            vector[slot] = index
        try:  # parts of the Arch that disagree where the space ties them can leave a vector that is not a point
            decoded = self._arch(self._check_vectors(vector)[0])
        except ConfigError as exc:
            return None, f"{exc.path}: the Arch differs where the space ties decisions together ({exc.message})"
        if (decoded.input, decoded.stem, decoded.stages, decoded.head) != (arch.input, arch.stem, arch.stages,
                                                                          arch.head):
            mine, theirs = decoded.to_dict(), arch.replace(name=None, published=None).to_dict()
            return None, _first_difference(theirs, mine, "")  # a tie the Arch breaks, or the stem width
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


def _fits(component: Component, site: Site) -> bool:
    try:
        component.check(site)
    except ConfigError:
        return False
    return True


class _BlockProbe(Block):
    """Stands in for ``Site.block`` during a memoised check and notes whether the check looked at it."""

    def __init__(self, record: Node, v: np.ndarray):  # no dataclass init: every field is read through the probe
        object.__setattr__(self, "_source", (record, v))
        object.__setattr__(self, "used", False)

    def _real(self) -> Block:
        object.__setattr__(self, "used", True)
        record, v = object.__getattribute__(self, "_source")
        return record.value(v)  # type: ignore[no-any-return]

    mixer = property(lambda self: self._real().mixer)  # type: ignore[assignment]
    ffn = property(lambda self: self._real().ffn)  # type: ignore[assignment]
    norm = property(lambda self: self._real().norm)  # type: ignore[assignment]
    layer_scale = property(lambda self: self._real().layer_scale)  # type: ignore[assignment]
    precision = property(lambda self: self._real().precision)  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self._real() == other

    def __hash__(self) -> int:
        return hash(self._real())


def _probe_check(component: Component, site: tuple[int, int, int, int, int], record: Node,
                 v: np.ndarray) -> tuple[bool, bool, tuple[int, int] | None]:
    """``(fits, read site.block, output size or None)`` of one component at ``site``."""
    in_dim, dim, height, width, prefix = site
    probe = _BlockProbe(record, v)
    ok = _fits(component, Site(in_dim, dim, height, width, probe, prefix))
    output: tuple[int, int] | None = None
    if ok:
        output = component.output_size(height, width)
        if output[0] < 1 or output[1] < 1:
            ok, output = False, None
    return ok, probe.used, output


def _downsample_output(downsample: Component | None, in_dim: int, dim: int, height: int, width: int,
                       prefix: int) -> Any:
    """The map size after a stage's downsample, ``_KEEP`` without one, None if Arch rejects it."""
    if downsample is None:
        return _KEEP
    if not _fits(downsample, Site(in_dim, dim, height, width, prefix_tokens=prefix)):
        return None
    height, width = downsample.output_size(height, width)
    return (height, width) if height >= 1 and width >= 1 else None


def _precision_ok(precision: Precision) -> bool:
    try:
        precision.check("precision")
    except ConfigError:
        return False
    return True


def _lookup(trace: dict[str, Where], path: str) -> Where:
    """The space location of the longest traced prefix of an Arch path."""
    while path:
        if path in trace:
            return trace[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return Where("", None)


def _first_difference(theirs: Any, mine: Any, path: str) -> str:
    if isinstance(theirs, dict) and isinstance(mine, dict):
        for key in list(theirs) + [k for k in mine if k not in theirs]:
            if theirs.get(key) != mine.get(key):
                return _first_difference(theirs.get(key), mine.get(key), f"{path}.{key}" if path else key)
    if isinstance(theirs, list) and isinstance(mine, list) and len(theirs) == len(mine):
        for index, (a, b) in enumerate(zip(theirs, mine, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{index}]")
    return f"{path}: {theirs!r}, but the space ties it to a decision this Arch takes as {mine!r}"


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")


# ---------------------------------------------------------------------------
# shipped spaces


def spaces_dir() -> Path:
    """Folder holding the shipped space files (the package ``nas.spaces``)."""
    return Path(str(resources.files("nas.spaces")))


def list_spaces() -> list[str]:
    """Names of the shipped spaces, sorted."""
    return sorted(path.stem for path in spaces_dir().glob("*.yaml"))


def load_space(name: str) -> Space:
    """A shipped space by name (``spaces/<name>.yaml``), or a space file by path (a name with ``/`` or ``.yaml``).

    Shipped spaces are loaded once per process.

    Raises:
        UnknownKindError: no shipped space of that name (the known ones are listed, closest first).
        ConfigError: the file is not a valid space (see :meth:`Space.load`).

    Example:
        >>> load_space("swin").contains(nas.zoo.get("swin_tiny"))  # doctest: +SKIP
        (True, '')
    """
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Space.load(name)
    return _shipped(name)


@cache
def _shipped(name: str) -> Space:
    path = spaces_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_spaces()
        close = difflib.get_close_matches(name, known, n=len(known), cutoff=0.0)
        raise UnknownKindError(f"unknown space {name!r}; known: {', '.join(close)}")
    return Space.load(path)
