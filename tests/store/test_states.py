"""Trial states on disk: which file a trial saves to, and which one its retry resumes from.

The chain of retries runs through Optuna's own retry callback on a real SQLite study, as
when workers die; tests/test_study.py kills real workers and resumes their trials.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from hpo.config.compose import compose, hpo_config
from hpo.config.settings import StorageConfig
from hpo.store.states import StateFolder, state_folder
from hpo.store.storage import open_storage
from hpo.study.objective import states_of

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),  # hpo beats itself, not optimize
]


def _lost(study: optuna.Study, storage: optuna.storages.BaseStorage, trial: FrozenTrial) -> FrozenTrial:
    """Fail `trial` as a dead worker's, queue its retry as Optuna does, and start the retry."""
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback()(study, storage.get_trial(trial._trial_id))
    retry = study.ask()
    return storage.get_trial(retry._trial_id)


def test_a_retry_resumes_the_latest_state_of_the_runs_it_retries(sqlite_url: str, tmp_path: Path) -> None:
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage)
    folder = StateFolder(tmp_path / "states")
    first = storage.get_trial(study.ask()._trial_id)

    files = folder.claim(storage, first)
    assert files.resume is None and files.save.parent == folder.path and not files.save.exists()
    files.save.parent.mkdir()
    files.save.write_bytes(b"state at an evaluation")

    second = _lost(study, storage, first)
    resumed = folder.claim(storage, second)
    assert (resumed.resume, resumed.resumed_trial) == (files.save, first.number)
    assert resumed.save not in (files.save, None)
    # the second run dies before its first evaluation: the third still finds the first's state
    third = _lost(study, storage, second)
    again = folder.claim(storage, third)
    assert (again.resume, again.resumed_trial) == (files.save, first.number)

    again.save.write_bytes(b"a later state")
    again.save.with_name(again.save.name + ".partial").write_bytes(b"a save cut short")
    again.discard()  # the third run ended: no file is left for anyone
    assert not list(folder.path.iterdir())


def test_a_fresh_trial_resumes_nothing_even_where_states_exist(sqlite_url: str, tmp_path: Path) -> None:
    storage = open_storage(sqlite_url)
    study = optuna.create_study(storage=storage)
    folder = StateFolder(tmp_path)
    (tmp_path / "trial-0-0123456789ab.pt").write_bytes(b"left by a deleted study")
    files = folder.claim(storage, storage.get_trial(study.ask()._trial_id))
    assert files.resume is None and files.save.name != "trial-0-0123456789ab.pt"


def test_a_trial_that_used_up_its_retries_leaves_no_state(sqlite_url: str) -> None:
    """Workers die twice in the same trial, with one retry allowed: nothing will resume it."""
    storage = open_storage(sqlite_url, StorageConfig(heartbeat_interval=1, grace_period=2, max_retry=1))
    study = optuna.create_study(storage=storage)
    folder = states_of(storage, hpo_config(compose()))
    assert folder is not None
    folder.path.mkdir()
    trial = storage.get_trial(study.ask()._trial_id)
    for attempt in range(2):
        files = folder.claim(storage, trial)
        files.save.write_bytes(b"state at an evaluation")
        storage.record_heartbeat(trial._trial_id)  # the worker beats once, then dies
        deadline = time.monotonic() + 10  # stale after 2 to 3 s
        while storage.get_trial(trial._trial_id).state == TrialState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            optuna.storages.fail_stale_trials(study)
        waiting = study.get_trials(states=(TrialState.WAITING,))
        if attempt == 0:
            assert len(waiting) == 1 and files.save.is_file()  # kept for the retry
            trial = storage.get_trial(study.ask()._trial_id)
    assert not waiting and not list(folder.path.iterdir())


def test_where_states_are_kept(tmp_path: Path) -> None:
    database = str(tmp_path / "hpo.db")
    assert state_folder(StorageConfig(), database) == StateFolder(Path(database + "-states"))
    shared = StorageConfig(states=str(tmp_path / "shared"))
    assert state_folder(shared, database) == state_folder(shared, None) == StateFolder(tmp_path / "shared")
    assert state_folder(StorageConfig(), None) is None  # PostgreSQL: workers on other hosts could not read one
    assert state_folder(StorageConfig(save_states=False), database) is None
    assert state_folder(replace(shared, save_states=False), database) is None


@pytest.mark.postgres
def test_postgres_keeps_states_only_in_a_named_folder(postgres_url: str, tmp_path: Path) -> None:
    storage = open_storage(postgres_url)
    assert states_of(storage, hpo_config(compose())) is None
    assert states_of(storage, hpo_config(compose([f"storage.states={tmp_path}"]))) == StateFolder(tmp_path)
