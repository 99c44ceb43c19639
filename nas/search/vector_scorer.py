"""Scoring point vectors with the predictor objectives, without building their Archs.

Why: a :class:`~nas.search.scorer.Scorer` needs each candidate's Arch, and decoding a point, hashing its id
and walking its units dominates evolution's inner loop however warm the unit caches are (``bench/search.py``
prints the scoring throughput of both paths). The predictor objectives (latency on a target, parameters, MACs
and the ``proxy`` score ``log10 MACs``) are sums over an Arch's units, and the units of one *part* of a point
(a stage, the head) depend only on that part's decisions and on what the part before hands on (channels,
feature size, layout, class tokens). So :class:`VectorScorer` keeps per part

    (part, the contents of its slots, context in) -> (its units' sums, context out)

and prices a point whose parts were all seen in those contexts with one lookup per part. Any other point is
decoded once and its units priced by the same tables as the Arch path (:class:`nas.latency.batch.BatchPredictor`
and :class:`nas.latency.batch.CostTable`, which trace a new unit once), so both paths give the same numbers
up to float rounding (``tests/test_search_scoring.py``).

The first part is the input, the stem *and the first stage*: an Arch gives its stem the first stage's
width when the file leaves it out, so the stem's units depend on that stage's decisions.

Records of a search scored this way carry no Arch (``nas.search.optimize`` keys them by the vector), so
this is for benchmarks and screening in one process; runs keep their Archs and use the Scorer.

Example:
    >>> import numpy as np
    >>> import nas
    >>> from nas.search import make_scorer
    >>> from nas.search.vector_scorer import VectorScorer
    >>> space = nas.space.load_space("convnext")
    >>> fast = VectorScorer(space, make_scorer(target="iphone12", accuracy="proxy"))  # doctest: +SKIP
    >>> fast.evaluate_vectors(space.sample_vectors(np.random.default_rng(0), 4)).values.shape  # doctest: +SKIP
    (4, 2)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import NasError
from nas.latency.batch import batch_predictor, cost_table
from nas.latency.predict import resolve_setting
from nas.search.accuracy import proxy_score
from nas.search.objectives import AccuracyObjective, LatencyObjective, MacsObjective, ParamsObjective
from nas.search.scorer import Scorer, Scores

if TYPE_CHECKING:
    from nas.space import Space

__all__ = ["VectorScorer"]

_MAX_ENTRIES = 1_000_000  # part entries kept before the table is cleared (memory bound)


class VectorScorer:
    """Scores point vectors like ``scorer`` scores their Archs (see the module docstring).

    Args:
        space: the space the vectors belong to.
        scorer: what to measure: its objectives, constraints and measured columns, all predictor-based
            (latency, params, macs, accuracy with the ``proxy`` source).

    Raises:
        NasError: ``scorer`` measures something that needs the Arch (a supernet or zero-cost accuracy).

    Not thread-safe (plain dicts), like the Space it reads.
    """

    def __init__(self, space: Space, scorer: Scorer):
        self.space = space
        self.scorer = scorer
        latency = [measure for measure in scorer.measures if isinstance(measure, LatencyObjective)]
        for measure in scorer.measures:
            proxy = isinstance(measure, AccuracyObjective) and measure.source_name == "proxy"
            if not (proxy or isinstance(measure, (LatencyObjective, ParamsObjective, MacsObjective))):
                raise NasError(f"VectorScorer prices predictor objectives only (latency, params, macs, proxy "
                               f"accuracy), not {measure.column!r}")
        self._predictor = (batch_predictor(resolve_setting(latency[0].target, latency[0].setting), latency[0].batch)
                           if latency else None)
        self._costs = cost_table()
        slots = space.part_slots()
        self._parts = [np.union1d(slots[0], slots[1]), *slots[2:]]  # the stem takes stage 0's width
        self._table: dict[tuple[int, bytes, int], tuple[Any, ...]] = {}
        self._contexts: dict[Any, int] = {}
        self.misses = 0

    def size(self) -> int:
        """Part entries held."""
        return len(self._table)

    def _context(self, context: Any) -> int:
        found = self._contexts.get(context)
        if found is None:
            found = self._contexts[context] = len(self._contexts)
        return found

    def _learn(self, vector: np.ndarray, keys: list[bytes]) -> None:
        """Decode ``vector`` once and store each of its parts' sums under its slot contents and context."""
        self.misses += 1
        arch = self.space.decode(vector)
        if len(arch.stages) + 1 != len(self._parts):
            raise NasError(f"internal: {len(self._parts)} parts for {len(arch.stages)} stages in {self.space.name}")
        ends: list[tuple[int, int]] = []
        units = self._costs.signatures.walk(arch, ends)
        counts = self._costs.unit_values(arch, units)
        seconds = self._predictor.unit_values(arch, units) if self._predictor is not None else None
        bounds = [0] + [end for end, _ in ends] + [len(units)]
        contexts = [0] + [self._context(context) for _, context in ends]
        if len(self._table) >= _MAX_ENTRIES:
            self._table.clear()
        spec = arch.input
        elements = spec.channels * spec.resolution * spec.resolution
        for part, key in enumerate(keys):
            lo, hi = bounds[part], bounds[part + 1]
            execute = issue = transfer = 0.0
            if seconds is not None:
                for value in seconds[lo:hi]:
                    execute += value[0]
                    issue += value[1]
                    transfer += value[2]
            params = sum(value[0] for value in counts[lo:hi])
            macs = sum(value[1] for value in counts[lo:hi])
            # bounds has one entry per stage end, and the head follows the last stage: the context out of the
            # head is unused; that of part 0 also carries the input's size (for the input-transfer term).
            out = contexts[part + 1] if part + 1 < len(contexts) else -1
            self._table[(part, key, contexts[part])] = (execute, issue, transfer, params, macs, out,
                                                        elements if part == 0 else 0)

    def evaluate_vectors(self, vectors: np.ndarray) -> Scores:
        """Scores of ``n x num_slots`` canonical, valid point vectors (as ``scorer.evaluate`` of their Archs)."""
        array = np.ascontiguousarray(np.asarray(vectors, dtype=np.int16).reshape(-1, self.space.num_slots))
        count = len(array)
        columns = []
        for slots in self._parts:
            raw = np.ascontiguousarray(array[:, slots]).tobytes()
            width = 2 * len(slots)
            columns.append([raw[row * width:(row + 1) * width] for row in range(count)])
        sums = np.zeros((count, 6))
        table = self._table
        for row in range(count):
            keys = [column[row] for column in columns]
            for _ in range(2):
                context = 0
                total = [0.0, 0.0, 0.0, 0, 0, 0]
                for part, key in enumerate(keys):
                    entry = table.get((part, key, context))
                    if entry is None:
                        break
                    total[0] += entry[0]
                    total[1] += entry[1]
                    total[2] += entry[2]
                    total[3] += entry[3]
                    total[4] += entry[4]
                    total[5] += entry[6]
                    context = entry[5]
                else:
                    sums[row] = total
                    break
                self._learn(array[row], keys)
            else:
                raise NasError(f"internal: point {array[row].tolist()} of {self.space.name} not priced")
        return self._scores(sums)

    def _scores(self, sums: np.ndarray) -> Scores:
        metrics: dict[str, np.ndarray] = {}
        params, macs = sums[:, 3], sums[:, 4]
        predictor = self._predictor
        for measure in self.scorer.measures:
            if isinstance(measure, LatencyObjective) and predictor is not None:
                metrics[measure.column] = predictor.finish(sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 5])
            elif isinstance(measure, ParamsObjective):
                metrics[measure.column] = params / 1e6
            elif isinstance(measure, MacsObjective):
                metrics[measure.column] = macs / 1e9
            else:
                metrics[measure.column] = proxy_score(macs)
        count = len(sums)
        objectives = self.scorer.objectives
        values = np.stack([metrics[o.column] for o in objectives], axis=1) if count else np.zeros((0, len(objectives)))
        constraints = self.scorer.constraints
        violations = (np.stack([metrics[c.column] - c.limit for c in constraints], axis=1)
                      if count and constraints else np.zeros((count, len(constraints))))
        return Scores(values, violations, metrics)
