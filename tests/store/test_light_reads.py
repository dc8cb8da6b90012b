"""Reading a study without loading its trials whole (hpo.store.optuna_internals): each read
against what Optuna's public API returns for the same study, on SQLite and PostgreSQL, and
behind nothing but the public API (the gRPC proxy's fallback)."""

from __future__ import annotations

import gc

import optuna
import pytest
from optuna.trial import TrialState
from random_trials import random_study

from hpo.store.optuna_internals import (
    count_trials,
    light_trials,
    light_trials_by_study,
    pareto_front,
    system_attr_values,
    whole_trials,
)


@pytest.fixture(params=["database", "public-api"])
def study(request: pytest.FixtureRequest, storage_url: str) -> optuna.Study:
    """A study of 150 random trials, read through SQL, or (as behind the gRPC proxy) through
    a storage that is no RDBStorage and so only has the public API."""
    study = random_study(storage_url, 150)
    if request.param == "public-api":
        backend = optuna.storages.InMemoryStorage()
        copy = optuna.create_study(storage=backend, directions=["maximize", "maximize"])
        copy.add_trials(study.get_trials())
        return copy
    return optuna.load_study(study_name=study.study_name, storage=storage_url)


def test_light_trials_hold_what_they_name_and_nothing_else(study: optuna.Study) -> None:
    light = light_trials(study, ["failure_reason"], ["retry_history"])
    every = study.get_trials()
    assert [t.number for t in light] == [t.number for t in every]
    for lean, whole in zip(light, every, strict=True):
        assert (lean.state, lean.values, lean.constraints) == (whole.state, whole.values, whole.constraints)
        assert lean.datetime_complete == whole.datetime_complete
        assert lean.user_attrs.get("failure_reason") == whole.user_attrs.get("failure_reason")
        assert lean.system_attrs.get("retry_history") == whole.system_attrs.get("retry_history")
        assert lean._trial_id == whole._trial_id


def test_the_front_of_light_trials_is_optunas_best_trials(study: optuna.Study) -> None:
    """Pruned, failed, running and infeasible trials among them, ties and infinite values too."""
    front = pareto_front(light_trials(study), study.directions)
    assert [t.number for t in front] == [t.number for t in study.best_trials]
    assert 0 < len(front) < 60


def test_whole_trials_are_the_trials_optuna_returns(study: optuna.Study) -> None:
    every = study.get_trials()
    chosen = [every[i] for i in (0, 7, 100, 149)]
    assert whole_trials(study, [t._trial_id for t in chosen]) == chosen
    assert whole_trials(study, []) == []


def test_counts_are_those_of_the_trials(study: optuna.Study) -> None:
    every = study.get_trials()
    started = (TrialState.RUNNING, TrialState.PRUNED, TrialState.FAIL)
    skipped = {3, 4, 5, 120}
    lost = ("failure_reason", ["interrupted", "surplus"])
    expected = [
        t
        for t in every
        if t.state in started and t.number not in skipped and t.user_attrs.get("failure_reason") in lost[1]
    ]
    assert count_trials(study, started, numbers_not_in=skipped, user_attr=lost) == len(expected) > 0
    assert count_trials(study, [TrialState.COMPLETE]) == sum(t.state == TrialState.COMPLETE for t in every)
    histories = [t.system_attrs["retry_history"] for t in every if "retry_history" in t.system_attrs]
    assert sorted(system_attr_values(study, "retry_history")) == sorted(histories)


@pytest.mark.parametrize("through", ["database", "public-api"])
def test_every_studys_light_trials_are_read_at_once(through: str, storage_url: str) -> None:
    made = [random_study(storage_url, 40) for _ in range(3)]
    storage = optuna.storages.get_storage(storage_url)
    if through == "public-api":
        storage = optuna.storages.InMemoryStorage()
        for study in made:
            copy = optuna.create_study(storage=storage, study_name=study.study_name, directions=study.directions)
            copy.add_trials(study.get_trials())
    by_study = light_trials_by_study(storage, ["failure_reason"])
    assert sorted(by_study) == sorted(s.study_name for s in made)
    for study in made:
        lean, whole = by_study[study.study_name], study.get_trials()
        assert [(t.number, t.state, t.values) for t in lean] == [(t.number, t.state, t.values) for t in whole]
        assert [t.user_attrs.get("failure_reason") for t in lean] == [t.user_attrs.get("failure_reason") for t in whole]
        assert [t.constraints for t in lean] == [t.constraints for t in whole]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_read_leaves_the_garbage_collector_as_it_found_it(study: optuna.Study, enabled: bool) -> None:
    """Reads pause the cyclic collector while they build trials, and give it back as it was."""
    (gc.enable if enabled else gc.disable)()
    try:
        light_trials(study)
        whole_trials(study, [t._trial_id for t in study.get_trials()[:3]])
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
