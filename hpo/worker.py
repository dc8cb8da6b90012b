"""The worker loop: claim a trial slot, run it, repeat until the study's target is met.

Optuna's `optimize(n_trials=...)` counts per worker, and its MaxTrialsCallback stops a
worker only after the target is passed, so K workers overshoot by up to K-1 trials. hpo
claims each slot under a study-wide lock instead (a PostgreSQL advisory lock, or a file
lock beside a SQLite database, which only one host can use anyway): the count of trials
and the `ask` that creates the next one happen atomically, so K workers on one study run
exactly the target, none lost or duplicated.

Behind Optuna's gRPC proxy (hpo.proxy) no lock exists, but trial numbers are still given
out atomically, in order. There a worker claims a trial, then keeps it only if fewer
trials than the target hold a slot below its number; otherwise it records the claim as a
FAIL with reason `surplus`, which holds no slot. The trials that keep their claims are
exactly the target; a surplus claim can only happen when workers claim the last slots
at the same moment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpo.objective import TrialStores, run_trial
from hpo.settings import HpoConfig
from hpo.storage import Storage
from hpo.study import ATTR_MESSAGE, ATTR_REASON, counted_trials, slot_takers, target
from hpo.train import EvalEvent


@contextlib.contextmanager
def study_lock(storage: Storage, study_name: str) -> Iterator[bool]:
    """Mutual exclusion between every worker of one study, across processes and hosts.

    Yields whether the block is exclusive: False behind a gRPC proxy, which has no lock.
    """
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield False
        return
    engine: sqlalchemy.engine.Engine = storage.engine
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(f"hpo:{study_name}".encode()).digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield True
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # an in-memory database has a single process
        return
    lock_path = Path(f"{database}.{hashlib.sha256(study_name.encode()).hexdigest()[:12]}.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _within_target(study: optuna.Study, number: int) -> bool:
    """Whether fewer trials than the target hold a slot below trial `number`."""
    below = [t for t in slot_takers(study.get_trials(deepcopy=False)) if t.number < number]
    return len(below) < target(study)


def claim(study: optuna.Study, storage: Storage, poll: float, deadline: float | None = None) -> optuna.Trial | None:
    """The next trial of the study, or None when its target is met and nothing runs.

    While other trials still run, a worker with nothing to claim waits: one of them may
    belong to a dead worker, and once its heartbeat is stale it comes back as a waiting
    retry that this worker runs.
    """
    while deadline is None or time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial becomes a waiting retry
        with study_lock(storage, study.study_name) as exclusive:
            if counted_trials(study) < target(study):
                trial = study.ask()
                # Beat at once: a worker that dies before the trial's own heartbeat starts must
                # leave a trial that turns stale (and is retried), not one RUNNING forever.
                storage.record_heartbeat(trial._trial_id)
                if exclusive or _within_target(study, trial.number):
                    return trial
                trial.set_user_attr(ATTR_REASON, "surplus")
                trial.set_user_attr(ATTR_MESSAGE, "another worker claimed the study's last slot first")
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
    """Run trials until the target is met or `timeout` seconds passed; returns how many ran."""
    deadline = None if timeout is None else time.monotonic() + timeout
    stores = TrialStores.open(storage, config)
    done = 0
    while deadline is None or time.monotonic() < deadline:
        trial = claim(study, storage, poll=config.storage.heartbeat_interval, deadline=deadline)
        if trial is None:
            break
        frozen = run_trial(study, trial, config, stores, on_eval=on_eval)
        done += 1
        _publish(study, storage, frozen, stores)
        if on_trial is not None:
            on_trial(frozen)
    return done


def _publish(study: optuna.Study, storage: Storage, trial: FrozenTrial, stores: TrialStores) -> None:
    """The trial's note and the study's figures for optuna-dashboard (hpo.notes).

    Under the study lock, so that workers never interleave the chunks of one figure; with
    no lock (a gRPC proxy) the figures are left out. Only a view: whatever goes wrong here
    is a warning, never a failed worker or trial.
    """
    try:
        from hpo.notes import publish

        with study_lock(storage, study.study_name) as exclusive:
            publish(study, trial, stores.curves, figures=exclusive)
    except Exception as exc:  # the study must go on without its figures
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"warning: dashboard note and figures of trial {trial.number} not saved: {type(exc).__name__}: {detail}",
            file=sys.stderr,
            flush=True,
        )
