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

A dead (or frozen, or cut-off) worker's trial turns stale; the first worker to notice
records why (`worker_lost`: which host fell silent, since when) while the trial still runs,
since Optuna writes no attribute of a finished trial, then fails it as Optuna's
`fail_stale_trials` does, and its retry is queued. A worker that loses its database for a
while (a restart, a failover) waits for it (hpo.study.objective.patiently) and goes on.
"""

from __future__ import annotations

import copy
import datetime
import functools
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import HpoConfig
from hpo.record.attrs import HOST, MESSAGE, REASON, target, write_reason
from hpo.record.outcome import EvalEvent, Reason
from hpo.search.promotion import promote
from hpo.store.locks import study_lock
from hpo.store.optuna_internals import BaseHeartbeat, stale_trial_ids, trial_id
from hpo.store.states import RetryLostTrial
from hpo.store.storage import Storage
from hpo.study.hardware import check_hardware
from hpo.study.objective import TrialStores, patiently, run_trial
from hpo.study.slots import counted_trials, slot_takers


def _within_target(study: optuna.Study, number: int) -> bool:
    """Whether fewer trials than the target hold a slot below trial `number`."""
    below = [t for t in slot_takers(study.get_trials(deepcopy=False)) if t.number < number]
    return len(below) < target(study)


WAIT_POLL_S = 1.0


def lost_message(trial: FrozenTrial, grace_period: float | None, retry: int | None, max_retry: int) -> str:
    """Why a stale trial is failed: where its worker ran, since when it is silent, what follows."""
    host = trial.user_attrs.get(HOST)
    where = f"on {host}" if host else "(which never reported its host)"
    grace = datetime.timedelta(seconds=grace_period or 0)
    since = (datetime.datetime.now(datetime.timezone.utc) - grace).strftime("%Y-%m-%d %H:%M:%S UTC")
    then = f"retried (retry {retry} of {max_retry})" if retry is not None else f"not retried (max_retry={max_retry})"
    return f"its worker {where} is silent since before {since} (killed, frozen or cut off); {then}"


def fail_lost_trials(study: optuna.Study, storage: Storage) -> list[FrozenTrial]:
    """Optuna's `fail_stale_trials`, with the reason recorded: each RUNNING trial whose heartbeat
    is stale gets `worker_lost` and a message while it still runs (Optuna writes no attribute of
    a finished trial), then is failed; those this worker failed get the storage's retry callback
    (hpo.store.states.RetryLostTrial) and are returned, as stored after the retry was queued.

    Two workers may notice the same trial: both write the same reason, one of them fails it.
    """
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return []
    callback = storage.get_heartbeat_stale_trial_callback()
    grace = getattr(storage, "grace_period", None)
    failed: list[int] = []
    for stale in stale_trial_ids(storage, study):
        try:
            record = storage.get_trial(stale)
            if isinstance(callback, RetryLostTrial):
                message = lost_message(record, grace, callback.retries(record), callback.max_retry)
            else:
                message = lost_message(record, grace, None, 0)
            storage.set_trial_user_attr(stale, REASON, Reason.WORKER_LOST.value)
            storage.set_trial_user_attr(stale, MESSAGE, message)
            if storage.set_trial_state_values(stale, state=TrialState.FAIL):
                failed.append(stale)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, or its own worker finished it after all
    lost = [copy.deepcopy(storage.get_trial(number)) for number in failed]
    if callback is not None:
        for trial in lost:
            callback(study, trial)
    return lost


def claim(
    study: optuna.Study,
    storage: Storage,
    poll: float,
    deadline: float | None = None,
    promote: Callable[[], object] | None = None,
    on_lost: Callable[[FrozenTrial], None] | None = None,
) -> optuna.Trial | None:
    """The next trial of the study, or None when its target is met and nothing runs.

    While other trials still run, a worker with nothing to claim waits: one of them may
    belong to a dead worker, and once its heartbeat is stale it comes back as a waiting
    retry that this worker runs. `promote` queues a paused trial's resumption, if one is
    due (hpo.search.promotion), before a new configuration is drawn; it runs under the lock only.
    `on_lost` sees each dead worker's trial that this worker failed (reason `worker_lost`).
    """
    while deadline is None or time.monotonic() < deadline:
        for lost in fail_lost_trials(study, storage):  # a dead worker's trial becomes a waiting retry
            if on_lost is not None:
                on_lost(lost)
        # `ask` syncs Optuna's cache of the study's trials, which a new worker fills whole (11 s
        # at 10,000 trials): fill it here, outside the lock, so that under it only the trials
        # that changed since are read, and the count is one SQL query (counted_trials).
        study.get_trials(deepcopy=False)
        with study_lock(storage, study.study_name) as exclusive:
            if counted_trials(study) < target(study):
                if promote is not None and exclusive:
                    promote()  # the queued resumption is what `ask` takes next
                trial = study.ask()
                # Beat at once: a worker that dies before the trial's own heartbeat starts must
                # leave a trial that turns stale (and is retried), not one RUNNING forever.
                patiently("beating for a claimed trial", storage.record_heartbeat, trial_id(trial))
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
    `on_trial` sees each finished trial (the CLI prints it and publishes it to the dashboard),
    and each dead worker's trial that this worker failed as `worker_lost`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    hardware = patiently("checking the study's hardware", check_hardware, study, storage, config)
    stores = patiently("opening the study's stores", TrialStores.open, storage, config, hardware)
    promoter = None
    if config.pruner.pause and stores.states is not None:
        states, pruner, objectives = stores.states, config.pruner, config.study.objectives
        promoter = functools.partial(promote, study, stores.curves, states, pruner, objectives)
    done = 0
    while deadline is None or time.monotonic() < deadline:
        # With nothing to claim while others run, look again each second: the last trials of
        # a study end within a second of each other, not of a heartbeat interval (10 s).
        poll = min(config.storage.heartbeat_interval, WAIT_POLL_S)
        trial = patiently("claiming a trial", claim, study, storage, poll, deadline, promote=promoter, on_lost=on_trial)
        if trial is None:
            break
        frozen = run_trial(study, trial, config, stores, on_eval=on_eval)
        if frozen is None:  # another worker had given the trial up for lost: its late result is dropped
            continue
        done += 1
        if on_trial is not None:
            on_trial(frozen)
    return done
