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
import functools
import hashlib
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpo.curves import Curves
from hpo.objective import TrialStores, run_trial
from hpo.promotion import promote
from hpo.settings import HpoConfig
from hpo.storage import Storage, advisory_key
from hpo.study import ATTR_MESSAGE, ATTR_REASON, SURPLUS, counted_trials, slot_takers, target
from hpo.trainspec import EvalEvent


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
        key = advisory_key(f"hpo:{study_name}")
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
    due (hpo.promotion), before a new configuration is drawn; it runs under the lock only.
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
                storage.record_heartbeat(trial._trial_id)
                if exclusive or _within_target(study, trial.number):
                    return trial
                trial.set_user_attr(ATTR_REASON, SURPLUS)
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
    publisher = _Publisher(study, storage, stores.curves)
    promoter = None
    if config.pruner.pause and stores.states is not None:
        states, pruner, objectives = stores.states, config.pruner, config.study.objectives
        promoter = functools.partial(promote, study, stores.curves, states, pruner, objectives)
    done = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            interval = config.storage.heartbeat_interval
            trial = claim(study, storage, poll=interval, deadline=deadline, promote=promoter)
            if trial is None:
                break
            frozen = run_trial(study, trial, config, stores, on_eval=on_eval)
            done += 1
            publisher.submit(frozen)
            if on_trial is not None:
                on_trial(frozen)
    finally:
        publisher.close()
    return done


class _Publisher:
    """Each finished trial's note and the study's figures for optuna-dashboard (hpo.notes),
    written on a thread of their own.

    They take tenths of a second (plotly JSON, a dozen attribute writes, the study lock):
    in line, they would sit between one trial and the next; here they run while the next
    trial trains, and `close` waits for the last. Trials that finish while the figures
    are being drawn share the next drawing. The figures are drawn under the study lock,
    so that workers never interleave the chunks of one figure; with no lock (a gRPC proxy)
    they are left out. Only a view: whatever goes wrong is a warning, never a failed
    worker or trial.
    """

    def __init__(self, study: optuna.Study, storage: Storage, curves: Curves) -> None:
        self.study, self.storage, self.curves = study, storage, curves
        self._queue: queue.SimpleQueue[FrozenTrial | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hpo-publisher", daemon=True)
        self._thread.start()

    def submit(self, trial: FrozenTrial) -> None:
        self._queue.put(trial)

    def close(self) -> None:
        """Publish what was submitted, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get())
            trials = [t for t in batch if t is not None]
            if trials:
                self._publish(trials)
            if None in batch:
                return

    def _publish(self, trials: list[FrozenTrial]) -> None:
        from hpo.notes import save_figures, save_trial_note

        for trial in trials:
            with only_warn(f"dashboard note of trial {trial.number}"):
                save_trial_note(self.study, trial, self.curves)
        latest = trials[-1].number
        with (
            only_warn(f"dashboard figures after trial {latest}"),
            study_lock(self.storage, self.study.study_name) as exclusive,
        ):
            if exclusive:
                save_figures(self.study, self.curves.curves(self.study.study_name), latest)


@contextlib.contextmanager
def only_warn(what: str) -> Iterator[None]:
    """Turn a failure into a one-line warning: the study must go on without its views."""
    try:
        yield
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"warning: {what} not saved: {type(exc).__name__}: {detail}", file=sys.stderr, flush=True)
