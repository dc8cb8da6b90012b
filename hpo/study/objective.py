"""One trial: sampled parameters -> RunSpec -> isolated training -> values and records.

The objective knows Optuna and hpo's configs, not torch: training happens in a child
process (hpo.trainer.launch) and comes back as a TrialResult. Everything needed to trust a
trial's numbers is stored with it as user attributes: every metric, the resolved
training config, the learning curve, a text sample and the environment.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import HpoConfig
from hpo.config.training import RunSpec
from hpo.errors import HpoError
from hpo.record import attrs
from hpo.record.attrs import RungRecord
from hpo.record.outcome import EvalEvent, Reason
from hpo.search.promotion import rung_points
from hpo.search.pruning import keeps, promotable
from hpo.search.samplers import suggest
from hpo.store.curves import Curves, open_curves
from hpo.store.leases import DeviceLeases, FileLeases, Leases, lease_owner
from hpo.store.optuna_internals import study_storage, trial_id
from hpo.store.states import RetryLostTrial, StateFiles, StateFolder, state_folder
from hpo.store.storage import Storage, sqlite_file
from hpo.study.models import KeptModels, models_of
from hpo.trainer.feasibility import infeasible_reason
from hpo.trainer.hardware import device_pool
from hpo.trainer.launch import TrialFailure, run_isolated

P = ParamSpec("P")
R = TypeVar("R")

# How long a worker waits for a database that stopped answering (a restart, a failover)
# before it gives up; a trial whose heartbeat is silent past the grace period meanwhile is
# retried elsewhere, and this worker drops its late result.
DATABASE_PATIENCE_S = 300.0


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now (rather than that a query is wrong):
    SQLAlchemy's OperationalError, or Optuna's StorageInternalError that wraps one."""
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__ or exc
    return isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
        isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated
    )


def patiently(what: str, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)`, tried again while the database does not answer, with a growing
    pause (up to 5 s), for up to DATABASE_PATIENCE_S seconds; says once that it waits, and
    when the database is back. Optuna's RDBStorage does not retry, and SQLAlchemy's
    pre-ping only replaces connections that died while idle in the pool."""
    deadline, pause, announced = time.monotonic() + DATABASE_PATIENCE_S, 0.5, False
    while True:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            if not is_outage(exc) or time.monotonic() >= deadline:
                raise
            if not announced:
                cause = str(getattr(exc.__cause__, "orig", None) or exc).strip().splitlines()[0]
                print(f"warning: the database does not answer ({what}): {cause}; waiting for it", file=sys.stderr)
                announced = True
            time.sleep(pause)
            pause = min(5.0, pause * 2)
            continue
        if announced:
            print(f"the database answers again ({what}); going on", file=sys.stderr, flush=True)
        return result


class _Lost(Exception):
    """The trial was failed as `worker_lost` by another worker while this one ran it (frozen,
    or cut off from the database past the grace period) and its retry runs elsewhere."""


def trial_seed(study_seed: int, number: int) -> int:
    """A distinct, reproducible seed per trial of a study."""
    return (study_seed * 1_000_003 + number) % 2**31


def run_seed(trial: FrozenTrial, study_seed: int) -> int:
    """The seed a trial trains with: its own, or that of the run it goes on with (as the
    retry of a lost trial, or the promotion of a paused one), so that it can resume it, or
    that of the trial it trains again (`hpo retrain`), so that only the budget differs."""
    continuation = attrs.read_continuation(trial)
    if continuation is not None:
        return continuation.seed
    source = attrs.read_source(trial)
    if source is not None:
        return source.seed
    origin = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return trial_seed(study_seed, trial.number if origin is None else origin)


def trial_spec(config: HpoConfig, params: dict[str, Any], seed: int) -> RunSpec:
    """The RunSpec of one trial; HpoError if the parameters make it invalid."""
    base = config.training
    return config.space.apply(replace(base, train=replace(base.train, seed=seed)), params)


class _Heartbeat:
    """Keeps a trial (and its device leases) alive while the parent waits for its ranks."""

    def __init__(self, beat: Callable[[], None], interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(beat, interval), daemon=True, name="hpo-heartbeat")

    def _run(self, beat: Callable[[], None], interval: float) -> None:
        while True:
            try:
                beat()
            except Exception as exc:  # a database outage: beat again at the next interval
                if not is_outage(exc):
                    raise
            if self._stop.wait(interval):
                return

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class TrialStores:
    """What a trial writes besides Optuna's tables: device leases, learning curves,
    training states (None: retries start over) and kept models (None: none kept)."""

    storage: Storage
    leases: Leases
    curves: Curves
    states: StateFolder | None
    models: KeptModels | None
    hardware: str  # what this host measures throughput on (hpo.study.hardware)

    @classmethod
    def open(cls, storage: Storage, config: HpoConfig, hardware: str) -> TrialStores:
        states, models = states_of(storage, config), models_of(storage, config)
        if not isinstance(storage, optuna.storages.RDBStorage):  # a gRPC proxy: no SQL here
            return cls(storage, FileLeases(), open_curves(storage), states, models, hardware)
        # A lease outlives a few missed renewals, and expires before the grace period ends, so
        # the retry of a dead worker's trial finds its devices free.
        ttl = (config.storage.heartbeat_interval + config.storage.grace_period) / 2
        return cls(storage, DeviceLeases(storage.engine, ttl=ttl), open_curves(storage), states, models, hardware)


def states_of(storage: Storage, config: HpoConfig) -> StateFolder | None:
    """The folder of the study's trial states; HpoError if pausing trials needs one and there is none."""
    database = sqlite_file(storage.engine.url) if isinstance(storage, optuna.storages.RDBStorage) else None
    states = state_folder(config.storage, database)
    if config.pruner.pause and not isinstance(storage, optuna.storages.RDBStorage):
        raise HpoError(
            "pruner.pause=true promotes paused trials under the study's lock, which workers behind a gRPC proxy "
            "lack; give them the database URL, or leave out pruner.pause"
        )
    if config.pruner.pause and states is None:
        raise HpoError(
            "pruner.pause=true keeps paused runs' states in storage.states, which is unset for this database; "
            "name a folder that every worker mounts (storage.states=PATH)"
        )
    return states


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    config: HpoConfig,
    stores: TrialStores,
    on_eval: Callable[[EvalEvent], None] | None = None,
) -> FrozenTrial | None:
    """Sample, check, lease devices, train and tell one trial; returns its final record, or
    None if another worker failed it as lost meanwhile (this worker froze, or lost the database
    past the grace period): its retry runs elsewhere, and this late run's result is dropped.

    Infeasible configurations are told PRUNED with a violated constraint, so TPE and GP
    learn to avoid them (Optuna's samplers read constraints of complete and pruned
    trials only); failures are FAIL with a one-word reason; a pruned trial is PRUNED with
    the values it had at its rung. Ctrl-C at any point fails the trial with reason
    `interrupted` (never leaving it RUNNING), queues it again for the next run to resume
    (as Optuna queues a dead worker's trial) and propagates; so does SIGTERM (hpo.cli), which
    raises KeyboardInterrupt(hpo.errors.TERMINATED).
    """
    try:
        return _run_trial(study, trial, config, stores, on_eval)
    except (_Lost, optuna.exceptions.UpdateFinishedTrialError):
        _drop_late_run(study, trial, stores)
        return None
    except KeyboardInterrupt as stop:
        by = stop.args[0] if stop.args else "Ctrl-C"
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, _Lost):
            stopped = _finish(study, trial, TrialState.FAIL, reason=(Reason.INTERRUPTED, f"stopped by {by}"))
            # The retry carries the trial's system attributes (its state file) and the run it
            # continues or trains again (attrs.CARRIED); the rest of its user attributes
            # describe the stopped run, the reason above included, and stay with it.
            blank = copy.copy(stopped)
            blank.user_attrs = {k: v for k, v in stopped.user_attrs.items() if k in attrs.CARRIED}
            RetryLostTrial(config.storage.max_retry, stores.states)(study, blank)
        raise


def _drop_late_run(study: optuna.Study, trial: optuna.Trial, stores: TrialStores) -> None:
    """Another worker failed this trial as lost and queued its retry: warn, and delete this
    run's state files once no retry of it waits or runs (one that does deletes them when it ends)."""
    print(
        f"warning: trial {trial.number} was given up for lost (its heartbeat went silent past the grace period) "
        "and retried by another worker; this worker's late result is dropped",
        file=sys.stderr,
        flush=True,
    )
    if stores.states is None:
        return
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number
    pending = (TrialState.WAITING, TrialState.RUNNING)
    if not any(retried(t) == trial.number for t in study.get_trials(deepcopy=False, states=pending)):
        for _, name in stores.storage.get_trial(trial_id(trial)).system_attrs.get(attrs.STATE_FILES, []):
            StateFiles(stores.states.path / name).discard()


def _run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    config: HpoConfig,
    stores: TrialStores,
    on_eval: Callable[[EvalEvent], None] | None,
) -> FrozenTrial:
    params = suggest(config.space, trial)
    record = stores.storage.get_trial(trial_id(trial))  # its system attributes, which Trial does not show
    try:
        spec = trial_spec(config, params, run_seed(record, config.study.seed))
        reason = infeasible_reason(spec, config.resources)
    except HpoError as exc:
        reason = str(exc)
    if reason is not None:
        attrs.write_provenance(trial, stores.hardware)
        trial.set_constraint(attrs.CONSTRAINT, 1.0)
        return _finish(study, trial, TrialState.PRUNED, reason=(Reason.INFEASIBLE, reason))
    rungs = config.pruner.rungs(spec.budget.tokens or 0) if config.pruner.name == "moasha" else []
    spec = replace(spec, train=replace(spec.train, eval_tokens=tuple(rungs)))
    files = stores.states.claim(stores.storage, record) if stores.states is not None else None
    spec, resumed_at = _with_states(spec, files, stores.curves, study.study_name, trial.number)
    pool, _ = device_pool(config.resources)
    owner = lease_owner(study.study_name, trial.number)
    # The run saves its model where stores.models keeps it from; the stored config does not name that file.
    model_file = stores.models.checkpoint(trial.number) if stores.models is not None else None
    run_spec = spec if model_file is None else replace(spec, train=replace(spec.train, checkpoint=str(model_file)))
    # A resumed run was judged at the rungs it had passed: the judge starts where it took over.
    judge = _Judge(study, trial, config, stores.curves, rungs, spec.budget.tokens, after_tokens=resumed_at)

    def on_event(event: EvalEvent) -> None:
        patiently("recording an evaluation", _record_event, event)
        if on_eval is not None:
            on_eval(event)
        patiently("judging an evaluation", judge, event)

    def _record_event(event: EvalEvent) -> None:
        # A worker that froze (or lost the database) past the grace period finds its trial
        # failed and retried elsewhere: it stops, and its points stay off the retry's curve.
        if stores.storage.get_trial(trial_id(trial)).state.is_finished():
            raise _Lost
        stores.curves.record(study.study_name, trial.number, event)

    def beat() -> None:
        stores.storage.record_heartbeat(trial_id(trial))
        stores.leases.renew(owner)

    try:
        # The heartbeat starts first: waiting for a free device is no reason to look dead.
        with (
            _Heartbeat(beat, config.storage.heartbeat_interval),
            stores.leases.hold(pool, spec.train.n_devices, owner) as devices,
        ):

            def describe() -> None:  # written while the ranks train, not before
                attrs.write_provenance(trial, stores.hardware)
                trial.set_constraint(attrs.CONSTRAINT, 0.0)
                attrs.write_run(trial, spec.train.seed, spec.to_dict(), devices)

            describe_patiently = functools.partial(patiently, "describing the trial", describe)

            result = run_isolated(
                run_spec,
                on_eval=on_event,
                timeout=config.study.trial_timeout,
                device_ids=devices,
                on_started=describe_patiently,
            )
    except _Paused as paused:  # its run's state at the rung stays, for a promotion
        if files is not None:
            files.discard_resumed()
        return _finish(study, trial, TrialState.PRUNED, reason=(Reason.PAUSED, str(paused)))
    except optuna.TrialPruned as pruned:
        _discard_unless_lost(files, stores, trial)
        return _finish(study, trial, TrialState.PRUNED, reason=(Reason.PRUNED, str(pruned)))
    except TrialFailure as failure:
        _discard_unless_lost(files, stores, trial)
        return _finish(study, trial, TrialState.FAIL, reason=_explained(failure, stores.states))
    _discard_unless_lost(files, stores, trial)
    patiently("recording the result", attrs.write_result, trial, result)
    values = [getattr(result, name) for name in config.study.objectives]
    if stores.models is None or model_file is None:
        return _finish(study, trial, TrialState.COMPLETE, values=values)
    # Kept before the tell (Optuna writes no attribute of a finished trial), dropped after it.
    patiently("keeping the model", stores.models.keep_if_worth_it, study, trial, values, model_file)
    finished = _finish(study, trial, TrialState.COMPLETE, values=values)
    patiently("dropping stale models", stores.models.drop_stale, study)
    return finished


def _with_states(
    config: RunSpec, files: StateFiles | None, curves: Curves, study: str, number: int
) -> tuple[RunSpec, int]:
    """The run's config with its state files, and the tokens where it takes over the run it
    resumes (0 for a fresh run). It takes that run's learning curve over too, and a retry
    that starts over drops the lost run's."""
    points = curves.take_over(study, files.resumed_trial if files is not None else None, number)
    if files is None:
        return config, 0
    resume = str(files.resume) if files.resume is not None else None
    config = replace(config, train=replace(config.train, save_state=str(files.save), resume_from=resume))
    return config, points[-1].tokens if points else 0


class _Judge:
    """Decides, at each evaluation, whether the trial goes on (raises TrialPruned if not)."""

    def __init__(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        config: HpoConfig,
        curves: Curves,
        rungs: list[int],
        budget_tokens: int | None,
        after_tokens: int = 0,
    ) -> None:
        self.study, self.trial, self.curves, self.rungs = study, trial, curves, rungs
        self.budget_tokens = budget_tokens
        self.pruner, self.objectives = config.pruner, config.study.objectives
        self.reports = config.pruner.is_optunas  # the study's Optuna pruner judges
        self.last_tokens = after_tokens

    def __call__(self, event: EvalEvent) -> None:
        previous, self.last_tokens = self.last_tokens, event.tokens
        if self.reports:
            self.trial.report(getattr(event, self.objectives[0]), step=event.tokens)
            if self.trial.should_prune():
                message = f"{self.pruner.name} pruner at {event.tokens:,} tokens"
                self._prune(event.tokens, event, optuna.TrialPruned(message))
        for rung in self.rungs:
            if previous < rung <= event.tokens:
                trials = self.study.get_trials(deepcopy=False)
                points = rung_points(trials, self.curves, self.study.study_name, rung, self.pruner, self.objectives)
                pruner, number = self.pruner, self.trial.number
                judged = " and ".join(pruner.rung_fields(self.objectives))
                if pruner.pause:
                    if number not in promotable(points, pruner.eta):
                        top = len(points) // pruner.eta
                        message = f"rung {rung:,} tokens: paused, not in the top {top} of {len(points)} by {judged}"
                        self._prune(rung, event, _Paused(message))
                elif not keeps(points, number, pruner.eta, pruner.min_trials, pruner.keep_front):
                    message = f"rung {rung:,} tokens: not in the top 1/{pruner.eta} of {len(points)} by {judged}"
                    self._prune(rung, event, optuna.TrialPruned(message))

    def _prune(self, rung: int, event: EvalEvent, verdict: optuna.TrialPruned) -> None:
        attrs.write_rung(self.trial, RungRecord(rung, event, self.budget_tokens))
        raise verdict


class _Paused(optuna.TrialPruned):
    """A rung's verdict with `pruner.pause`: stopped for now, resumable (hpo.search.promotion)."""


def _discard_unless_lost(files: StateFiles | None, stores: TrialStores, trial: optuna.Trial) -> None:
    """The run has ended: its states go, unless another worker found the trial lost meanwhile
    (a frozen worker, woken): then its retry resumes from them, and this run is dropped."""
    if patiently("reading the trial's state", stores.storage.get_trial, trial_id(trial)).state.is_finished():
        raise _Lost
    _discard(files)


def _discard(files: StateFiles | None) -> None:
    """The trial has ended: no retry will resume it (Ctrl-C and dead workers keep the files)."""
    if files is not None:
        files.discard()


def _finish(
    study: optuna.Study,
    trial: optuna.Trial,
    state: TrialState,
    values: list[float] | None = None,
    reason: tuple[Reason, str] | None = None,
) -> FrozenTrial:
    """Tell the trial's outcome, waiting out a database outage; _Lost if another worker
    failed it as lost meanwhile."""

    def tell() -> FrozenTrial:
        if reason is not None:
            attrs.write_reason(trial, *reason)
        try:
            return study.tell(trial, values=values, state=state)
        except ValueError:  # "Cannot tell a FAIL trial": failed as stale since the attributes were written
            if study_storage(study).get_trial(trial_id(trial)).state.is_finished():
                raise _Lost from None
            raise

    return patiently("telling the trial's outcome", tell)


# How a write to a full disk reads in a rank's error: the OS's ENOSPC, or torch.save's stream
# writer when a write came up short ("unexpected pos N vs M").
_DISK_FULL_SIGNS = ("No space left on device", "[Errno 28]", "unexpected pos")


def _explained(failure: TrialFailure, states: StateFolder | None) -> tuple[Reason, str]:
    """A failed run's reason; a full disk is named as such, with the folder of the trial's
    states and the space left on it. The run's exception crosses a process boundary as text
    (hpo.trainer.launch), hence the match."""
    if failure.reason != Reason.CRASHED or not any(sign in failure.message for sign in _DISK_FULL_SIGNS):
        return failure.reason, failure.message
    if states is None:
        return Reason.DISK_FULL, f"no space left on a disk the run writes to: {failure.message}"
    try:
        free = f"{shutil.disk_usage(states.path).free / 2**20:,.1f} MiB free once its state was deleted"
    except OSError:
        free = "its free space unknown"
    message = f"no space left on the disk of the state folder {states.path} ({free}): {failure.message}"
    return Reason.DISK_FULL, message
