"""hpo's uses of Optuna's private API (hpo.store.optuna_internals), checked against the
installed Optuna: a 5.x release that renames or reshapes one fails here, by name."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.trial import TrialState

from hpo.store.optuna_internals import (
    ARTIFACTS_ATTR_PREFIX,
    BaseHeartbeat,
    StudyView,
    delete_trial_system_attr,
    finished_trial,
    read_trials,
    stale_trial_ids,
    study_storage,
    trial_id,
)


def test_the_heartbeat_protocol_has_the_methods_hpo_implements() -> None:
    assert BaseHeartbeat.__abstractmethods__ == {
        "record_heartbeat",
        "_get_stale_trial_ids",
        "get_heartbeat_interval",
        "get_heartbeat_stale_trial_callback",
    }
    assert isinstance(optuna.storages.RDBStorage("sqlite://"), BaseHeartbeat)


def test_stale_trial_ids_are_those_fail_stale_trials_fails(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial_id(trial))
    assert stale_trial_ids(storage, study) == []
    time.sleep(2.5)
    assert stale_trial_ids(storage, study) == [trial_id(trial)]
    assert "_get_stale_trial_ids(study._study_id)" in inspect.getsource(optuna.storages.fail_stale_trials)


def test_trial_ids_and_the_study_storage() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert study_storage(study) is storage
    assert storage.get_trial(trial_id(trial)).number == trial.number
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert trial_id(frozen) == trial_id(trial)
    assert finished_trial(study, frozen).study is study  # what optuna_dashboard.save_note reads


def test_samplers_read_trials_through_the_method_a_study_view_overrides() -> None:
    assert list(inspect.signature(optuna.Study._get_trials).parameters) == ["self", "deepcopy", "states", "use_cache"]
    source = inspect.getsource(optuna.samplers.TPESampler)
    assert "study._get_trials(" in source  # TPE sees what StudyView shows it
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(read_trials(study, False, (TrialState.COMPLETE,), False)) == 3
    view = StudyView(study, lambda s, deepcopy, states, use_cache: read_trials(s, deepcopy, states, use_cache)[:1])
    assert [t.number for t in view.get_trials()] == [0]
    assert view.study_name == study.study_name


def test_an_artifacts_attribute_of_a_finished_trial_is_deleted_with_sql(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/hpo.db")
    study = optuna.create_study(storage=storage, directions=["maximize", "maximize"])
    trial = study.ask()
    (tmp_path / "model.pt").write_bytes(b"weights")
    store = FileSystemArtifactStore(tmp_path)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(tmp_path / "model.pt"), study_or_trial=trial)
    trial.set_user_attr("kept", True)
    storage.set_trial_system_attr(trial_id(trial), "other", 1)
    study.tell(trial, [1.0, 2.0])
    key = ARTIFACTS_ATTR_PREFIX + artifact_id
    assert key in storage.get_trial_system_attrs(trial_id(trial))  # where upload_artifact records it
    # Why hpo deletes with SQL: Optuna writes no attribute of a finished trial.
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_system_attr(trial_id(trial), key, None)
    delete_trial_system_attr(storage, trial_id(trial), key)
    delete_trial_system_attr(storage, trial_id(trial), key)  # again: nothing happens
    assert storage.get_trial_system_attrs(trial_id(trial)) == {"other": 1}
    assert get_all_artifact_meta(trial, storage=storage) == []
    fresh = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path}/hpo.db").trials[0]
    assert fresh.state == TrialState.COMPLETE and fresh.values == [1.0, 2.0] and fresh.user_attrs == {"kept": True}
