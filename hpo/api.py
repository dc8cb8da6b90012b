"""hpo from Python: what the `hpo` command does, as functions (`import hpo` exposes them:
the names of `hpo.__all__`).

    import hpo

    config = hpo.compose_config(["experiment=smoke", "study.name=mine"])
    study = hpo.run_study(config, storage="sqlite:///mine.db")
    results = hpo.load_results("mine", storage="sqlite:///mine.db")

The `hpo` command is a thin layer over these: it parses arguments, calls one of them and
prints what it returns. A storage of None means what the command's default means:
`storage.url` of the config, else $HPO_STORAGE, else sqlite:///hpo.db.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from hpo.browse.publisher import Publisher
from hpo.browse.results import StudyResults, study_results
from hpo.config.compose import compose, hpo_config
from hpo.config.settings import HpoConfig
from hpo.config.training import RunSpec
from hpo.errors import TERMINATED, HpoError
from hpo.record.attrs import DATA_FINGERPRINT, TARGET
from hpo.record.outcome import EvalEvent, TrialResult
from hpo.store.locks import study_lock
from hpo.store.storage import Storage, open_storage, resolve_url, wait_for_storage
from hpo.study import reuse
from hpo.study.lifecycle import create_or_continue, find_study, load_existing
from hpo.study.models import models_of
from hpo.study.slots import counted_trials

# torch (through hpo.trainer, and hpo.study.objective and .worker, which run trials) is
# imported by the functions that train or read data, not here: a mistake in a config or a
# flag is one error line in half a second, not after a second of importing torch.

optuna.logging.set_verbosity(optuna.logging.WARNING)

OnTrial = Callable[[FrozenTrial], None]
OnStart = Callable[[optuna.Study], None]


def compose_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> HpoConfig:
    """The validated config of `study_configs/` (and `config_dir`) with `key=value` overrides."""
    return hpo_config(compose(list(overrides), config_dir=config_dir))


def create_study(config: HpoConfig, storage: str | None = None) -> optuna.Study:
    """The study of `config.study.name`, created, or continued if it exists as configured.

    Everything is checked before the study exists: the config, the database, the data.
    """
    return _create(config, storage)[0]


def run_study(
    config: HpoConfig,
    storage: str | None = None,
    *,
    n_workers: int = 1,
    timeout: float | None = None,
    on_start: OnStart | None = None,
    on_trial: OnTrial | None = None,
) -> optuna.Study:
    """Create (or continue) the study of `config` and run it to its trial target with
    `n_workers` processes; `on_start` sees the study before its first trial, `on_trial`
    each trial this process finishes."""
    _check_workers(n_workers)
    _check_timeout(timeout)
    _check_some_trial_runs(config)  # here: `--create-only` may make a GPU study on a CPU host
    study, opened, url = _create(config, storage)
    _work(study, opened, config, url, n_workers=n_workers, timeout=timeout, on_start=on_start, on_trial=on_trial)
    return study


def resume_study(
    name: str,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    n_workers: int = 1,
    timeout: float | None = None,
    on_start: OnStart | None = None,
    on_trial: OnTrial | None = None,
) -> optuna.Study:
    """Continue a stored study from the database alone, to its target or `n_trials` more."""
    _check_workers(n_workers)
    _check_timeout(timeout)
    if n_trials is not None and n_trials < 1:
        raise HpoError(f"--n-trials={n_trials} must be at least 1")
    stored, config, url = _stored(name, storage)
    opened = open_storage(url, config.storage, must_exist=True)  # with the study's own heartbeat settings
    study = create_or_continue(config, opened, stored.user_attrs[DATA_FINGERPRINT])
    if n_trials is not None:
        with study_lock(opened, study.study_name):
            study.set_user_attr(TARGET, counted_trials(study) + n_trials)
    _work(study, opened, config, url, n_workers=n_workers, timeout=timeout, on_start=on_start, on_trial=on_trial)
    return study


def join_study(
    name: str,
    storage: str | None = None,
    *,
    wait: float = 60.0,
    timeout: float | None = None,
    on_start: OnStart | None = None,
    on_trial: OnTrial | None = None,
) -> int:
    """Run trials of a stored study as one more worker (as `hpo worker` does); returns how
    many ran. The database may still be starting: it is waited for up to `wait` seconds."""
    _check_timeout(timeout)
    if wait < 0:
        raise HpoError(f"--wait={wait:g} must be 0 or more seconds (0: do not wait for the database)")
    from hpo.study.objective import patiently

    url = resolve_url(storage)
    waited = wait_for_storage(url, timeout=wait)

    def join() -> tuple[optuna.Study, Storage, HpoConfig]:
        stored, config = load_existing(name, waited, url)
        _verify_data(stored, config)
        # Joining workers must not replay the first worker's sampler stream.
        opened = open_storage(url, config.storage, must_exist=True)
        fingerprint = stored.user_attrs[DATA_FINGERPRINT]
        return create_or_continue(config, opened, fingerprint, seed_offset=os.getpid()), opened, config

    # Once it answered, a database that restarts while this worker starts up is waited for,
    # as it is while trials run.
    study, opened, config = patiently("joining the study", join)
    if on_start is not None:
        patiently("starting the worker", on_start, study)
    return _run_here(study, opened, config, timeout, on_trial)


def _create(config: HpoConfig, storage: str | None) -> tuple[optuna.Study, Storage, str]:
    """The study of `config`, created or continued, with its opened storage and URL.

    What needs no database is checked before it is opened (which creates a SQLite file):
    the data (and, by the callers that run trials here, that some trial can run here)."""
    from hpo.study.objective import states_of
    from hpo.trainer.data import load_dataset

    url = resolve_url(storage, config.storage.url)
    fingerprint = load_dataset(config.data).fingerprint
    opened = open_storage(url, config.storage)
    states_of(opened, config)  # a setting this database cannot serve is an error before the study exists
    study = create_or_continue(config, opened, fingerprint)
    models_of(opened, config)  # its note (no folder to keep models in) follows the study's checks
    return study, opened, url


def _work(
    study: optuna.Study,
    opened: Storage,
    config: HpoConfig,
    url: str,
    *,
    n_workers: int,
    timeout: float | None,
    on_start: OnStart | None,
    on_trial: OnTrial | None,
) -> None:
    """Run the study's trials in this process, with K-1 more `hpo worker` processes."""
    if on_start is not None:
        on_start(study)
    env = {**os.environ, "HPO_STORAGE": url}  # the URL travels in the environment, not in `ps`
    command = [sys.executable, "-m", "hpo", "worker", study.study_name, "--quiet"]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    helpers = [subprocess.Popen(command, env=env) for _ in range(n_workers - 1)]
    try:
        _run_here(study, opened, config, timeout, on_trial)
    except KeyboardInterrupt as stop:
        # Ctrl-C reached the helpers with the terminal's process group; a SIGTERM (from `kill`,
        # a process manager) reached this process alone: the helpers stop their trials too.
        if stop.args == (TERMINATED,):
            for helper in helpers:
                helper.send_signal(signal.SIGTERM)  # a no-op for one that has exited
        raise
    finally:
        for helper in helpers:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()
    failed = [h.returncode for h in helpers if h.returncode not in (0, None)]
    if failed:
        print(f"warning: {len(failed)} worker process(es) exited with status {failed}", file=sys.stderr)


def _run_here(
    study: optuna.Study, opened: Storage, config: HpoConfig, timeout: float | None, on_trial: OnTrial | None
) -> int:
    """Run the study's trials in this process, each published to the dashboard when done."""
    from hpo.study.objective import patiently
    from hpo.study.worker import run_worker

    with patiently("opening the dashboard's publisher", Publisher, study, opened) as publish:

        def finished(trial: FrozenTrial) -> None:
            publish(trial)
            if on_trial is not None:
                on_trial(trial)

        return run_worker(study, opened, config, timeout=timeout, on_trial=finished)


def load_results(name: str, storage: str | None = None) -> StudyResults:
    """A stored study's trials, each with its values, parameters and records, and its front."""
    url = resolve_url(storage)
    return study_results(find_study(name, open_storage(url, must_exist=True), url))


def trial_config(name: str, number: int, overrides: Sequence[str] = (), storage: str | None = None) -> HpoConfig:
    """The config that trial `number` of study `name` trained (its seed included), with
    `overrides` on top: `train(trial_config(...))` trains that trial again.

    HpoError if the trial did not complete, or if its data changed since (unless the
    overrides name other data: then it is a new experiment, not a reproduction).
    """
    study, config, _ = _stored(name, storage, verify=False)
    retrained = reuse.trial_config(config, reuse.complete_trial(study, number), overrides, "--from-trial")
    if retrained.data == config.data:
        _verify_data(study, retrained)
    return retrained


def retrain_front(
    name: str,
    overrides: Sequence[str] = (),
    storage: str | None = None,
    *,
    n: int | None = None,
    n_workers: int = 1,
    timeout: float | None = None,
    on_start: OnStart | None = None,
    on_trial: OnTrial | None = None,
) -> optuna.Study:
    """Train the Pareto front of study `name` (its first `n` trials by the first objective)
    again, with `overrides` (typically a bigger budget), as a new study `NAME-retrain`
    (or `study.name=...`) whose trials each record the trial they train again."""
    _check_workers(n_workers)
    _check_timeout(timeout)
    source, config, url = _stored(name, storage)
    retrain = reuse.retrain_config(source, config, overrides, n)
    _check_some_trial_runs(retrain)
    fingerprint = source.user_attrs[DATA_FINGERPRINT]
    opened = open_storage(url, retrain.storage)
    study = reuse.create_retrain(source, retrain, opened, n, fingerprint)
    _work(study, opened, retrain, url, n_workers=n_workers, timeout=timeout, on_start=on_start, on_trial=on_trial)
    return study


def train(
    config: HpoConfig | RunSpec, on_eval: Callable[[EvalEvent], None] | None = None, *, pinned: bool = False
) -> TrialResult:
    """Train one configuration and return its measured result.

    An HpoConfig is checked against its resources first. `pinned` runs it as a study runs
    a trial: in child processes, each rank pinned to one leased CPU core (or GPU), so that
    its tokens/s compares with the study's trials; otherwise a one-device run trains in
    this process with every core.
    """
    from hpo.trainer.feasibility import infeasible_reason
    from hpo.trainer.hardware import device_pool
    from hpo.trainer.launch import TrialFailure, run_isolated
    from hpo.trainer.loop import train as train_in_process

    spec = config.training if isinstance(config, HpoConfig) else config
    if isinstance(config, HpoConfig):
        reason = infeasible_reason(spec, config.resources)
        if reason:
            raise HpoError(reason)
    if spec.train.n_devices == 1 and not pinned:
        return train_in_process(spec, on_eval=on_eval)
    devices = None
    if pinned:
        pool, _ = device_pool(config.resources if isinstance(config, HpoConfig) else HpoConfig().resources)
        devices = pool[: spec.train.n_devices]
    try:
        return run_isolated(spec, on_eval=on_eval, device_ids=devices)
    except TrialFailure as failure:
        raise HpoError(str(failure)) from None


def _stored(name: str, storage: str | None, verify: bool = True) -> tuple[optuna.Study, HpoConfig, str]:
    """A stored hpo study, its config and its URL; `verify`: HpoError unless its data is
    still what it was made on."""
    url = resolve_url(storage)
    study, config = load_existing(name, open_storage(url, must_exist=True), url)
    if verify:
        _verify_data(study, config)
    return study, config, url


def _verify_data(study: optuna.Study, config: HpoConfig) -> None:
    from hpo.trainer.data import load_dataset

    fingerprint = load_dataset(config.data).fingerprint
    if study.user_attrs.get(DATA_FINGERPRINT) != fingerprint:
        raise HpoError(
            f"study {study.study_name!r} was made on data with fingerprint "
            f"{str(study.user_attrs.get(DATA_FINGERPRINT))[:12]}, but {config.data.source!r} "
            f"now has {fingerprint[:12]}; restore the data or start a new study"
        )


def _check_some_trial_runs(config: HpoConfig) -> None:
    """HpoError if the settings every trial shares rule out every trial on this machine
    (a GPU it lacks, say): one error before the study exists, not a study of infeasible trials."""
    from hpo.trainer.feasibility import shared_infeasible_reason

    reason = shared_infeasible_reason(config.space, config.training, config.resources)
    if reason:
        fix = "" if ";" in reason else "; change the settings that rule it out, or search values that fit"
        raise HpoError(f"no trial of study {config.study.name!r} can run on this machine: {reason}{fix}")


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout > 0:
        raise HpoError(f"--timeout={timeout:g} must be greater than 0; give seconds, or leave it out")


def _check_workers(n: int) -> None:
    if n < 1:
        raise HpoError(f"--n-workers={n} must be at least 1")
