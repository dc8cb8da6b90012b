"""Optuna's own pruners, in single-objective studies, really stop a trial that falls behind.

Each study queues three sound trials (lr about 1e-2) and then one that cannot learn in
its budget (lr 1e-6): at its first evaluations its accuracy is far below the others' at
the same token count, so the median, successive halving and hyperband pruners must
stop it, and hpo must record why.
"""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from study_helpers import TINY, hpo_ok, trials

BASELINES = "[{n_head: 2, lr: 0.01}, {n_head: 2, lr: 0.009}, {n_head: 2, lr: 0.008}, {n_head: 2, lr: 1.0e-6}]"


@pytest.mark.parametrize(
    "pruner",
    [
        ["pruner=median"],  # 3 start-up trials, then the median at each step
        ["pruner=successive_halving", "pruner.min_tokens=4000"],
        # One bracket (min_tokens above a third of the budget): successive halving across all trials.
        ["pruner=hyperband", "pruner.min_tokens=8000"],
    ],
    ids=["median", "successive_halving", "hyperband"],
)
def test_optunas_pruner_stops_a_trial_that_falls_behind(sqlite_url: str, pruner: list[str]) -> None:
    name = pruner[0].split("=")[1]
    hpo_ok(
        "run", *TINY, *pruner, f"study.name={name}", "study.n_trials=4", "study.objectives=[val_accuracy]",
        "search_space.lr={low: 1.0e-6, high: 1.0e-2, log: true}", f"study.baselines={BASELINES}",
        "train.evals=4", "--storage", sqlite_url, "--quiet",
    )  # fmt: skip
    by_number = {t.number: t for t in trials(sqlite_url, name)}
    assert by_number[0].state == TrialState.COMPLETE  # the first trial has nothing to fall behind
    bad = by_number[3]
    assert bad.params["lr"] == pytest.approx(1e-6)
    assert bad.state == TrialState.PRUNED, (bad.state, bad.user_attrs.get("failure_message"))
    assert bad.user_attrs["failure_reason"] == "pruned"
    assert bad.user_attrs["failure_message"].startswith(f"{name} pruner at ")
    # It stopped before its budget: Optuna holds its reports up to there, keyed by tokens.
    assert max(bad.intermediate_values) < max(by_number[0].intermediate_values)
