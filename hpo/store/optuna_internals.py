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
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BaseHeartbeat", "StudyView", "finished_trial", "read_trials", "study_storage", "trial_id"]

# `BaseHeartbeat` (optuna.storages._heartbeat): the protocol through which Optuna's
# `fail_stale_trials` finds and fails a dead worker's trials. hpo.store.grpc implements it
# for the gRPC proxy client, which has none; there is no public base class to do so. Its
# abstract methods include the private `_get_stale_trial_ids`.


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's storage id. The storage API (system attributes, heartbeats, a trial's full
    record with its system attributes, which `optuna.Trial` does not show) is keyed by it,
    and neither trial class exposes it publicly."""
    return trial._trial_id


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
