"""Parallel workers of one shared study: unique worker ids, one study-wide budget, outputs over the whole study.

Every rule here rests on the one write every Optuna storage serialises: creating a trial. A relational
storage numbers a new trial inside its transaction, a journal storage under its file lock, so two
processes that create trials at the same instant get distinct trial numbers, and a trial's number never
changes. A study user attribute would not do: setting one is last-writer-wins, with no compare-and-set,
which is how two workers started together both became worker 0.

- **Worker ids.** A worker claims its id by adding one FAIL trial carrying ``worker_claim: <run name>``
  (FAIL, so no sampler and no history reads it). Its id is the rank of that trial among the study's claim
  trials: the first worker is 0, and a resumed run finds its own claim and keeps its id.
- **Budget.** Before a batch is evaluated, each proposal gets its candidate trial, RUNNING, in order
  (:func:`admit`). A proposal is admitted while fewer than ``budget`` candidate trials (RUNNING or COMPLETE)
  precede its trial; the first one past the budget is marked FAIL (``over_budget``) with the rest of the
  batch, and the worker stops. So the completed candidates never exceed the budget, however many workers.
  A killed worker's RUNNING trials keep their slots until it resumes (resuming marks them FAIL).
- **No point twice.** Each candidate trial carries its point's canonical key (``point``,
  :func:`nas.search.records.point_key`) from the write that creates it. A proposal whose point an earlier
  candidate trial of another worker holds is a duplicate: its trial is marked FAIL (``duplicate_of``), it
  takes no budget place, and the strategy withdraws it (the other worker's record reaches it as any record
  does). Of two workers that create trials for one point at the same instant, the lower trial number wins.
  A worker's repeat of its own point is evaluated as before, as a single worker's is.
- **Outputs.** A worker that stops waits for the other workers' admitted candidates to finish
  (:func:`wait_for_running`) before it writes ``pareto.csv``, ``top/`` and (``nas search``) ``pareto.png``,
  so every worker's run directory describes the whole study. Candidates that make no progress for a while (a
  killed worker's) are left out with a warning; ``nas search --resume RUN`` rewrites the outputs later.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from nas.search.records import Proposal

__all__ = ["CLAIM_ATTR", "OVER_BUDGET_ATTR", "DUPLICATE_ATTR", "claim_worker", "admit", "complete_slot",
           "find_number", "wait_for_running"]

CLAIM_ATTR = "worker_claim"
OVER_BUDGET_ATTR = "over_budget"
DUPLICATE_ATTR = "duplicate_of"
_POINT_ATTR = "point"
_LEGACY_PREFIX = "worker:"  # the study attribute that gave worker ids before claims (it raced)
_KEY_ATTR = "key"  # every candidate trial carries its proposal key (see Record.to_attrs)


def _claims(study: optuna.Study) -> list[str]:
    """Run names of the study's worker claims, in trial order."""
    import optuna

    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return [str(trial.user_attrs[CLAIM_ATTR]) for trial in sorted(trials, key=lambda trial: trial.number)
            if CLAIM_ATTR in trial.user_attrs]


def claim_worker(study: optuna.Study, run_name: str) -> int:
    """This run's worker id in ``study``: the rank of its claim trial, added now unless it has one (resume).

    Studies written before claims gave ids by the order of ``worker:<run name>`` study attributes: such a run
    keeps its id, and claimed ids come after them.
    """
    import optuna

    legacy = [name for name in study.user_attrs if name.startswith(_LEGACY_PREFIX)]
    if _LEGACY_PREFIX + run_name in legacy:
        return legacy.index(_LEGACY_PREFIX + run_name)
    if run_name not in _claims(study):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                  user_attrs={CLAIM_ATTR: run_name}))
    return len(legacy) + _claims(study).index(run_name)


def _candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Candidate trials that hold a budget slot: completed, or running (admitted or being admitted)."""
    import optuna

    states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE)
    return [trial for trial in study.get_trials(deepcopy=False, states=states) if _KEY_ATTR in trial.user_attrs]


def admit(study: optuna.Study, proposals: Sequence[Proposal], *, budget: int,
          worker: int) -> tuple[dict[str, int], list[str]]:
    """Give ``proposals`` candidate trials within the study-wide ``budget``; returns key -> trial id of those
    admitted (in order, up to the first past the budget) and the keys of the duplicates (see the module
    docstring). The trials of the others are marked FAIL: ``over_budget`` or ``duplicate_of``.

    A proposal that already holds a RUNNING trial (``optuna-*`` strategies) is judged by that trial, on the
    budget only; the others get one now, RUNNING, carrying their ``key``, ``point`` and ``worker``, created
    whole in one storage write.
    """
    import optuna

    storage = study._storage  # noqa: SLF001 (trials created whole, by id, without a sampler)
    ids = []
    for proposal in proposals:
        if proposal.trial is not None:
            ids.append(proposal.trial._trial_id)  # noqa: SLF001
            continue
        template = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs={
            _KEY_ATTR: proposal.key, _POINT_ATTR: proposal.point, "worker": worker})
        ids.append(storage.create_new_trial(study._study_id, template_trial=template))  # noqa: SLF001
    numbers = [storage.get_trial_number_from_id(trial_id) for trial_id in ids]
    holders: dict[str, tuple[int, Any]] = {}  # point -> (number, worker) of its first candidate trial
    ahead = []  # one read for the whole batch
    for trial in sorted(_candidates(study), key=lambda trial: trial.number):
        point = trial.user_attrs.get(_POINT_ATTR)
        if point is None or point not in holders:
            ahead.append(trial.number)
            if point is not None:
                holders[point] = (trial.number, trial.user_attrs.get("worker"))
    admitted: dict[str, int] = {}
    duplicates: dict[str, tuple[int, int]] = {}  # key -> (trial id, the number of the trial holding the point)
    over = []
    for proposal, trial_id, number in zip(proposals, ids, numbers, strict=True):
        holder = holders.get(proposal.point) if proposal.trial is None else None
        if holder is not None and holder[0] < number and holder[1] != worker:
            duplicates[proposal.key] = (trial_id, holder[0])
        elif over or bisect.bisect_left(ahead, number) >= budget:
            over.append(trial_id)
        else:
            admitted[proposal.key] = trial_id
    for trial_id, holder_number in duplicates.values():
        storage.set_trial_user_attr(trial_id, DUPLICATE_ATTR, holder_number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    for trial_id in over:
        storage.set_trial_user_attr(trial_id, OVER_BUDGET_ATTR, True)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    return admitted, list(duplicates)


def wait_for_running(study: optuna.Study, *, patience: float, poll: float = 0.2) -> int:
    """Wait until no candidate trial of ``study`` is RUNNING, or ``patience`` seconds pass with none finishing;
    returns how many are still running (0 when the study is settled).

    Called once this worker stopped: the other workers' admitted candidates are at most one batch each, and a
    killed worker's are never told, hence the patience rather than an endless wait.
    """
    import optuna

    last_change = time.monotonic()
    finished = -1
    while True:
        candidates = _candidates(study)
        running = sum(trial.state == optuna.trial.TrialState.RUNNING for trial in candidates)
        if not running:
            return 0
        if len(candidates) - running != finished:
            finished, last_change = len(candidates) - running, time.monotonic()
        if time.monotonic() - last_change > patience:
            return running
        time.sleep(poll)


def complete_slot(study: optuna.Study, trial_id: int, values: list[float], attrs: dict[str, Any],
                  constraints: dict[str, float]) -> int:
    """Write a record into the RUNNING trial :func:`admit` gave its proposal; returns the trial number.

    A kill part-way leaves the trial RUNNING: the worker's resume marks it FAIL (``Run.fail_interrupted``).
    """
    import optuna

    storage = study._storage  # noqa: SLF001 (the trial is ours, addressed by id)
    for name, value in attrs.items():
        storage.set_trial_user_attr(trial_id, name, value)
    if constraints:  # stored as create_trial(constraints=...) stores them, for Optuna's readers
        whole = optuna.trial.create_trial(values=values, constraints=constraints)
        for name, value in whole.system_attrs.items():
            storage.set_trial_system_attr(trial_id, name, value)
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, values)
    return storage.get_trial_number_from_id(trial_id)


def find_number(study: optuna.Study, key: str, guess: int) -> int:
    """The number of the trial holding proposal ``key`` (another worker may have added trials since ``guess``)."""
    for trial in reversed(study.get_trials(deepcopy=False)):
        if trial.user_attrs.get(_KEY_ATTR) == key:
            return trial.number
    return guess
