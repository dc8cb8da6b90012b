"""Random trials of every state, for the tests of reading studies at scale: ties and infinite
values among the complete ones, infeasible ones, retries, failure reasons, nested configs."""

from __future__ import annotations

import random

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

DISTRIBUTIONS = {
    "n_layer": IntDistribution(1, 8),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "pos": CategoricalDistribution(["learned", "rope", "alibi"]),
}
STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def random_trial(rng: random.Random) -> FrozenTrial:
    """A trial of any state; complete ones with values (ties among them), some infeasible,
    some with a retry history, a reason or a nested config."""
    state = rng.choices(STATES, weights=(6, 2, 1, 1, 1))[0]
    values = [round(rng.random(), 2), rng.choice([1e4, 2e4, float("inf"), rng.uniform(1e4, 1e5)])]
    user_attrs: dict[str, object] = {"config": {"budget": {"tokens": rng.randrange(1000, 9000)}, "x": [1, 2]}}
    if state != TrialState.COMPLETE:
        user_attrs["failure_reason"] = rng.choice(["pruned", "interrupted", "surplus", "crashed"])
    system_attrs: dict[str, object] = {"constraints:infeasible": float(rng.random() < 0.2)}
    if rng.random() < 0.1:
        system_attrs["retry_history"] = [rng.randrange(50)]
    return optuna.trial.create_trial(
        state=state,
        values=values if state == TrialState.COMPLETE else None,
        params={"n_layer": rng.randint(1, 8), "lr": rng.uniform(1e-4, 1e-1), "pos": rng.choice(["rope", "alibi"])},
        distributions=DISTRIBUTIONS,
        user_attrs=user_attrs,
        system_attrs=system_attrs,
    )


def random_study(url: str, n_trials: int) -> optuna.Study:
    """A two-objective study of `n_trials` random trials (seeded by number) in `url`."""
    study = optuna.create_study(storage=url, directions=["maximize", "maximize"])
    study.set_metric_names(["val_accuracy", "tokens_per_sec"])
    study.add_trials([random_trial(random.Random(seed)) for seed in range(n_trials)])
    return study
