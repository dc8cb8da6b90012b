"""The random share of a model-based sampler and its view of pruned trials, on real Optuna
studies with a toy objective: the point is which configurations the sampler proposes, not
training."""

from __future__ import annotations

import math
from dataclasses import asdict

import optuna
import pytest

from hpo.config.compose import compose, hpo_config
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent
from hpo.search.samplers import AsObserved, RandomShare, build_sampler, suggest

CHOICES = ["a", "b", "c", "d"]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _search(fraction: float, seed: int = 0, n_trials: int = 80) -> tuple[optuna.Study, RandomShare | None]:
    """TPE on a choice where "a" scores best: the model alone soon proposes almost nothing else."""
    config = hpo_config(compose(["sampler=tpe", f"sampler.random_fraction={fraction}"]))
    sampler = build_sampler(config.sampler, seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: float(t.suggest_categorical("x", CHOICES) == "a") + t.suggest_float("y", 0, 0.1), n_trials)
    return study, sampler if isinstance(sampler, RandomShare) else None


def test_tpe_sees_pruned_trials_as_observed_and_draws_no_random_share_by_default() -> None:
    sampler = build_sampler(hpo_config(compose(["sampler=tpe"])).sampler, 0)
    assert isinstance(sampler, AsObserved) and isinstance(sampler.model, optuna.samplers.TPESampler)
    plain = build_sampler(hpo_config(compose(["sampler=tpe", "sampler.pruned_trials=last"])).sampler, 0)
    assert isinstance(plain, optuna.samplers.TPESampler)


@pytest.mark.parametrize("name", ["tpe", "gp", "nsga2", "random"])
def test_a_seed_past_numpys_limit_wraps(name: str) -> None:
    """A joining worker's seed is the study's plus its process id: it may pass 2**32."""
    config = hpo_config(compose([f"sampler={name}"])).sampler
    draws = []
    for seed in (3, 2**32 + 3):
        study = optuna.create_study(sampler=build_sampler(config, seed))
        study.optimize(lambda t: t.suggest_float("y", 0, 1), 2)
        draws.append([t.params for t in study.trials])
    assert draws[0] == draws[1]


def test_the_share_keeps_drawing_what_the_model_gave_up() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared, sampler = _search(0.5)
    assert sampler is not None
    later = [t for t in shared.trials if t.number >= 5]  # after TPE's 5 random start-up trials
    random = [t for t in later if sampler.is_random(t)]
    assert 0.35 < len(random) / len(later) < 0.65
    # the model's own trials go for "a"; the random ones spread over the four choices
    model_a = sum(t.params["x"] == "a" for t in later if t not in random) / (len(later) - len(random))
    random_a = sum(t.params["x"] == "a" for t in random) / len(random)
    assert model_a > 0.6 and 0.05 < random_a < 0.45 and model_a > random_a + 0.3


def test_which_trials_are_random_is_fixed_by_seed_and_number() -> None:
    first, sampler = _search(0.3, seed=7, n_trials=30)
    again, _ = _search(0.3, seed=7, n_trials=30)
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert sampler is not None
    other = RandomShare(optuna.samplers.TPESampler(seed=7), 0.3, seed=7)  # another worker's copy agrees
    assert [other.is_random(t) for t in first.trials] == [sampler.is_random(t) for t in first.trials]


@pytest.mark.parametrize("value", ["1", "-0.1", "1.5"])
def test_a_share_outside_zero_to_one_is_refused(value: str) -> None:
    with pytest.raises(HpoError, match=rf"sampler.random_fraction={value}.* must be in \[0, 1\)"):
        hpo_config(compose([f"sampler.random_fraction={value}"]))


def rung_record(values: list[float]) -> dict:
    """A `rung` attribute as hpo writes it, at these (val_accuracy, tokens_per_sec) values."""
    accuracy, speed = values
    event = EvalEvent(step=10, tokens=1000, train_loss=2.0, val_loss=2.0, val_accuracy=accuracy, tokens_per_sec=speed)
    return {"rung_tokens": 1000, **asdict(event)}


def test_observed_pruned_trials_steer_tpe_as_completed_ones_would() -> None:
    """TPE shown pruned trials as observed proposes exactly what it proposes in a study
    where those trials completed with the values they had at their rungs."""
    names = ["val_accuracy", "tokens_per_sec"]
    history = [(x / 20, [0.1 + x / 40, 1000.0 - 30 * x]) for x in range(20)]

    def replay(observed: bool, pruned: bool) -> list[float]:
        config = hpo_config(compose(["sampler=tpe", f"sampler.pruned_trials={'observed' if observed else 'last'}"]))
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=build_sampler(config.sampler, 3))
        study.set_metric_names(names)
        distribution = optuna.distributions.FloatDistribution(0, 1)
        for i, (x, values) in enumerate(history):
            stopped = pruned and i % 3 == 0
            trial = optuna.trial.create_trial(
                params={"x": x},
                distributions={"x": distribution},
                state=optuna.trial.TrialState.PRUNED if stopped else optuna.trial.TrialState.COMPLETE,
                values=None if stopped else values,
                user_attrs={"rung": rung_record(values)} if stopped else {},
            )
            study.add_trial(trial)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.0), n_trials=5)
        return [t.params["x"] for t in study.trials[len(history) :]]

    assert replay(observed=True, pruned=True) == replay(observed=False, pruned=False)
    assert replay(observed=False, pruned=True) != replay(observed=False, pruned=False)


def test_an_unknown_view_of_pruned_trials_is_refused() -> None:
    with pytest.raises(HpoError, match=r"sampler.pruned_trials='hidden' is not allowed; use one of last, observed"):
        hpo_config(compose(["sampler.pruned_trials=hidden"]))


@pytest.mark.parametrize("name", ["tpe", "nsga2", "nsga3", "gp", "random"])
def test_every_sampler_draws_a_conditional_space_branch_by_branch(name: str) -> None:
    """search_space=wide's learning rate and weight decay depend on the optimizer: each
    sampler draws each from the range of the optimizer it chose, past its random start."""
    config = hpo_config(compose(["search_space=wide", f"sampler={name}", "sampler.n_startup_trials=4"]))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=build_sampler(config.sampler, 0))
    drawn = []

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        values = suggest(config.space, trial)
        drawn.append(values)
        return -abs(math.log10(values["lr"]) + 2), float(values["n_layer"])

    study.optimize(objective, n_trials=16)
    ranges = {"adamw": (1e-4, 3e-2), "adam": (1e-4, 3e-2), "sgd": (1e-2, 0.3)}
    for values in drawn:
        low, high = ranges[values["optimizer"]]
        assert low <= values["lr"] <= high, values
        assert values["weight_decay"] == 0.0 or values["optimizer"] == "adamw", values
    assert {v["optimizer"] for v in drawn} == set(ranges)


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "random"])
def test_samplers_that_are_not_model_based_are_optunas_own(name: str) -> None:
    """Only TPE and GP have a view of pruned trials and a random share (their options set
    them); NSGA-II/III build generations from completed trials, as Optuna's do."""
    sampler = build_sampler(hpo_config(compose([f"sampler={name}"])).sampler, 0)
    assert not isinstance(sampler, (AsObserved, RandomShare))
