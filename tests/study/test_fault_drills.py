"""Fault drills: real `hpo` processes on real databases, with the faults a long study meets.

The database restarts under two workers; a worker freezes past its grace period and wakes
up after its trial was retried elsewhere; the state folder's disk is full; a worker gets
SIGTERM. Each drill signals at a known point (a trial training, with a saved evaluation),
never racing the end of a trial, and checks that the study ends with exactly its target.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from localpg import PostgresServer, restart_server
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from study_helpers import (
    FAST_HEARTBEAT,
    alive,
    describe,
    hpo_ok,
    kill_tree,
    load,
    pause_once_saved,
    process_tree,
    resume_processes,
    start_hpo,
    tiny,
    trials,
    wait_for,
    wait_while_running,
)

from hpo.browse.notes import trial_note
from hpo.browse.results import show_text
from hpo.record.attrs import MESSAGE, REASON
from hpo.record.outcome import Reason
from hpo.store.curves import open_curves
from hpo.store.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

# Long enough that a trial still trains for seconds after its first saved evaluation.
TRAINING = ("budget.tokens=200000", "train.evals=4")


def _first_point(url: str, name: str) -> FrozenTrial | None:
    """A RUNNING trial that has saved its state at an evaluation (its first curve point)."""
    try:
        running = [t for t in trials(url, name) if t.state == TrialState.RUNNING]
    except KeyError:
        return None
    curves = open_curves(open_storage(url))
    return next((t for t in running if curves.curve(name, t.number)), None)


def _catch(process: subprocess.Popen[str], url: str, name: str) -> FrozenTrial:
    """Wait until a trial of `process` has a saved evaluation; fail if the process exits first."""

    found = wait_while_running(process, lambda: _first_point(url, name), 120, "a trial with a saved evaluation", 0.2)
    assert isinstance(found, FrozenTrial)
    return found


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a drill started: whatever is left of them is killed (SIGCONT first)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            tree = process_tree(process.pid)
            for p in alive(tree):
                p.resume()
            kill_tree(tree)
            process.communicate()


def _assert_exactly(url: str, name: str, n: int) -> optuna.Study:
    """Exactly `n` COMPLETE trials, none running or waiting, no configuration run twice."""
    study = load(url, name)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == n, [(t.number, t.state.name, t.user_attrs.get(REASON)) for t in study.trials]
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    origins = [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in done]
    assert len([o for o in origins if o is not None]) == len({o for o in origins if o is not None})
    assert len({tuple(sorted(t.params.items())) for t in done}) == n  # no configuration ran twice
    return study


def test_postgres_restart_under_two_workers(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path, cleanup: list
) -> None:
    name = "restart"
    # a grace period longer than the outage: the workers wait for the database, and no trial turns stale
    overrides = tiny(name, 4, *TRAINING, "storage.heartbeat_interval=1", "storage.grace_period=15")
    states = f"storage.states={tmp_path / 'states'}"
    process = start_hpo("run", *overrides, states, "--n-workers", "2", "--storage", postgres_url, "--quiet")
    cleanup.append(process)
    _catch(process, postgres_url, name)
    restart_server(postgres_server, down_s=3.0)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err and "exited with status" not in err, err
    study = _assert_exactly(postgres_url, name, 4)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]  # no trial lost, retried or run twice


def test_frozen_worker_late_result_is_dropped(postgres_url: str, tmp_path: Path, cleanup: list) -> None:
    name = "frozen"
    overrides = tiny(name, 1, *TRAINING, *FAST_HEARTBEAT, f"storage.states={tmp_path / 'states'}")
    frozen = start_hpo("run", *overrides, "--storage", postgres_url, "--quiet")
    cleanup.append(frozen)
    lost = _catch(frozen, postgres_url, name)
    os.killpg(frozen.pid, signal.SIGSTOP)  # the worker and its training process
    try:
        # another worker finds the trial stale, fails it as worker_lost and runs its retry to the end
        hpo_ok("worker", name, "--storage", postgres_url, "--quiet")
        retry_before = _assert_exactly(postgres_url, name, 1)
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    out, err = frozen.communicate(timeout=120)
    assert frozen.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    assert "dropped" in err, err  # the late result is dropped with a warning
    study = _assert_exactly(postgres_url, name, 1)
    assert study.trials == retry_before.trials  # the retry's record is untouched
    first = study.trials[lost.number]
    assert first.state == TrialState.FAIL and first.user_attrs[REASON] == Reason.WORKER_LOST
    assert "retried" in first.user_attrs[MESSAGE]
    (retry,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == lost.number
    assert retry.user_attrs["resumed_at_tokens"] > 0  # it went on from the frozen run's state
    # `hpo show` and the trial's dashboard note say why and where it was lost
    assert "worker_lost" in show_text(study)
    note = trial_note(first, ["val_accuracy"])
    assert "worker_lost" in note and first.user_attrs["host"] in note


def test_full_state_disk_fails_the_trial_and_the_study_goes_on(sqlite_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "full"
    folder.mkdir()
    try:
        mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)]
        subprocess.run(mount, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        name = "full"
        result = hpo_ok("run", *tiny(name, 2, f"storage.states={folder}"), "--storage", sqlite_url, "--quiet")
        assert "Traceback" not in result.stderr, describe(result)
        study = load(sqlite_url, name)
        assert [t.state for t in study.trials] == [TrialState.FAIL] * 2  # the study went on past the first
        for trial in study.trials:
            assert trial.user_attrs[REASON] == Reason.DISK_FULL
            assert str(folder) in trial.user_attrs[MESSAGE]
        assert "2 disk_full" in show_text(study)
        assert not os.listdir(folder)  # nothing of the failed runs is left to fill it
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


def _training(url: str, name: str) -> list[int]:
    """The numbers of the study's trials that train (none before the study exists)."""
    try:
        return [t.number for t in trials(url, name) if t.state == TrialState.RUNNING and "devices" in t.user_attrs]
    except KeyError:
        return []


def test_sigterm_to_a_run_of_two_workers_stops_its_helper_too(sqlite_url: str, cleanup: list) -> None:
    """A process manager signals the process it started, not its group: `hpo run --n-workers 2`
    passes the SIGTERM on, and its helper worker stops its trial as it does (it ran the study
    on alone before, until the target or a kill 60 s later)."""
    name = "terminated-pair"
    # Trials far longer than the test: both still train when the signal comes, however slow the machine.
    endless = tiny(name, 4, "budget.tokens=100000000")
    process = start_hpo("run", "--n-workers", "2", *endless, "--storage", sqlite_url, "--quiet")
    cleanup.append(process)

    def both() -> list[int] | None:
        training = _training(sqlite_url, name)
        return training if len(training) == 2 else None

    running = wait_while_running(process, both, timeout=180, what="two trials training")
    tree = process_tree(process.pid)
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    wait_for(lambda: not alive(tree), timeout=30, what=f"processes {alive(tree)} to exit")
    assert process.returncode == 143, f"{out}\n{err}"
    assert "Traceback" not in err and "worker process(es) exited" not in err, err
    after = load(sqlite_url, name).trials
    for number in running:
        assert after[number].state == TrialState.FAIL and after[number].user_attrs[REASON] == Reason.INTERRUPTED
        assert "SIGTERM" in after[number].user_attrs[MESSAGE]
    waiting = [t for t in after if t.state == TrialState.WAITING]
    assert sorted(RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in waiting) == sorted(running)
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.COMPLETE) and t.number > max(running)]


def test_sigterm_requeues_the_trial_and_resume_finishes(sqlite_url: str, cleanup: list) -> None:
    name = "terminated"
    process = start_hpo("run", *tiny(name, 1, *TRAINING), "--storage", sqlite_url, "--quiet")
    cleanup.append(process)
    # Its one trial, suspended as soon as it trains and let go in bursts until it saved an
    # evaluation: stopped mid-run, however fast or loaded this machine is.
    training, _ = pause_once_saved(sqlite_url, name, process, 0)
    running = load(sqlite_url, name).trials[0]
    tree = process_tree(process.pid)
    os.kill(process.pid, signal.SIGTERM)  # the worker alone, as `kill` or a process manager does
    resume_processes(training)
    out, err = process.communicate(timeout=120)
    wait_for(lambda: not alive(tree), timeout=30, what=f"processes {alive(tree)} to exit")
    assert process.returncode == 143, f"{out}\n{err}"
    assert "Traceback" not in err, err
    stopped = load(sqlite_url, name).trials[running.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[REASON] == Reason.INTERRUPTED
    assert "SIGTERM" in stopped.user_attrs[MESSAGE]
    waiting = [t for t in load(sqlite_url, name).trials if t.state == TrialState.WAITING]
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in waiting] == [running.number]
    hpo_ok("resume", name, "--storage", sqlite_url, "--quiet")
    study = _assert_exactly(sqlite_url, name, 1)
    assert study.trials[-1].user_attrs["resumed_at_tokens"] > 0
