"""The worker loop: claim a trial slot, run it, repeat until the study's target is met.

Optuna's `optimize(n_trials=...)` counts per worker, and its MaxTrialsCallback stops a
worker only after the target is passed, so K workers overshoot by up to K-1 trials. hpo
claims each slot under a study-wide lock instead (a PostgreSQL advisory lock, or a file
lock beside a SQLite database, which only one host can use anyway): the count of trials
and the `ask` that creates the next one happen atomically, so K workers on one study run
exactly the target, none lost or duplicated.

Behind Optuna's gRPC proxy (hpo.store.grpc) no lock exists, but trial numbers are still given
out atomically, in order. There a worker claims a trial, then keeps it only if fewer
trials than the target hold a slot below its number; otherwise it records the claim as a
FAIL with reason `surplus`, which holds no slot. The trials that keep their claims are
exactly the target; a surplus claim can only happen when workers claim the last slots
at the same moment.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import HpoConfig
from hpo.record.attrs import target, write_reason
from hpo.record.outcome import EvalEvent, Reason
from hpo.search.promotion import promote
from hpo.store.locks import study_lock
from hpo.store.optuna_internals import trial_id
from hpo.store.storage import Storage
from hpo.study.objective import TrialStores, run_trial
from hpo.study.slots import counted_trials, slot_takers


def _within_target(study: optuna.Study, number: int) -> bool:
    """Whether fewer trials than the target hold a slot below trial `number`."""
    below = [t for t in slot_takers(study.get_trials(deepcopy=False)) if t.number < number]
    return len(below) < target(study)


def claim(
    study: optuna.Study,
    storage: Storage,
    poll: float,
    deadline: float | None = None,
    promote: Callable[[], object] | None = None,
) -> optuna.Trial | None:
    """The next trial of the study, or None when its target is met and nothing runs.

    While other trials still run, a worker with nothing to claim waits: one of them may
    belong to a dead worker, and once its heartbeat is stale it comes back as a waiting
    retry that this worker runs. `promote` queues a paused trial's resumption, if one is
    due (hpo.search.promotion), before a new configuration is drawn; it runs under the lock only.
    """
    while deadline is None or time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry
        with study_lock(storage, study.study_name) as exclusive:
            if counted_trials(study) < target(study):
                if promote is not None and exclusive:
                    promote()  # the queued resumption is what `ask` takes next
                trial = study.ask()
                # Beat at once: a worker that dies before the trial's own heartbeat starts must
                # leave a trial that turns stale (and is retried), not one RUNNING forever.
                storage.record_heartbeat(trial_id(trial))
                if exclusive or _within_target(study, trial.number):
                    return trial
                write_reason(trial, Reason.SURPLUS, "another worker claimed the study's last slot first")
                study.tell(trial, state=TrialState.FAIL)
                continue
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return None
        time.sleep(poll)
    return None


def run_worker(
    study: optuna.Study,
    storage: Storage,
    config: HpoConfig,
    *,
    timeout: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    on_eval: Callable[[EvalEvent], None] | None = None,
) -> int:
    """Run trials until the target is met or `timeout` seconds passed; returns how many ran.
    `on_trial` sees each finished trial (the CLI prints it and publishes it to the dashboard)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    stores = TrialStores.open(storage, config)
    promoter = None
    if config.pruner.pause and stores.states is not None:
        states, pruner, objectives = stores.states, config.pruner, config.study.objectives
        promoter = functools.partial(promote, study, stores.curves, states, pruner, objectives)
    done = 0
    while deadline is None or time.monotonic() < deadline:
        interval = config.storage.heartbeat_interval
        trial = claim(study, storage, poll=interval, deadline=deadline, promote=promoter)
        if trial is None:
            break
        frozen = run_trial(study, trial, config, stores, on_eval=on_eval)
        done += 1
        if on_trial is not None:
            on_trial(frozen)
    return done
