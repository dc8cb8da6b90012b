"""A study whose learning rate depends on its optimizer: each trial trains with a learning
rate from its optimizer's range, the study resumes with the same space, and every view
names the parameter plainly (`lr`, not Optuna's `lr[sgd]`)."""

from __future__ import annotations

import json

import pytest
from optuna.trial import TrialState
from study_helpers import hpo_ok, load, tiny

from hpo.record.attrs import config_from_stored

pytestmark = pytest.mark.timeout(600)

RANGES = {"adamw": (1e-3, 1e-2), "sgd": (0.05, 0.2)}
CONDITIONAL = (
    "+search_space.optimizer={choices: [adamw, sgd]}",
    "~search_space.lr",
    "+search_space.lr={optimizer: {adamw: {low: 1.0e-3, high: 1.0e-2, log: true}, sgd: {low: 0.05, high: 0.2}}}",
)


def test_a_conditional_study_runs_resumes_and_shows_its_values_plainly(sqlite_url: str) -> None:
    hpo_ok("run", *tiny("conditional", 3, *CONDITIONAL), "--storage", sqlite_url, "--quiet")
    hpo_ok("resume", "conditional", "--n-trials", "2", "--storage", sqlite_url, "--quiet")
    study = load(sqlite_url, "conditional")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    for trial in study.trials:
        optimizer = trial.params["optimizer"]
        lr = trial.params[f"lr[{optimizer}]"]
        low, high = RANGES[optimizer]
        assert low <= lr <= high
        assert set(trial.params) == {"optimizer", f"lr[{optimizer}]", "n_head"}
        trained = trial.user_attrs["config"]["optim"]
        assert (trained["name"], trained["lr"]) == (optimizer, lr)  # what the run trained with
    assert {t.params["optimizer"] for t in study.trials} == set(RANGES)
    stored = config_from_stored(study.user_attrs["hpo_config"]).space
    assert next(p for p in stored.params if p.name == "lr").parent == "optimizer"

    shown = hpo_ok("show", "conditional", "--storage", sqlite_url).stdout
    assert " lr " in shown.splitlines()[1] and "lr[" not in shown
    (record, *_) = json.loads(hpo_ok("export", "conditional", "--format", "json", "--storage", sqlite_url).stdout)
    assert set(record["params"]) == {"optimizer", "lr", "n_head"}
