"""Optuna samplers as strategies: ``optuna-tpe``, ``optuna-nsga2``, ``optuna-gp``.

The strategy lives in the run's study: each proposal is an Optuna trial that
suggests the space's decisions define-by-run, one ``suggest_categorical`` per
decision that exists given the choices made before it (a conditional decision
is suggested only when its parent takes one of its ``when`` options; parents
come first in the space's slot order). The choices are option indices
``0 .. n-1``; the parameter name is the decision's path in the space file.

A suggested point that the Arch rejects (a width the heads do not divide, a
window larger than the map, ...) is *rejected*: its trial is told FAIL with
the user attribute ``rejected`` and the sampler is asked again. Optuna's
samplers skip FAIL trials, so a rejection costs time but no budget. After
``max_rejections`` rejections in a row (a sampler concentrated on an invalid
region keeps proposing it) the last suggestion is *repaired* through the
space: one of its valid neighbours (``Space.neighbour_vectors``, one decision
moved) is enqueued as the next trial's parameters (``study.enqueue_trial``),
so the trial's parameters are still exactly the point evaluated (user
attribute ``repaired``).

Reproducibility: before every ``study.ask`` the sampler is rebuilt with a seed
derived from ``(seed, worker, k, attempt)``, ``k`` being the number of this
worker's completed candidates and ``attempt`` the rejections so far for this
candidate. The samplers keep no other state (TPE, NSGA-II and GP read
everything from the study), so a run resumed from its journal proposes what
the uninterrupted run would have. Constraints reach the samplers through
``constraints_func``, which reads the violations the search loop stores in
the trial's ``violations`` user attribute.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import NasError
from nas.search.base import BaseStrategy, check_int
from nas.search.records import Proposal, Record

if TYPE_CHECKING:
    import optuna

    from nas.space import Space

__all__ = ["OptunaStrategy", "TPEStrategy", "NSGA2SamplerStrategy", "GPStrategy", "decision_names"]


def decision_names(space: Space) -> list[str]:
    """One unique Optuna parameter name per decision slot: its path, with ``#slot`` added where paths repeat."""
    paths = [decision.path or f"slot{slot}" for slot, decision in enumerate(space.decisions)]
    counts: dict[str, int] = {}
    for path in paths:
        counts[path] = counts.get(path, 0) + 1
    return [path if counts[path] == 1 else f"{path}#{slot}" for slot, path in enumerate(paths)]


def _constraints(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    return [float(value) for value in trial.user_attrs.get("violations", ())]


class OptunaStrategy(BaseStrategy):
    """Base of the strategies that run an Optuna sampler inside the run's study.

    Args:
        space, directions, seed, population_size, worker, constrained: see :class:`BaseStrategy` (a constrained
            run passes ``constraints_func`` to the sampler).
        max_rejections: invalid suggestions in a row before the next one is repaired.
    """

    uses_study = True

    def __init__(self, space: Space, *, directions: Sequence[str], seed: int = 0, population_size: int = 32,
                 worker: int = 0, constrained: bool = False, max_rejections: int = 10):
        super().__init__(space, directions=directions, seed=seed, population_size=population_size, worker=worker,
                         constrained=constrained)
        self.max_rejections = check_int("max_rejections", max_rejections, minimum=1)
        self.names = decision_names(space)
        self._choices = [list(range(len(decision.options))) for decision in space.decisions]
        self._parents = [decision.parent for decision in space.decisions]
        self._when = [set(decision.when) for decision in space.decisions]
        self._study: optuna.Study | None = None
        self._completed = 0
        self.rejected = 0

    def bind(self, study: optuna.Study) -> None:
        self._study = study

    def study(self) -> optuna.Study:
        """The bound study; an in-memory one is made on first use when none was bound (benchmarks)."""
        if self._study is None:
            import optuna

            self._study = optuna.create_study(directions=self.directions)  # type: ignore[arg-type]
        return self._study

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler for one ask, seeded with ``seed``."""
        raise NotImplementedError

    def _constraints_func(self) -> Any:
        return _constraints if self.constrained else None

    def _seed(self, attempt: int) -> int:
        state = np.random.SeedSequence([self.seed, self.worker, self._completed, attempt]).generate_state(1)
        return int(state[0])

    def _suggest(self, trial: optuna.trial.Trial) -> np.ndarray:
        vector = np.full(self.space.num_slots, -1, dtype=np.int16)
        for slot, name in enumerate(self.names):
            parent = self._parents[slot]
            if parent >= 0 and (vector[parent] < 0 or int(vector[parent]) not in self._when[slot]):
                continue
            vector[slot] = trial.suggest_categorical(name, self._choices[slot])
        return vector

    def ask(self, count: int) -> list[Proposal]:
        """One proposal (an Optuna trial, RUNNING in the study); ``count`` beyond 1 is not used."""
        import optuna

        check_int("count", count, minimum=1)
        study = self.study()
        key = f"{self.worker}:{self._completed}:0"
        vector = None
        for attempt in range(self.max_rejections + 1):
            repair = attempt == self.max_rejections
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study.sampler = self.make_sampler(self._seed(attempt))
                if repair:
                    study.enqueue_trial(self._params(self._repaired(vector, attempt)), skip_if_exists=False)
                trial = study.ask()
            trial.set_user_attr("key", key)
            trial.set_user_attr("worker", self.worker)
            vector = self._suggest(trial)
            if self.space.is_valid(vector):
                if repair:
                    trial.set_user_attr("repaired", True)
                proposal = Proposal(key=key, vector=vector, generation=self._completed // self.population_size,
                                    worker=self.worker, trial=trial)
                self._outstanding[key] = proposal
                return [proposal]
            self.rejected += 1
            trial.set_user_attr("rejected", "the Arch of this point is invalid")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise NasError(f"strategy {self.name}: could not repair an invalid suggestion in space {self.space.name!r}")

    def _repaired(self, vector: np.ndarray | None, attempt: int) -> np.ndarray:
        """A valid point near the last invalid suggestion: one of its valid neighbours (one decision moved),
        else a random valid point; drawn from the strategy's own stream for this candidate."""
        rng = self.rng(self._completed, attempt)
        if vector is not None:
            neighbours = self.space.neighbour_vectors(vector)
            if len(neighbours):
                return neighbours[int(rng.integers(len(neighbours)))]
        return self.space.sample_vectors(rng, 1)[0]

    def _params(self, vector: np.ndarray) -> dict[str, int]:
        return {self.names[slot]: int(vector[slot]) for slot in np.flatnonzero(vector >= 0)}

    def tell(self, records: Sequence[Record]) -> None:
        for record in records:
            if record.worker == self.worker:
                self._completed += 1
        super().tell(records)

    def _next_batch(self, batch: int) -> list[Proposal]:  # ask() is overridden; never called
        return []


class TPEStrategy(OptunaStrategy):
    """Optuna's TPE, multivariate with ``group=True`` (the right decomposition for conditional decisions)."""

    name = "optuna-tpe"

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constraints_func=self._constraints_func())


class NSGA2SamplerStrategy(OptunaStrategy):
    """Optuna's NSGA-II sampler (its own crossover and mutation on the parameters), ``population_size`` per
    generation; its generations are stored in the study, so it also resumes."""

    name = "optuna-nsga2"

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.NSGAIISampler(population_size=self.population_size, seed=seed,
                                             constraints_func=self._constraints_func())


class GPStrategy(OptunaStrategy):
    """Optuna's Gaussian-process sampler (slow beyond a few hundred trials: a GP fit per ask).

    GPSampler models a fixed set of parameters: a decision that exists only under some option of its parent is
    sampled at random. That is by design here, so its warning (one per such decision per trial) is turned off.
    """

    name = "optuna-gp"

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.GPSampler(seed=seed, constraints_func=self._constraints_func(),
                                         warn_independent_sampling=False)
