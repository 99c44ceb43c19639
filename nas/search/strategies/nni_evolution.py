"""``nni-evolution``: NNI 3.0's regularized evolution on the space, as an optional extra.

Needs ``pip install nas[nni]`` (nni 3.0 and pytorch-lightning next to it). Until those are installed,
creating the strategy fails with that hint; nothing else imports NNI.

How it runs: the space is exposed as an NNI model space with one ``nni.choice`` per decision slot
(option indices), and NNI's own engine runs in-process (``NasExperimentConfig('sequential',
'simplified')``) on a background thread with NNI's ``RegularizedEvolution`` (Real et al., "Regularized
evolution for image classifier architecture search", AAAI 2019). Its evaluator hands each sample to
:meth:`ask` through a queue and waits for :meth:`tell`'s reward, so the ask/tell life cycle holds.

Adapting NNI's view to the space's:

* NNI samples every slot; the conditional ones that do not exist for the sample's choices are dropped
  (set to -1), which gives the canonical point.
* A point the Arch rejects is answered at once with a very low reward and never proposed (no budget).
* A point already evaluated is answered from memory (no budget): NNI's evolution repeats points often.
* NNI's evolution is single-objective, so each candidate's reward is a fixed weighted sum of its losses,
  each divided by the magnitude of the first evaluated candidate's value; every constraint violation
  (same scaling) costs 1000 times more. That finds points near one end of the front, not the front itself,
  which is what a single-objective method can do; the hypervolume benchmark shows the price.
* NNI's strategy draws from its own ``RandomState`` seeded from ``(seed, worker)``; replaying a stored
  history answers its samples in the same order, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.errors import NasError
from nas.search.base import BaseStrategy
from nas.search.records import Proposal, Record

if TYPE_CHECKING:
    from nas.space import Space

__all__ = ["NNIEvolutionStrategy", "nni_available", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'nas[nni]' (nni 3.0 and pytorch-lightning)"
_INVALID_REWARD = -1e18
_VIOLATION_WEIGHT = 1e3
_WAIT_S = 600.0


def nni_available() -> bool:
    """Whether nni and pytorch-lightning can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("nni", "pytorch_lightning"))


class _Stop(Exception):
    """Ends the NNI thread's evaluation (the strategy was closed)."""


class NNIEvolutionStrategy(BaseStrategy):
    """NNI's regularized evolution behind the ask/tell base (see the module docstring).

    Args:
        space, directions, seed, population_size, worker, constrained: see :class:`BaseStrategy` (constraint
            violations lower the reward).
        sample_size: NNI's tournament size (default: a quarter of the population, at least 2).

    Call :meth:`close` when done to end NNI's thread (it is a daemon thread, so a process may also just exit).
    """

    name = "nni-evolution"

    def __init__(self, space: Space, *, directions: Sequence[str], seed: int = 0, population_size: int = 32,
                 worker: int = 0, constrained: bool = False, sample_size: int | None = None):
        if not nni_available():
            raise NasError(f"strategy 'nni-evolution' needs NNI, which is not installed: {INSTALL_HINT}")
        super().__init__(space, directions=directions, seed=seed, population_size=population_size, worker=worker,
                         constrained=constrained)
        self.sample_size = sample_size or max(2, population_size // 4)
        self._requests: queue.Queue[np.ndarray] = queue.Queue()
        self._replies: queue.Queue[float | None] = queue.Queue()
        self._rewards: dict[bytes, float] = {}
        self._scale: np.ndarray | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._experiment: Any = None
        self._workdir = ""
        self._issued = 0

    # -- NNI side (background thread) ------------------------------------------------------------------

    def _model_space(self) -> Any:
        import nni
        from nni.mutable import ensure_frozen
        from nni.nas.nn.pytorch import ModelSpace

        from nas.search.strategies.optuna_samplers import decision_names

        labels = decision_names(self.space)
        cards = [len(decision.options) for decision in self.space.decisions]

        class SpaceChoices(ModelSpace):  # one categorical per slot; the frozen copy holds the sample
            def __init__(self) -> None:
                super().__init__()
                self.choices = [ensure_frozen(self.add_mutable(nni.choice(label, list(range(card)))),
                                              strict=False) for label, card in zip(labels, cards, strict=True)]

            def forward(self, x: Any) -> Any:
                return x

        return SpaceChoices()

    def _canonical(self, choices: Sequence[int]) -> np.ndarray:
        vector = np.full(self.space.num_slots, -1, dtype=np.int16)
        for slot, decision in enumerate(self.space.decisions):
            parent = decision.parent
            if parent < 0 or (vector[parent] >= 0 and int(vector[parent]) in decision.when):
                vector[slot] = int(choices[slot])
        return vector

    def _evaluate(self, model: Any) -> None:
        import nni

        vector = self._canonical(model.choices)
        if not self.space.is_valid(vector):
            nni.report_final_result(_INVALID_REWARD)
            return
        known = self._rewards.get(vector.tobytes())
        if known is not None:
            nni.report_final_result(known)
            return
        self._requests.put(vector)
        reward = self._replies.get()
        if reward is None:
            raise _Stop
        nni.report_final_result(reward)

    def _run(self) -> None:
        from nni.nas.evaluator import FunctionalEvaluator
        from nni.nas.experiment import NasExperiment, NasExperimentConfig
        from nni.nas.strategy import RegularizedEvolution

        try:
            seed = int(np.random.SeedSequence([self.seed, self.worker]).generate_state(1)[0] % (2**31))
            strategy = RegularizedEvolution(population_size=self.population_size, sample_size=self.sample_size,
                                            seed=seed)
            config = NasExperimentConfig("sequential", "simplified")
            config.max_trial_number = 10**9
            config.log_level = "error"
            config.experiment_working_directory = self._workdir
            self._experiment = NasExperiment(self._model_space(), FunctionalEvaluator(self._evaluate), strategy,
                                             config)
            self._experiment.run()
        except _Stop:
            pass
        except BaseException as exc:  # noqa: BLE001  (surfaced to the caller by ask())
            self._error = exc
        finally:
            self._requests.put(np.zeros(0, dtype=np.int16))  # wakes a waiting ask()

    def _start(self) -> None:
        from nni.runtime.log import silence_stdout

        silence_stdout()  # NNI logs every sample to stdout; its experiment log (errors only) stays in _workdir
        for name in ("lightning", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._workdir = tempfile.mkdtemp(prefix="nas-nni-")
        self._thread = threading.Thread(target=self._run, name=f"nni-evolution-{self.seed}", daemon=True)
        self._thread.start()

    # -- the ask/tell side ------------------------------------------------------------------------------

    def ask(self, count: int) -> list[Proposal]:
        """The next sample of NNI's evolution that needs an evaluation (one per call)."""
        if self._outstanding:
            return []
        if self._thread is None:
            self._start()
        try:
            vector = self._requests.get(timeout=_WAIT_S)
        except queue.Empty:
            raise NasError(f"strategy {self.name}: NNI proposed nothing in {_WAIT_S:.0f} s") from None
        if not len(vector):
            raise NasError(f"strategy {self.name}: NNI's experiment stopped: {self._error!r}")
        key = f"{self.worker}:{self._issued}:0"
        proposal = Proposal(key=key, vector=vector, generation=self._issued // self.population_size,
                            worker=self.worker)
        self._issued += 1
        self._seen.add(vector.tobytes())
        self._outstanding[key] = proposal
        return [proposal]

    def _reward(self, record: Record) -> float:
        losses = np.asarray(record.values, dtype=np.float64) * self.signs
        if self._scale is None:
            self._scale = np.maximum(np.abs(losses), 1e-12)
        reward = -float(np.sum(losses / self._scale))
        violation = sum(max(0.0, value) for value in record.violations)
        return reward - _VIOLATION_WEIGHT * violation / float(np.mean(self._scale))

    def tell(self, records: Sequence[Record]) -> None:
        for record in records:
            reward = self._reward(record)
            self._rewards[np.asarray(record.vector, dtype=np.int16).tobytes()] = reward
            if record.worker == self.worker and record.key in self._outstanding:
                self._replies.put(reward)
        super().tell(records)

    def withdraw(self, proposals: Sequence[Proposal]) -> None:
        """NNI waits for a reply to each sample: a withdrawn one (another worker holds its point) gets the point's
        reward where a record gave it already, else the worst reward seen so far."""
        for proposal in proposals:
            if proposal.key in self._outstanding:
                known = self._rewards.get(np.asarray(proposal.vector, dtype=np.int16).tobytes())
                self._replies.put(known if known is not None else min(self._rewards.values(), default=0.0))
        super().withdraw(proposals)

    def close(self) -> None:
        """Stop NNI's thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            self._replies.put(None)
            self._thread.join(timeout=30)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = ""

    def _next_batch(self, batch: int) -> list[Proposal]:  # ask() is overridden; never called
        return []
