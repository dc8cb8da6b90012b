"""Studies end to end: real `hpo` processes, real SQLite and PostgreSQL databases, real training.

Every trial is tiny (tests/study_helpers.py: about a second on 2 cores), so these tests check
what a study records and how it survives crashes, Ctrl-C and concurrent workers, not how well
the models learn. No test asserts a duration: other work shares the machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from study_helpers import (
    FAST_HEARTBEAT,
    alive,
    assert_user_error,
    describe,
    hpo_ok,
    kill_tree,
    load,
    pause_once_saved,
    process_tree,
    resume_processes,
    saved_points,
    start_hpo,
    states,
    study_snapshot,
    tiny,
    training_processes,
    trials,
    wait_for,
)
from study_helpers import hpo as run_hpo

import hpo
from hpo.browse.results import show_text, studies_table
from hpo.record.attrs import REASON, TARGET, target
from hpo.record.outcome import EvalEvent, Reason
from hpo.study.slots import counted_trials

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]

# A trial with evaluations from a quarter of its budget on. The tests that stop one mid-way suspend its
# training process once it has saved an evaluation (study_helpers.pause_once_saved), so its length needs no margin
# for a slow or busy machine.
LONG_TOKENS = 120_000
LONG_TRIAL = (f"budget.tokens={LONG_TOKENS}", "train.evals=4")
# Every metric a complete trial stores, with the environment it ran in.
TRIAL_ATTRS = (
    "val_accuracy",
    "val_loss",
    "train_loss",
    "tokens_per_sec",
    "params",
    "flops_per_token",
    "achieved_flops",
    "peak_flops",
    "mfu",
    "peak_memory_bytes",
    "steps",
    "tokens",
    "wall_time_s",
    "train_time_s",
    "eval_time_s",
    "overhead_s",
    "device",
    "device_name",
    "n_devices",
    "dtype",
    "torch_version",
    "hpo_version",
    "optuna_version",
    "host",
    "seed",
    "config",
    "curve",
    "sample",
    "data_fingerprint",
)


def by_number(url: str, name: str) -> dict[int, FrozenTrial]:
    return {t.number: t for t in trials(url, name)}


def complete(url: str, name: str) -> list[FrozenTrial]:
    return [t for t in trials(url, name) if t.state == TrialState.COMPLETE]


def assert_nothing_running(url: str, name: str) -> None:
    left = [t.number for t in trials(url, name) if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not left, f"trials left running or waiting: {left}"


def assert_complete_record(trial: FrozenTrial) -> None:
    """One complete trial holds both objectives and every metric."""
    assert trial.state == TrialState.COMPLETE
    accuracy, throughput = trial.values
    assert 0.0 < accuracy < 1.0
    assert throughput > 0.0
    missing = [key for key in TRIAL_ATTRS if key not in trial.user_attrs]
    assert not missing, f"trial {trial.number} lacks user attrs {missing}"
    attrs = trial.user_attrs
    assert attrs["val_accuracy"] == accuracy and attrs["tokens_per_sec"] == throughput
    assert attrs["params"] > 0 and attrs["flops_per_token"] > 0 and attrs["achieved_flops"] > 0
    assert attrs["peak_memory_bytes"] > 0
    assert attrs["wall_time_s"] > 0 and attrs["overhead_s"] >= 0
    assert attrs["wall_time_s"] >= attrs["train_time_s"]
    assert attrs["mfu"] is None or attrs["mfu"] > 0
    assert attrs["n_devices"] == 1 and attrs["device"] in ("cpu", "cuda") and attrs["device_name"]
    assert attrs["hpo_version"] == hpo.__version__
    assert attrs["optuna_version"] == optuna.__version__
    assert attrs["torch_version"] and attrs["host"]
    assert attrs["tokens"] >= 20_000 and attrs["steps"] >= 1
    assert isinstance(attrs["sample"], str)
    assert trial.constraints == {"infeasible": 0.0}
    # the resolved training config: the tiny overrides, and the width derived from the head count
    config = attrs["config"]
    assert config["model"]["n_layer"] == 1
    assert config["model"]["n_embd"] == 16 * trial.params["n_head"] == 16 * config["model"]["n_head"]
    assert config["optim"]["lr"] == trial.params["lr"]
    assert config["budget"]["tokens"] == 20_000
    assert config["train"]["seed"] == attrs["seed"]
    # the learning curve, one point per evaluation, ending at the final accuracy
    curve = attrs["curve"]
    assert len(curve) == 2
    assert set(curve[0]) == {"step", "tokens", "train_loss", "val_loss", "val_accuracy", "tokens_per_sec"}
    assert curve[-1]["val_accuracy"] == accuracy
    assert curve[0]["tokens"] < curve[-1]["tokens"]


# --------------------------------------------------------------------------------------------------
# A finished study, on each backend, shared by the tests that only read it


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def finished(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(url, name) of a 3-trial study that `hpo run` completed."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('finished')}/hpo.db"
    else:
        server = request.getfixturevalue("postgres_server")
        database = server.create_database("finished")
        request.addfinalizer(lambda: server.drop_database(database))
        url = server.url(database)
    result = hpo_ok("run", *tiny("finished", 3), "--storage", url, "--quiet")
    assert result.stdout == "", describe(result)  # --quiet: nothing on stdout
    return url, "finished"


def test_run_completes_the_target(finished: tuple[str, str]) -> None:
    url, name = finished
    study = load(url, name)
    assert [(t.number, t.state) for t in study.trials] == [(n, TrialState.COMPLETE) for n in range(3)]
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MAXIMIZE]
    assert study.metric_names == ["val_accuracy", "tokens_per_sec"]
    assert counted_trials(study) == 3


def test_study_describes_itself(finished: tuple[str, str]) -> None:
    url, name = finished
    attrs = load(url, name).user_attrs
    assert {"hpo_config", "data_fingerprint", "hpo_version", "n_trials"} <= set(attrs)
    assert attrs["hpo_version"] == hpo.__version__
    assert attrs["n_trials"] == 3
    assert isinstance(attrs["data_fingerprint"], str) and len(attrs["data_fingerprint"]) >= 32
    config = attrs["hpo_config"]
    assert config["study"]["name"] == name and config["study"]["n_trials"] == 3
    assert config["train"]["budget"]["tokens"] == 20_000
    assert config["search_space"]["n_layer"] == 1
    assert config["search_space"]["lr"] == {"low": 1e-3, "high": 1e-2, "log": True}
    assert config["sampler"]["name"] == "tpe"


def test_every_trial_records_every_metric(finished: tuple[str, str]) -> None:
    url, name = finished
    fingerprint = load(url, name).user_attrs["data_fingerprint"]
    for trial in trials(url, name):
        assert_complete_record(trial)
        assert trial.user_attrs["data_fingerprint"] == fingerprint
        assert set(trial.params) == {"n_head", "lr"}  # fixed values are in the config, not params
    seeds = [t.user_attrs["seed"] for t in trials(url, name)]
    assert len(set(seeds)) == len(seeds)  # each trial trains from its own seed


def test_studies_lists_it(finished: tuple[str, str]) -> None:
    url, name = finished
    out = hpo_ok("studies", "--storage", url).stdout
    (row,) = [line for line in out.splitlines() if line.startswith(name)]
    assert "3/3" in row
    assert "val_accuracy" in row and "tokens_per_sec" in row


def test_show_prints_the_front(finished: tuple[str, str]) -> None:
    url, name = finished
    out = hpo_ok("show", name, "--storage", url).stdout
    assert f"study {name}: Pareto front" in out
    assert "best val_accuracy: trial" in out and "best tokens_per_sec: trial" in out
    front = {t.number for t in load(url, name).best_trials}
    assert front
    for number in front:
        assert any(line.split()[:1] == [str(number)] for line in out.splitlines())


def test_export_json(finished: tuple[str, str]) -> None:
    url, name = finished
    records = json.loads(hpo_ok("export", name, "--storage", url, "--format", "json").stdout)
    assert isinstance(records, list) and len(records) == 3
    stored = by_number(url, name)
    for record in records:
        assert {"number", "state", "values", "params", "user_attrs"} <= set(record)
        trial = stored[record["number"]]
        assert record["state"] == "COMPLETE"
        assert record["values"] == pytest.approx(trial.values)
        assert record["params"] == trial.params
        assert record["user_attrs"]["val_accuracy"] == trial.values[0]
        assert len(record["user_attrs"]["curve"]) == 2


def test_export_csv(finished: tuple[str, str]) -> None:
    url, name = finished
    text = hpo_ok("export", name, "--format", "csv", "--storage", url).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    header = list(rows[0])
    assert header[:4] == ["number", "state", "val_accuracy", "tokens_per_sec"]
    assert {"lr", "n_head", "params", "mfu", "wall_time_s"} <= set(header)
    assert not {"curve", "config", "sample"} & set(header)  # nested and long values stay in JSON
    stored = by_number(url, name)
    for row in rows:
        trial = stored[int(row["number"])]
        assert row["state"] == "COMPLETE"
        assert float(row["val_accuracy"]) == pytest.approx(trial.values[0])
        assert float(row["tokens_per_sec"]) == pytest.approx(trial.values[1])
        assert float(row["lr"]) == pytest.approx(trial.params["lr"])


BROWSE = """
import sys
from hpo.cli import main

for argv, status in {commands!r}:
    assert main(argv) == status, argv
print("torch loaded:", "torch" in sys.modules)
"""


def test_browsing_commands_never_import_torch(finished: tuple[str, str]) -> None:
    """`hpo studies | show | export` only read the database, and `hpo proxy` only serves it;
    torch would add a second to each, and hundreds of megabytes to a long-lived proxy."""
    url, name = finished
    commands = [
        (["studies", "--storage", url], 0),
        (["show", name, "--storage", url], 0),
        (["export", name, "--storage", url, "--format", "csv"], 0),
        (["proxy", "--storage", url, "--figures-every", "-1"], 2),  # a user error: it serves nothing
    ]
    result = subprocess.run(
        [sys.executable, "-c", BROWSE.format(commands=commands)], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "torch loaded: False"


# --------------------------------------------------------------------------------------------------
# Resume


@pytest.mark.timeout(600)
def test_resume_continues_from_the_database(storage_url: str, tmp_path: Path) -> None:
    name = "resumed"
    hpo_ok("run", *tiny(name, 3), "--storage", storage_url, "--quiet")
    first = {t.number: t.values for t in complete(storage_url, name)}
    # from another directory, with no overrides: everything comes from the database
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = hpo_ok("resume", name, "--n-trials", "2", "--storage", storage_url, cwd=elsewhere).stdout
    assert f"resuming {name}" in out and "3/5 trials" in out
    study = load(storage_url, name)
    assert [(t.number, t.state) for t in study.trials] == [(n, TrialState.COMPLETE) for n in range(5)]
    assert study.user_attrs["n_trials"] == 5
    assert {t.number: t.values for t in study.trials[:3]} == first
    for trial in study.trials:
        assert_complete_record(trial)  # the tiny config, read back from the stored study
    assert not list(elsewhere.iterdir())  # no default hpo.db appeared beside the command
    # a second resume has nothing left to do: the raised target is kept
    hpo_ok("resume", name, "--storage", storage_url, "--quiet")
    study = load(storage_url, name)
    assert len(study.trials) == 5 and study.user_attrs["n_trials"] == 5


@pytest.mark.timeout(600)
def test_resume_with_more_workers_runs_exactly_the_new_trials(sqlite_url: str) -> None:
    # the joining `hpo worker` reads the stored config (n_trials=1): it must keep the raised target
    name = "resumed-k"
    hpo_ok("run", *tiny(name, 1), "--storage", sqlite_url, "--quiet")
    result = hpo_ok("resume", name, "--n-trials", "3", "--n-workers", "2", "--storage", sqlite_url, "--quiet")
    assert "warning" not in result.stderr, describe(result)
    study = load(sqlite_url, name)
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.user_attrs["n_trials"] == 4


def test_a_study_stored_by_an_earlier_hpo_continues_with_new_draws(sqlite_url: str) -> None:
    name = "older"
    hpo_ok("run", *tiny(name, 1), "--storage", sqlite_url, "--quiet")
    study = load(sqlite_url, name)
    stored = study.user_attrs["hpo_config"]
    del stored["pruner"]["pause"], stored["storage"]["states"], stored["train"]["train"]["save_state"]
    study.set_user_attr("hpo_config", stored)  # as hpo stored it before it had these keys
    hpo_ok("resume", name, "--n-trials", "1", "--storage", sqlite_url, "--quiet")
    hpo_ok("run", *tiny(name, 3), "--storage", sqlite_url, "--quiet")  # the same overrides continue it too
    trials = load(sqlite_url, name).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    # each run's sampler starts past the trials the study holds: no random draw is made twice
    assert len({t.params["lr"] for t in trials}) == 3


def test_rerun_of_the_same_study_continues_it(sqlite_url: str) -> None:
    name = "again"
    hpo_ok("run", *tiny(name, 1), "--storage", sqlite_url, "--quiet")
    hpo_ok("run", *tiny(name, 2), "--storage", sqlite_url, "--quiet")  # same study, a higher target
    assert states(sqlite_url, name) == {0: "COMPLETE", 1: "COMPLETE"}
    assert load(sqlite_url, name).user_attrs["n_trials"] == 2


# --------------------------------------------------------------------------------------------------
# Crashes and Ctrl-C


def _start_and_pause_trial_1(url: str, name: str, *extra: str) -> tuple[subprocess.Popen, FrozenTrial, list, list]:
    """Start `hpo run` on a 2-trial study and pause trial 1 once it saved an evaluation
    (study_helpers.pause_once_saved): the worker, trial 1 as it stands, its suspended
    training process and the points it saved."""
    process = start_hpo("run", *tiny(name, 2, *LONG_TRIAL, *FAST_HEARTBEAT, *extra), "--storage", url, "--quiet")
    try:
        training, points = pause_once_saved(url, name, process, 1)
    except BaseException:
        kill_tree(process_tree(process.pid))
        process.communicate()
        raise
    return process, load(url, name).trials[1], training, points


def _assert_resumed(url: str, name: str, lost: FrozenTrial, points: list[EvalEvent], folder: Path) -> None:
    """The retry of `lost` went on from its saved state, and the states are gone."""
    study = load(url, name)
    (retry,) = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == lost.number]
    assert retry.state == TrialState.COMPLETE and retry.params == lost.params
    assert retry.user_attrs["seed"] == lost.user_attrs["seed"]  # it trains as the lost trial did
    # it took over at the lost run's last saved evaluation (the kill may have come after a later one)
    assert retry.user_attrs["resumed_at_tokens"] >= points[-1].tokens > 0
    assert retry.user_attrs["tokens"] >= LONG_TOKENS  # LONG_TRIAL's budget, in whole steps, all told
    curve = [EvalEvent(**point) for point in retry.user_attrs["curve"]]
    assert curve[: len(points)] == points  # the lost run's points, then the retry's
    assert saved_points(url, name, retry.number)[: len(points)] == points
    assert folder.is_dir() and not list(folder.iterdir())  # every trial ended: no state is left


@pytest.mark.timeout(600)
def test_killed_worker_trial_is_retried_from_its_state(storage_url: str, tmp_path: Path) -> None:
    name = "crash"
    # SQLite keeps the states beside the database; PostgreSQL's workers name a folder they share
    folder = Path(storage_url.removeprefix("sqlite:///") + "-states") if storage_url.startswith("sqlite") else None
    extra = () if folder else (f"storage.states={tmp_path / 'shared'}",)
    folder = folder or tmp_path / "shared"
    process, running, training, points = _start_and_pause_trial_1(storage_url, name, *extra)
    tree: list = []
    try:
        tree = process_tree(process.pid)
        assert len(tree) >= 3  # the worker, the forkserver, the training process (+ resource tracker)
        before = {t.number: t.values for t in complete(storage_url, name)}
        assert before and running.number not in before
        os.kill(process.pid, signal.SIGKILL)
        resume_processes(training)  # it holds the worker's output pipes, and must run to see its parent gone
        process.communicate(timeout=60)
        # the training child watches its parent: nothing of this run outlives the worker
        wait_for(lambda: not alive(tree), timeout=30, what=f"processes {alive(tree)} to exit")
    finally:
        kill_tree(tree)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert states(storage_url, name)[running.number] == "RUNNING"  # a zombie until its heartbeat is stale
    # a SQLite study keeps its models beside the database; the killed worker's checkpoints stay behind
    models = Path(storage_url.removeprefix("sqlite:///") + "-artifacts") if storage_url.startswith("sqlite") else None
    assert models is None or list(models.glob(".running-*"))

    # resume waits out the grace period, fails the stale trial and runs it again
    hpo_ok("resume", name, "--storage", storage_url, "--quiet")
    assert models is None or not list(models.glob(".running-*"))  # the next worker on this host swept them
    study = load(storage_url, name)
    trials_now = {t.number: t for t in study.trials}
    killed = trials_now[running.number]
    assert killed.state == TrialState.FAIL
    # why, where and since when: the worker that found it stale wrote it before failing it
    assert killed.user_attrs["failure_reason"] == "worker_lost"
    assert killed.user_attrs["host"] in killed.user_attrs["failure_message"]
    assert "worker_lost" in hpo_ok("show", name, "--storage", storage_url).stdout
    retries = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == running.number]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.number > running.number
    assert retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == running.number
    assert retry.params == killed.params  # the same configuration, run again
    _assert_resumed(storage_url, name, killed, points, folder)
    assert_nothing_running(storage_url, name)
    # the target counts outcomes: the complete ones, not the lost one
    assert counted_trials(study) == study.user_attrs["n_trials"] == 2
    assert len(complete(storage_url, name)) == 2
    for number, values in before.items():  # no completed trial was lost
        assert trials_now[number].state == TrialState.COMPLETE
        assert trials_now[number].values == values


CLAIM_AND_DIE = """
import os, sys
from hpo.store.storage import open_storage
from hpo.record.attrs import DATA_FINGERPRINT, TARGET
from hpo.store.locks import study_lock
from hpo.study.lifecycle import create_or_continue, load_existing
from hpo.study.slots import counted_trials
from hpo.study.worker import claim

url, name = sys.argv[1], sys.argv[2]
study, config = load_existing(name, open_storage(url), url)
storage = open_storage(url, config.storage)
study = create_or_continue(config, storage, study.user_attrs[DATA_FINGERPRINT])
with study_lock(storage, name):  # what `hpo resume NAME --n-trials 1` does
    study.set_user_attr(TARGET, counted_trials(study) + 1)
trial = claim(study, storage, poll=1.0)
print(trial.number, flush=True)
os._exit(9)  # the worker dies the moment it has claimed the trial
"""


@pytest.mark.timeout(600)
def test_worker_dying_right_after_its_claim_does_not_stall_the_study(sqlite_url: str) -> None:
    name = "claimed"
    hpo_ok("run", *tiny(name, 1, *FAST_HEARTBEAT), "--storage", sqlite_url, "--quiet")
    died = subprocess.run(
        [sys.executable, "-c", CLAIM_AND_DIE, sqlite_url, name],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert died.returncode == 9, died.stderr
    claimed = int(died.stdout)
    assert states(sqlite_url, name)[claimed] == "RUNNING"
    # the claimed trial must turn stale like any other, or every worker would wait for it forever
    hpo_ok("resume", name, "--storage", sqlite_url, "--quiet", timeout=180)
    study = load(sqlite_url, name)
    assert study.trials[claimed].state == TrialState.FAIL
    later = study.trials[claimed + 1 :]
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in later] == [claimed]
    assert len(complete(sqlite_url, name)) == 2
    assert_nothing_running(sqlite_url, name)


@pytest.mark.timeout(600)
def test_ctrl_c_fails_the_running_trial_and_the_next_run_resumes_it(sqlite_url: str) -> None:
    name = "interrupted"
    process, running, training, points = _start_and_pause_trial_1(sqlite_url, name)
    tree: list = []
    try:
        before = {t.number: t.values for t in complete(sqlite_url, name)}
        tree = process_tree(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole group
        resume_processes(training)
        out, err = process.communicate(timeout=120)
        wait_for(lambda: not alive(tree), timeout=30, what=f"processes {alive(tree)} to exit")
    finally:
        kill_tree(tree)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, f"{out}\n{err}"
    assert "Traceback" not in err
    assert "interrupted" in err
    after = by_number(sqlite_url, name)
    stopped = after[running.number]
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["failure_reason"] == "interrupted"
    # queued again, as a dead worker's trial is; nothing is left running
    waiting = [t for t in after.values() if t.state == TrialState.WAITING]
    assert [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in waiting] == [running.number]
    assert not waiting[0].user_attrs  # the stopped run's record stays with it
    assert [t.number for t in after.values() if t.state == TrialState.RUNNING] == []
    for number, values in before.items():
        assert after[number].state == TrialState.COMPLETE and after[number].values == values
    # an interrupted trial does not use up a slot: resume runs it again, from where it stopped
    hpo_ok("resume", name, "--storage", sqlite_url, "--quiet")
    study = load(sqlite_url, name)
    assert len(complete(sqlite_url, name)) == 2
    assert counted_trials(study) == 2
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    _assert_resumed(sqlite_url, name, stopped, points, Path(sqlite_url.removeprefix("sqlite:///") + "-states"))
    assert_nothing_running(sqlite_url, name)


# --------------------------------------------------------------------------------------------------
# Concurrent workers


def _assert_exact(url: str, name: str, n: int) -> None:
    study = load(url, name)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert sorted(numbers) == list(range(n)), numbers  # no more trials than requested
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * n
    assert_nothing_running(url, name)


@pytest.mark.timeout(600)
def test_four_workers_on_postgres_run_exactly_the_target(postgres_url: str) -> None:
    name = "four"
    result = hpo_ok("run", *tiny(name, 8), "--n-workers", "4", "--storage", postgres_url, "--quiet")
    assert "warning" not in result.stderr, describe(result)
    _assert_exact(postgres_url, name, 8)
    # each trial trained on one leased core of this machine
    cores = set(os.sched_getaffinity(0))
    for trial in trials(postgres_url, name):
        (device,) = trial.user_attrs["devices"]
        assert trial.user_attrs["device"] != "cpu" or device in cores


@pytest.mark.timeout(600)
def test_two_workers_on_sqlite_run_exactly_the_target(sqlite_url: str) -> None:
    name = "two"
    result = hpo_ok("run", *tiny(name, 4), "--n-workers", "2", "--storage", sqlite_url, "--quiet")
    assert "warning" not in result.stderr, describe(result)
    _assert_exact(sqlite_url, name, 4)


@pytest.mark.timeout(600)
def test_workers_run_exactly_the_target_of_a_study_that_holds_2000_trials(postgres_url: str) -> None:
    """Each claim counts the study's slots in SQL, under the lock: with 2,000 trials already in
    the study (some lost to Ctrl-C or given back by a proxied worker, which hold no slot)
    three workers still run exactly the trials asked for."""
    name = "big"
    hpo_ok("run", *tiny(name, 1, "sampler=random"), "--storage", postgres_url, "--create-only")
    study = load(postgres_url, name)
    held = [
        optuna.trial.create_trial(
            state=TrialState.COMPLETE if i % 20 else TrialState.FAIL,
            values=[0.2, 1000.0 + i] if i % 20 else None,
            user_attrs={} if i % 20 else {"failure_reason": "surplus" if i % 40 else "interrupted"},
        )
        for i in range(2000)
    ]
    study.add_trials(held)
    hpo_ok("resume", name, "--n-trials", "4", "--n-workers", "3", "--storage", postgres_url, "--quiet")
    study = load(postgres_url, name)
    new = study.trials[2000:]
    assert [t.number for t in new] == [2000, 2001, 2002, 2003]
    assert [t.state for t in new] == [TrialState.COMPLETE] * 4
    assert counted_trials(study) == target(study) == 1900 + 4
    assert_nothing_running(postgres_url, name)


# --------------------------------------------------------------------------------------------------
# Failed, timed-out and infeasible trials are recorded, and the study goes on


def test_diverging_trial_fails_and_the_study_goes_on(sqlite_url: str) -> None:
    name = "diverging"
    overrides = tiny(
        name,
        2,
        "optim.grad_clip=0",
        "search_space.lr={low: 1.0e-3, high: 1.0e4, log: true}",
        "study.baselines=[{n_head: 2, lr: 1.0e4}, {n_head: 2, lr: 1.0e-3}]",
    )
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--quiet")
    first, second = trials(sqlite_url, name)
    assert first.params["lr"] == 1.0e4
    assert first.state == TrialState.FAIL
    assert first.user_attrs["failure_reason"] == "diverged"
    assert "diverged at step" in first.user_attrs["failure_message"]
    assert first.values is None
    assert second.state == TrialState.COMPLETE and second.params["lr"] == 1.0e-3
    assert_complete_record(second)
    out = hpo_ok("show", name, "--storage", sqlite_url).stdout
    assert "not completed: 1 diverged" in out
    records = json.loads(hpo_ok("export", name, "--storage", sqlite_url, "--format", "json").stdout)
    assert [r["state"] for r in records] == ["FAIL", "COMPLETE"]
    assert records[0]["values"] is None and records[1]["values"] is not None


def test_trial_timeout_fails_the_trial(sqlite_url: str) -> None:
    name = "slow"
    overrides = tiny(name, 1, "study.trial_timeout=1", "budget.tokens=20000000", "train.evals=1")
    process = start_hpo("run", *overrides, "--storage", sqlite_url, "--quiet")
    tree: list = []
    try:
        wait_for(lambda: process.poll() is not None or training_processes(process.pid), 180, "the trial")
        tree = process_tree(process.pid) if process.poll() is None else []
        out, err = process.communicate(timeout=240)
    finally:
        kill_tree(tree)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"{out}\n{err}"
    (trial,) = trials(sqlite_url, name)
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["failure_reason"] == "timeout"
    assert "per-trial timeout of 1 s" in trial.user_attrs["failure_message"]
    assert not alive(tree)  # the timed-out training process was killed


def test_infeasible_devices_are_pruned_with_a_constraint(sqlite_url: str) -> None:
    name = "too-many-devices"
    overrides = tiny(
        name,
        2,
        "search_space.n_devices={choices: [1, 64]}",
        "study.baselines=[{n_head: 2, lr: 0.003, n_devices: 64}, {n_head: 2, lr: 0.003, n_devices: 1}]",
    )
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--quiet")
    first, second = trials(sqlite_url, name)
    assert first.params["n_devices"] == 64
    assert first.state == TrialState.PRUNED
    assert first.user_attrs["failure_reason"] == "infeasible"
    assert "n_devices=64" in first.user_attrs["failure_message"]
    assert first.constraints["infeasible"] > 0
    assert "config" not in first.user_attrs  # rejected before any training
    assert second.state == TrialState.COMPLETE and second.constraints["infeasible"] <= 0
    # the Pareto front holds feasible trials only
    assert [t.number for t in load(sqlite_url, name).best_trials] == [1]


def test_infeasible_memory_is_pruned_with_a_constraint(sqlite_url: str) -> None:
    name = "too-big"
    # A batch of 4096 needs an estimated 2.4-4.1 GiB, one of 16 under 0.02 GiB: the limit rules
    # out the first only (one that ruled out every trial would be refused before the study).
    space = ("search_space.batch_size={choices: [16, 4096]}", "study.baselines=[{batch_size: 4096}]")
    hpo_ok("run", *tiny(name, 1, *space, "resources.memory_limit_gb=1"), "--storage", sqlite_url, "--quiet")
    (trial,) = trials(sqlite_url, name)
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["failure_reason"] == "infeasible"
    assert "memory" in trial.user_attrs["failure_message"]
    assert trial.constraints["infeasible"] > 0
    out = hpo_ok("studies", "--storage", sqlite_url).stdout
    assert "0/1" in out  # none complete of a target of one


# --------------------------------------------------------------------------------------------------
# Samplers and baselines


@pytest.mark.parametrize("sampler", ["tpe", "tpe+share", "nsga2", "nsga3", "gp", "random"])
def test_sampler_runs_a_study_from_its_baseline(sampler: str, sqlite_url: str) -> None:
    name = f"with-{sampler}"
    optuna_sampler, share = sampler.split("+")[0], sampler.endswith("+share")
    n_trials = 3 if sampler.startswith("nsga") else 2
    overrides = tiny(
        name,
        n_trials,
        f"sampler={optuna_sampler}",
        "sampler.n_startup_trials=1",  # the model-based samplers model from trial 1 on
        "sampler.population_size=2",  # NSGA's second generation starts at trial 2
        *(["sampler.random_fraction=0.5"] if share else []),
        "study.baselines=[{n_head: 2, lr: 0.003}]",
    )
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--quiet")
    study = load(sqlite_url, name)
    assert study.user_attrs["hpo_config"]["sampler"]["name"] == optuna_sampler
    assert study.user_attrs["hpo_config"]["sampler"].get("random_fraction", 0.0) == (0.5 if share else 0.0)
    assert study.trials[0].params == {"n_head": 2, "lr": 0.003}
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * n_trials
    for trial in study.trials:
        assert trial.params["n_head"] in (2, 4)
        assert 1e-3 <= trial.params["lr"] <= 1e-2


# --------------------------------------------------------------------------------------------------
# Passwords never leak


@pytest.mark.timeout(600)
def test_password_never_printed_or_stored(postgres_password_url: str, postgres_password: str) -> None:
    url = postgres_password_url
    name = "secret"
    outputs = [
        # the URL as an override, so the stored config holds it; not quiet, so it names the storage;
        # a helper worker receives the URL through its environment
        hpo_ok("run", *tiny(name, 2), f"storage.url='{url}'", "--n-workers", "2"),
        hpo_ok("studies", "--storage", url),
        hpo_ok("show", name, "--storage", url),
        hpo_ok("export", name, "--format", "json", env={"HPO_STORAGE": url}),
    ]
    assert "hpo:***@" in outputs[0].stdout  # the storage is named, its password hidden
    failing = [
        run_hpo("resume", "missing", "--storage", url),
        run_hpo("studies", "--storage", url.rsplit("/", 1)[0] + "/no_such_database"),
        run_hpo("run", *tiny(name, 2), "search_space.lr=0.001", "--storage", url),
    ]
    for result in failing:
        assert_user_error(result)
    for result in outputs + failing:
        assert postgres_password not in result.stdout + result.stderr, describe(result)
    # nor is it kept in the study, where optuna-dashboard would show it
    study = load(url, name)
    assert postgres_password not in json.dumps(study.user_attrs)
    for trial in study.trials:
        assert postgres_password not in json.dumps(trial.user_attrs)
        assert postgres_password not in json.dumps(trial.system_attrs, default=str)


# --------------------------------------------------------------------------------------------------
# Bad input: one `error:` line, exit 2, the database untouched


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite database holding study `base` with one complete trial."""
    url = f"sqlite:///{tmp_path_factory.mktemp('existing')}/hpo.db"
    hpo_ok("run", *tiny("base", 1), "--storage", url, "--quiet")
    return url


BASE = tuple(tiny("base", 1))
BAD_INPUT = [
    ("unknown-option", ("run", *BASE, "model=nope"), "Could not find 'model/nope'"),
    ("unknown-key", ("run", *BASE, "model.depth=3"), "unknown config key model.depth"),
    ("not-key-value", ("run", *BASE, "study.n_trials"), "not key=value"),
    ("malformed-override", ("run", *BASE, "study.n_trials=["), "malformed override"),
    ("empty-range", ("run", *BASE, "search_space.lr={low: 0.01, high: 0.01}"), "empty or inverted"),
    ("inverted-range", ("run", *BASE, "search_space.n_layer={low: 3, high: 1}"), "empty or inverted"),
    ("baseline-outside", ("run", *BASE, "study.baselines=[{n_layer: 4}]"), "study.baselines[0].n_layer"),
    ("zero-workers", ("run", *BASE, "--n-workers", "0"), "--n-workers=0"),
    ("malformed-url", ("run", *BASE, "--storage", "notaurl://x"), "storage URL"),
    (
        "unreachable-db",
        ("run", *BASE, "--storage", "postgresql+psycopg://u:p@127.0.0.1:1/db"),
        "cannot open storage",
    ),
    ("resume-missing", ("resume", "nope"), "study 'nope' does not exist"),
    ("resume-overrides", ("resume", "base", "study.n_trials=5"), "unrecognized arguments"),
    (
        "changed-space",
        ("run", *BASE, "search_space.lr={low: 1.0e-3, high: 2.0e-2, log: true}"),
        "exists with a different config (search_space.lr",
    ),
]


@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_error_line(existing: str, args: tuple[str, ...], fragment: str) -> None:
    before = study_snapshot(existing)
    if "--storage" not in args:
        args = (*args, "--storage", existing)
    line = assert_user_error(run_hpo(*args), fragment)
    assert "p@127" not in line  # an unreachable URL's password is hidden too
    assert study_snapshot(existing) == before


def test_changed_data_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 600)
    name = "on-file"
    overrides = tiny(name, 1, f"data.source={corpus}")
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--quiet")
    assert load(sqlite_url, name).user_attrs["hpo_config"]["train"]["data"]["source"] == str(corpus)
    corpus.write_text("a lazy dog jumps over the quick brown fox. " * 600)
    before = study_snapshot(sqlite_url)
    for args in (("resume", name, "--n-trials", "1"), ("run", *tiny(name, 2, f"data.source={corpus}"))):
        assert_user_error(run_hpo(*args, "--storage", sqlite_url), "fingerprint")
        assert study_snapshot(sqlite_url) == before


def test_surplus_claims_are_not_failures(sqlite_url: str) -> None:
    """A proxied worker's given-back claim is bookkeeping: `studies` and `show` leave it out."""
    study = optuna.create_study(study_name="claims", storage=sqlite_url, directions=["maximize", "maximize"])
    study.set_user_attr(TARGET, 2)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1000.0]))
    for reason in ("crashed", Reason.SURPLUS):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={REASON: reason}))
    row = studies_table(study._storage).splitlines()[-1].split()
    assert row[:5] == ["claims", "1/2", "0", "0", "1"], row
    assert "not completed: 1 crashed" in show_text(study)


def test_show_measures_what_pruning_saved(sqlite_url: str) -> None:
    """Tokens count as trained: a complete trial's budget, a pruned one's up to its rung;
    an infeasible configuration and a failure trained nothing that the study records."""
    study = optuna.create_study(study_name="saved", storage=sqlite_url, directions=["maximize", "maximize"])
    budget = {"config": {"budget": {"tokens": 1000}}}
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1000.0], user_attrs={**budget, "tokens": 1000}))
    rung = {"rung_tokens": 200, **asdict(EvalEvent(20, 200, 3.0, 3.0, 0.1, 1000.0))}  # as hpo writes it
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={**budget, "rung": rung}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={REASON: "infeasible"}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={REASON: "crashed"}))
    assert show_text(study).endswith(
        "complete and pruned trials trained 1,200 tokens; "
        "stopping 1 of them early saved 800 more, 40% of the study's cost without pruning"
    )
