"""Shared helpers for the study-layer tests: tiny trials and real `hpo` processes.

Every study in these tests trains real GPTs, made tiny (one layer, 16-wide heads, a
20k-token budget, one CPU thread) so a trial lasts about a second on a quiet 2-core
machine. Nothing is mocked: `hpo(...)` runs `python -m hpo` as its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import psutil

from hpo.record.outcome import EvalEvent
from hpo.store.curves import open_curves
from hpo.store.storage import open_storage

# A trial of about a second: one thread, so concurrent tests and workers share 2 cores fairly.
TINY: tuple[str, ...] = (
    "experiment=smoke",
    "budget.tokens=20000",
    "train.evals=2",
    "train.sample_tokens=16",
    "train.threads=1",
    "data.val_tokens=1024",
    "search_space.n_layer=1",
    "search_space.head_dim=16",
    "search_space.batch_size=16",
    "search_space.n_devices=1",
    # the two searched parameters, pinned here so the tests do not follow edits of smoke.yaml
    "search_space.n_head={choices: [2, 4]}",
    "search_space.lr={low: 1.0e-3, high: 1.0e-2, log: true}",
)

# Dead workers are noticed within seconds instead of the default half-minute.
FAST_HEARTBEAT = ("storage.heartbeat_interval=1", "storage.grace_period=3")

# Seconds a single `hpo` command may take before a test gives up on it.
COMMAND_TIMEOUT = 240


def tiny(name: str, n_trials: int = 2, *extra: str) -> list[str]:
    """Overrides for a tiny study named `name` with a target of `n_trials`."""
    return [*TINY, f"study.name={name}", f"study.n_trials={n_trials}", *extra]


def hpo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpo", *args]


def hpo(
    *args: str,
    timeout: float = COMMAND_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m hpo ARGS...` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        hpo_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def hpo_ok(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`hpo(...)` that must exit 0; the failure message shows what the command printed."""
    result = hpo(*args, **kwargs)
    assert result.returncode == 0, describe(result)
    return result


def _as_a_terminal_starts_it() -> None:
    """Ctrl-C reaches a command that a terminal starts. A suite started in the background
    by a script (`pytest &`) ignores SIGINT, and without this its commands would too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_hpo(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start `python -m hpo ARGS...` in a session of its own (so its group can be signalled)."""
    return subprocess.Popen(
        hpo_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=_as_a_terminal_starts_it,
        **popen,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}: {' '.join(map(str, result.args))}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, exactly one stderr line, starting `error:`, no traceback; returns the line."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr + result.stdout, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("error:"), describe(result)
    for fragment in fragments:
        assert fragment in lines[0], describe(result)
    return lines[0]


def load(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return load(url, name).get_trials(deepcopy=False)


def states(url: str, name: str) -> dict[int, str]:
    return {t.number: t.state.name for t in trials(url, name)}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def wait_while_running(
    process: subprocess.Popen[str], condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """`wait_for(condition)` while `process` runs; if it exits first, an AssertionError with its output."""
    exited = object()
    found = wait_for(lambda: exited if process.poll() is not None else condition(), timeout, what, interval)
    if found is exited:
        out, err = process.communicate()
        raise AssertionError(f"hpo exited {process.returncode} before {what}:\n{out}\n{err}")
    return found


def running_trial(url: str, name: str, after_complete: int = 1) -> optuna.trial.FrozenTrial | None:
    """A RUNNING trial that has begun training (it holds its devices, its heartbeat beats),
    once at least `after_complete` trials are complete; else None."""
    try:
        all_trials = trials(url, name)
    except KeyError:  # the study does not exist yet
        return None
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < after_complete:
        return None
    for t in all_trials:
        if t.state == optuna.trial.TrialState.RUNNING and "devices" in t.user_attrs:
            return t
    return None


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def alive(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those still running: gone and zombie processes (exited, not yet reaped) are not."""
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            continue
    return left


def kill_tree(processes: Sequence[psutil.Process]) -> None:
    """Clean-up after a failed test: SIGKILL whatever of these processes is left."""
    _to_each_alive(processes, psutil.Process.kill)


def _to_each_alive(processes: Sequence[psutil.Process], act: Callable[[psutil.Process], None]) -> None:
    """`act` on each process still there; one that exits meanwhile is passed over."""
    for process in alive(processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            act(process)


def sqlite_snapshot(url: str) -> list[str]:
    """Every row of a SQLite database as SQL text, to compare before and after a command."""
    path = url.removeprefix("sqlite:///")
    if not os.path.exists(path):
        return []
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def study_snapshot(url: str) -> str:
    """Every study of a database with its attributes and trials, as comparable JSON."""
    summaries = optuna.get_all_study_summaries(url)
    out = []
    for summary in sorted(summaries, key=lambda s: s.study_name):
        study = load(url, summary.study_name)
        out.append(
            {
                "name": study.study_name,
                "user_attrs": study.user_attrs,
                "trials": [
                    {
                        "number": t.number,
                        "state": t.state.name,
                        "values": t.values,
                        "params": t.params,
                        "user_attrs": t.user_attrs,
                        "system_attrs": t.system_attrs,
                    }
                    for t in study.get_trials(deepcopy=False)
                ],
            }
        )
    return json.dumps(out, sort_keys=True, default=str)


def saved_points(url: str, name: str, number: int) -> list[EvalEvent]:
    """The learning curve that trial `number` recorded: it saved its state at each point."""
    return open_curves(open_storage(url)).curve(name, number)


def training_processes(worker_pid: int) -> list:
    """The worker's descendants that are not its own children: the training process."""
    try:
        return [p for p in process_tree(worker_pid)[1:] if p.ppid() != worker_pid]
    except psutil.NoSuchProcess:
        return []


def suspended_training(url: str, name: str, worker: subprocess.Popen, number: int) -> list:
    """Trial `number`'s training process, suspended (SIGSTOP) the moment it shows.

    Each new training process is suspended first and asked about after: a worker claims a
    trial before it starts the trial's process, so the trial RUNNING then is the one it
    trains. An earlier trial's process is let go again. Polling the database for the trial
    instead could miss a short trial on a loaded machine."""
    seen: set[int] = set()

    def caught() -> list | None:
        fresh = [process for process in training_processes(worker.pid) if process.pid not in seen]
        seen.update(process.pid for process in fresh)
        suspend_processes(fresh)
        if not fresh:
            return None
        running = [t.number for t in trials(url, name) if t.state == optuna.trial.TrialState.RUNNING]
        if running == [number]:
            return fresh
        resume_processes(fresh)
        return None

    return wait_while_running(worker, caught, timeout=300, what=f"trial {number}'s training process", interval=0.02)


def pause_once_saved(url: str, name: str, worker: subprocess.Popen, number: int) -> tuple[list, list[EvalEvent]]:
    """Suspend trial `number`'s training process as soon as it starts and let it run in 50 ms
    bursts until it has saved an evaluation; return it, suspended, and the points it saved.
    The trial is then stopped mid-run on any machine, however fast: no test races its end."""
    training = suspended_training(url, name, worker, number)

    def saved() -> list[EvalEvent] | None:
        points = saved_points(url, name, number)
        if points:
            return points
        resume_processes(training)
        time.sleep(0.05)
        suspend_processes(training)
        return None

    return training, wait_for(saved, timeout=120, what="a saved evaluation", interval=0)


def suspend_processes(processes: list) -> None:
    """SIGSTOP to those still there."""
    _to_each_alive(processes, psutil.Process.suspend)


def resume_processes(processes: list) -> None:
    """SIGCONT to those still there (a suspended process cannot notice that its parent died)."""
    _to_each_alive(processes, psutil.Process.resume)
