"""Every use hpo makes of Optuna's private API, each with why the public API does not suffice.

Checked against Optuna 5.1 (pyproject.toml allows 5.x). tests/store/test_optuna_internals.py
checks each name and signature below against the installed Optuna, so a 5.x release that
changes one fails there, by name, and not somewhere deep inside a study.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import cast

import optuna
import sqlalchemy
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ARTIFACTS_ATTR_PREFIX",
    "BaseHeartbeat",
    "StudyView",
    "delete_trial_system_attr",
    "finished_trial",
    "read_trials",
    "stale_trial_ids",
    "study_storage",
    "trial_id",
]

# `BaseHeartbeat` (optuna.storages._heartbeat): the protocol through which Optuna's
# `fail_stale_trials` finds and fails a dead worker's trials. hpo.store.grpc implements it
# for the gRPC proxy client, which has none; there is no public base class to do so. Its
# abstract methods include the private `_get_stale_trial_ids`.

# `ARTIFACTS_ATTR_PREFIX` (optuna.artifacts._upload): `upload_artifact` records an artifact
# as the trial system attribute `artifacts:<artifact id>`. hpo reads a trial's kept models
# from the system attributes of trials it already holds (`get_all_artifact_meta` asks the
# storage again, once per trial) and deletes that attribute when it drops a model.


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's storage id. The storage API (system attributes, heartbeats, a trial's full
    record with its system attributes, which `optuna.Trial` does not show) is keyed by it,
    and neither trial class exposes it publicly."""
    return trial._trial_id


def stale_trial_ids(storage: BaseHeartbeat, study: Study) -> list[int]:
    """The ids of the study's RUNNING trials whose heartbeat is past the grace period: what
    `optuna.storages.fail_stale_trials` fails without a word. hpo needs them while they
    still run, to record why (`worker_lost`) before failing them itself."""
    return storage._get_stale_trial_ids(study._study_id)


def study_storage(study: Study) -> optuna.storages.BaseStorage:
    """The storage a study was loaded from, which `Study` does not expose publicly."""
    return study._storage


def read_trials(
    study: Study, deepcopy: bool, states: Container[TrialState] | None, use_cache: bool
) -> list[FrozenTrial]:
    """`Study._get_trials`: what samplers read a study's trials through (with `use_cache`,
    from the cache that Optuna renews as trials finish)."""
    return study._get_trials(deepcopy, states, use_cache)


TrialsReader = Callable[[Study, bool, "Container[TrialState] | None", bool], list[FrozenTrial]]


class StudyView(Study):
    """`study` as a sampler sees it when its trials are read through `reader`.

    Samplers read trials through the private `Study._get_trials`; overriding it is the one
    way to change what a sampler learns from without copying the study (hpo.search.samplers
    shows TPE each pruned trial as it was at its rung).
    """

    def __init__(self, study: Study, reader: TrialsReader) -> None:
        self.__dict__.update(study.__dict__)  # no storage round trip: the same study, read differently
        self._study, self._reader = study, reader

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        return self._reader(self._study, deepcopy, states, use_cache)


@dataclass(frozen=True)
class _TrialRef:
    """What `optuna_dashboard.save_note` reads of a trial: its storage, study and id."""

    storage: optuna.storages.BaseStorage
    study: Study
    _trial_id: int


def finished_trial(study: Study, trial: FrozenTrial) -> optuna.Trial:
    """A finished trial as `optuna_dashboard.save_note` takes it. `optuna.Trial(study, id)`
    would do too, but it calls the sampler's `before_trial`, which must not run again on a
    finished trial; save_note reads only `storage`, `study` and the private `_trial_id`."""
    return cast(optuna.Trial, _TrialRef(study_storage(study), study, trial_id(trial)))


_TRIAL_SYSTEM_ATTRIBUTES = sqlalchemy.table(
    "trial_system_attributes", sqlalchemy.column("trial_id"), sqlalchemy.column("key")
)


def delete_trial_system_attr(storage: optuna.storages.RDBStorage, trial_id: int, key: str) -> None:
    """Delete one system attribute of a trial, finished or not, with one SQL DELETE on
    Optuna's `trial_system_attributes` table; nothing happens if it is not there.

    Optuna has no API to delete an attribute, and refuses to write any attribute of a
    finished trial (`check_trial_is_updatable`), while a model leaves the Pareto front when
    its trial is long finished (hpo.study.models): its `artifacts:<id>` attribute must go with
    the artifact, or the dashboard lists a model that no longer exists. Processes that hold
    the trial in Optuna's cache of finished trials still see the attribute until they restart.
    """
    table = _TRIAL_SYSTEM_ATTRIBUTES
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.delete(table).where(table.c.trial_id == trial_id).where(table.c.key == key))
