"""Workers behind Optuna's gRPC storage proxy (`hpo proxy`, `--storage grpc://HOST:PORT`).

A real proxy process serves a real SQLite or PostgreSQL database; real `hpo worker`
processes reach it only through gRPC, with heartbeats, learning curves and device leases
in their proxy-side forms (hpo.store.grpc, hpo.store.curves, hpo.store.leases).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from browse_helpers import figures_of
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from study_helpers import (
    FAST_HEARTBEAT,
    alive,
    assert_user_error,
    describe,
    free_port,
    hpo,
    hpo_ok,
    kill_tree,
    load,
    process_tree,
    resume_processes,
    running_trial,
    start_hpo,
    tiny,
    training_processes,
    wait_for,
)

from hpo.browse.figures import GRAPH_IDS
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent
from hpo.store.curves import AttrCurves, CurveStore
from hpo.store.leases import FileLeases
from hpo.store.storage import open_storage

pytestmark = [pytest.mark.timeout(600)]


def _connect(url: str) -> optuna.storages.BaseStorage | None:
    try:
        return open_storage(url)
    except HpoError:
        return None


@pytest.fixture
def proxy(storage_url: str) -> Iterator[str]:
    """`hpo proxy` on the test's database; yields its grpc:// URL."""
    url = f"grpc://127.0.0.1:{free_port()}"
    server = start_hpo("proxy", "--storage", storage_url, "--port", url.rsplit(":", 1)[1], "--figures-every", "1")
    try:
        wait_for(lambda: server.poll() is not None or _connect(url), timeout=60, what="the proxy to answer")
        assert server.poll() is None, server.communicate()
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            out, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate()
    assert "Traceback" not in err, err
    assert out.startswith(f"gRPC storage proxy for {storage_url} on {url}"), out


def _start_worker(name: str, proxy_url: str, lease_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HPO_LEASE_DIR": str(lease_dir)}
    return start_hpo("worker", name, "--storage", proxy_url, "--quiet", env=env)


def _finish(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, f"exit {worker.returncode}\n{out}\n{err}"
        assert "Traceback" not in err and "warning" not in err, err


def test_workers_behind_the_proxy_run_exactly_the_target(storage_url: str, proxy: str, tmp_path: Path) -> None:
    name = "proxied"
    hpo_ok("run", *tiny(name, 5), "--storage", storage_url, "--create-only")
    _finish([_start_worker(name, proxy, tmp_path / "leases") for _ in range(3)])

    trials = load(storage_url, name).get_trials()
    assert len({t.number for t in trials}) == len(trials)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
    # the only other trials are claims of the last slots that lost the race, holding none
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs["failure_reason"] == "surplus" for t in others), others
    for trial in trials:
        if trial.state == TrialState.COMPLETE:
            points = sorted(k for k in trial.system_attrs if k.startswith(AttrCurves.PREFIX))
            assert len(points) == 2  # train.evals=2: the learning curve went through the proxy
            assert trial.system_attrs["hpo:heartbeat"] > trial.datetime_start.timestamp() - 60
    # the study reads the same through the proxy as from the database
    shown = hpo_ok("show", name, "--storage", proxy)
    assert shown.stdout == hpo_ok("show", name, "--storage", storage_url).stdout


def test_the_proxy_draws_the_figures_of_proxied_studies(storage_url: str, proxy: str, tmp_path: Path) -> None:
    """Workers behind the proxy hold no study lock, so the proxy draws the dashboard figures."""
    name = "proxied-figures"
    hpo_ok("run", *tiny(name, 3), "--storage", storage_url, "--create-only")
    _finish([_start_worker(name, proxy, tmp_path / "leases") for _ in range(2)])

    def drawn() -> dict[str, dict] | None:
        figures = figures_of(load(storage_url, name))
        return figures if len(figures.get("hypervolume", {"data": [{"y": []}]})["data"][0]["y"]) == 3 else None

    figures = wait_for(drawn, timeout=60, what="the proxy to draw the figures of all 3 trials")
    assert sorted(figures) == sorted(GRAPH_IDS)
    curves = {trace["name"] for trace in figures["learning-curves"]["data"]}
    assert curves == {f"trial {n}" for n in range(3)}  # from the curves the workers sent through the proxy


def test_pruning_behind_the_proxy_reads_rungs_from_trial_attributes(sqlite_url: str, tmp_path: Path) -> None:
    """MO-ASHA through the proxy: its rung decisions need every trial's learning curve.

    Six trials can all sit on their rungs' first fronts, and then none is pruned (it
    happened in CI), so the first two are set: the second is wider (slower) with a tenth
    of the learning rate, dominated at its first rung."""
    name = "proxied-asha"
    strict = ("pruner=moasha", "pruner.min_trials=2", "pruner.eta=2", "pruner.keep_front=false")
    dominated = "study.baselines=[{n_head: 2, lr: 1.0e-2}, {n_head: 4, lr: 1.0e-3}]"
    overrides = tiny(name, 6, *strict, dominated, "budget.tokens=40000")
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--create-only")
    url = f"grpc://127.0.0.1:{free_port()}"
    server = start_hpo("proxy", "--storage", sqlite_url, "--port", url.rsplit(":", 1)[1])
    try:
        wait_for(lambda: _connect(url), timeout=60, what="the proxy to answer")
        _finish([_start_worker(name, url, tmp_path / "leases")])
    finally:
        server.kill()
        server.communicate()
    trials = load(sqlite_url, name).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state.name) for t in trials]
    for trial in pruned:
        assert trial.user_attrs["failure_reason"] == "pruned"
        assert trial.user_attrs["rung"]["rung_tokens"] < 40000


def _event(step: int, tokens: int, accuracy: float) -> EvalEvent:
    return EvalEvent(step, tokens, 3.0, 2.9, accuracy, 1000.0 + step)


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_attribute_curves_answer_as_the_table_does(storage_url: str, proxy: str) -> None:
    through_proxy = open_storage(proxy)
    study = optuna.create_study(storage=through_proxy, study_name="curves", directions=["maximize", "maximize"])
    table, attrs = CurveStore(open_storage(storage_url).engine), AttrCurves(through_proxy)
    curves = {0: [_event(1, 100, 0.1), _event(2, 200, 0.2)], 1: [_event(1, 150, 0.3)], 2: []}
    for number, events in curves.items():
        study.ask()
        for event in reversed(events):  # written in any order, read back by step
            table.record("curves", number, event)
            attrs.record("curves", number, event)
    for store in (table, attrs):
        assert store.curves("curves") == {0: curves[0], 1: curves[1]}
        assert store.curve("curves", 0) == curves[0]
        assert store.curve("curves", 2) == []
        assert store.at_rung("curves", 120) == {0: curves[0][1], 1: curves[1][0]}
        assert store.at_rung("curves", 100) == {0: curves[0][0], 1: curves[1][0]}
        assert store.at_rung("curves", 201) == {}


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_retry_shows_the_lost_runs_points_only_when_it_resumes_that_run(storage_url: str, proxy: str) -> None:
    through_proxy = open_storage(proxy)
    study = optuna.create_study(storage=through_proxy, study_name="retries", directions=["maximize", "maximize"])
    table, attrs = CurveStore(open_storage(storage_url).engine), AttrCurves(through_proxy)
    lost, points = study.ask(), [_event(1, 100, 0.1), _event(2, 200, 0.2)]
    for store in (table, attrs):
        for event in points:
            store.record("retries", lost.number, event)
    study.tell(lost, state=TrialState.FAIL)
    for _ in range(2):  # Optuna's retry copies the lost trial's system attributes, points included
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, through_proxy.get_trial(lost._trial_id))
    resuming, fresh = study.ask(), study.ask()
    for store in (table, attrs):
        assert store.take_over("retries", lost.number, resuming.number) == points
        assert store.take_over("retries", None, fresh.number) == []
        assert store.curve("retries", resuming.number) == points
        assert store.curve("retries", fresh.number) == []
        assert store.at_rung("retries", 150) == {lost.number: points[1], resuming.number: points[1]}


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_killed_worker_behind_the_proxy_is_retried_and_frees_its_devices(
    storage_url: str, proxy: str, tmp_path: Path
) -> None:
    name = "proxied-crash"
    leases = tmp_path / "leases"
    hpo_ok("run", *tiny(name, 2, "budget.tokens=150000", *FAST_HEARTBEAT), "--storage", storage_url, "--create-only")
    victim = _start_worker(name, proxy, leases)
    tree: list = []
    training: list = []
    try:
        # Its first trial's training process, suspended as soon as it is seen: the trial cannot
        # end before the kill, however fast or slow this machine is.
        training = wait_for(
            lambda: victim.poll() is not None or training_processes(victim.pid), timeout=300, what="a trial training"
        )
        assert isinstance(training, list), f"the worker exited {victim.returncode}: {victim.communicate()}"
        for process in training:
            process.suspend()
        running = wait_for(lambda: running_trial(storage_url, name, after_complete=0), timeout=60, what="its trial")
        tree = process_tree(victim.pid)
        held = FileLeases(leases).held()
        assert sorted(held) == sorted(running.user_attrs["devices"])
        assert all(owner.endswith(f":{name}:{running.number}") for owner in held.values())
        os.kill(victim.pid, signal.SIGKILL)
        # A suspended process cannot notice that its parent died, and it holds the worker's
        # output pipes open: resumed, it exits, and the pipes close.
        resume_processes(training)
        victim.communicate(timeout=60)
        wait_for(lambda: not alive(tree), timeout=30, what="the killed worker's processes to exit")
    finally:
        resume_processes(training)
        kill_tree(tree)
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert FileLeases(leases).held() == {}  # the kernel dropped the dead worker's locks
    assert load(storage_url, name).trials[running.number].state == TrialState.RUNNING

    # a new worker waits out the grace period, fails the stale trial and runs it again
    _finish([_start_worker(name, proxy, leases)])
    study = load(storage_url, name)
    assert study.trials[running.number].state == TrialState.FAIL
    (retry,) = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == running.number]
    assert retry.state == TrialState.COMPLETE and retry.params == study.trials[running.number].params
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_worker_waits_for_a_missing_proxy_then_gives_up_in_one_line() -> None:
    result = hpo("worker", "any", "--wait", "2", "--storage", f"grpc://127.0.0.1:{free_port()}")
    assert result.returncode == 2, describe(result)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("waiting up to 2 s for the database at grpc://127.0.0.1:"), describe(result)
    assert lines[-1].startswith("error: no gRPC storage proxy answers at grpc://127.0.0.1:"), describe(result)
    assert "hpo proxy --storage" in lines[-1] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("worker", "x", "--storage", "grpc://proxyhost"), "grpc://HOST:PORT"),
        (("studies", "--storage", "grpc://h:1/db"), "grpc://HOST:PORT"),
        (("proxy", "--storage", "grpc://127.0.0.1:1"), "a proxy serves a database"),
        (("proxy", "--storage", "mysql://u@h/db"), "unsupported database"),
        (("proxy", "--figures-every", "-5"), "--figures-every -5 is negative"),
    ],
)
def test_bad_proxy_input_is_one_error_line(args: tuple[str, ...], fragment: str) -> None:
    assert_user_error(hpo(*args, timeout=60), fragment)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--port", "70000"), "--port=70000 must be between 1 and 65535"),
        (("--host", "nosuch.invalid"), "--host=nosuch.invalid is not an address of this machine"),
    ],
)
def test_proxy_on_a_bad_address_is_one_error_line(sqlite_url: str, args: tuple[str, ...], fragment: str) -> None:
    assert_user_error(hpo("proxy", "--storage", sqlite_url, *args, timeout=60), fragment)


def test_proxy_on_a_taken_port_is_one_error_line(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(hpo("proxy", "--storage", sqlite_url, "--port", str(port), timeout=60), f"{port}", "--port")
