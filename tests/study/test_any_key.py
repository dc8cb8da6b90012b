"""A study that searches config keys by their dotted names (`optim.beta1`, `model.bias`):
each trial trains with the values it sampled, the parameters carry the dotted names, a
baseline named so is enqueued, the study resumes with the same space, and `hpo show` names
them so."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from study_helpers import hpo_ok, load, tiny

from hpo.config.compose import compose, hpo_config
from hpo.record.attrs import CONFIG, STUDY_CONFIG, config_from_stored

pytestmark = pytest.mark.timeout(600)

ANY_KEY = (
    "sampler=random",
    "+search_space.optim.beta1={low: 0.8, high: 0.95}",
    "+search_space.model.bias={choices: [true, false]}",
    "study.baselines=[{optim.beta1: 0.9, model.bias: true}]",
)


def test_a_study_searches_dotted_config_keys_and_resumes(sqlite_url: str) -> None:
    overrides = tiny("any-key", 3, *ANY_KEY)
    hpo_ok("run", *overrides, "--storage", sqlite_url, "--quiet")
    hpo_ok("resume", "any-key", "--n-trials", "1", "--storage", sqlite_url, "--quiet")
    study = load(sqlite_url, "any-key")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    for trial in study.trials:
        assert set(trial.params) == {"optim.beta1", "model.bias", "n_head", "lr"}
        assert 0.8 <= trial.params["optim.beta1"] <= 0.95
        trained = trial.user_attrs[CONFIG]  # what the run trained with
        assert trained["optim"]["beta1"] == trial.params["optim.beta1"]
        assert trained["model"]["bias"] is trial.params["model.bias"]
    assert (study.trials[0].params["optim.beta1"], study.trials[0].params["model.bias"]) == (0.9, True)
    assert len({t.params["optim.beta1"] for t in study.trials}) == 4
    stored = config_from_stored(study.user_attrs[STUDY_CONFIG])
    assert stored.space == hpo_config(compose(overrides)).space
    header = hpo_ok("show", "any-key", "--storage", sqlite_url).stdout.splitlines()[1]
    assert "optim.beta1" in header and "model.bias" in header
