"""Optuna's samplers as hpo builds them, a point of the search space drawn through them,
and two ways to steer what a model-based sampler learns from in a pruned study.

`RandomShare`: a fixed share of the trials drawn at random, so the sampler keeps exploring.

TPE draws where its model of good and bad regions points, and a categorical choice that
did well early (no positional encoding, two devices, SGD) can take nearly every later
trial. In a pruned study that lock-in feeds itself: the trials that survive the rungs are
those TPE learns from, and it proposes more of their kind (docs/early-stopping.md). BOHB
(Falkner et al. 2018) draws a constant fraction of its configurations at random for
this reason; `sampler.random_fraction` does the same for any Optuna sampler here.

Which trials are random is a function of the seed and the trial number alone, so every
worker of a study agrees on it and a rerun with the same seed draws the same trials.

`AsObserved`: the model sees each pruned trial with the values it had at its rung, as if
it had completed there, as multi-fidelity Bayesian optimisation takes each trial's latest
observation. Optuna's TPE otherwise counts every pruned trial as worse than every completed
one (a multi-objective study has no intermediate values to rank them by): a shape stopped
at the first rung for its accuracy teaches it nothing of its throughput, which a rung
measures as well as the end does (hpo.search.pruning). Accuracy rises with training, so a trial
stopped early still ranks below the completed trials that beat it on throughput too.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpo.config.search import SamplerConfig
from hpo.config.search_space import Param, SearchSpace
from hpo.record.attrs import read_rung
from hpo.store.optuna_internals import StudyView, read_trials

# The model-based samplers: their options (sampler/tpe.yaml, gp.yaml) have a view of
# pruned trials and a random share; NSGA-II/III and random search have neither.
MODEL_BASED = ("tpe", "gp")


def build_sampler(config: SamplerConfig, seed: int) -> BaseSampler:
    """The configured Optuna sampler, with its view of pruned trials and its random share
    if it is model-based and so configured. Constraints come from `trial.set_constraint`."""
    seed %= 2**32  # NumPy's limit, which the offsets of continued studies and joining workers can pass
    sampler = _optuna_sampler(config, seed)
    if config.name not in MODEL_BASED:
        return sampler
    if config.pruned_trials == "observed":
        sampler = AsObserved(sampler)
    return RandomShare(sampler, config.random_fraction, seed) if config.random_fraction else sampler


def _optuna_sampler(config: SamplerConfig, seed: int) -> BaseSampler:
    if config.name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=config.n_startup_trials, multivariate=config.multivariate
        )
    if config.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=config.population_size)
    if config.name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=config.population_size)
    if config.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=config.n_startup_trials)
    return RandomSampler(seed=seed)


def suggest(space: SearchSpace, trial: optuna.Trial) -> dict[str, Any]:
    """Sample every parameter of the space, by its plain name; fixed ones are returned too
    (the record is complete). A conditional one is sampled define-by-run, from the branch
    of the value its parent took (the space lists it after its parent), under the branch's
    own Optuna name."""
    values: dict[str, Any] = {}
    for param in space.params:
        if param.kind == "conditional":
            assert param.parent is not None
            branch = param.branch(values[param.parent])
            assert branch is not None, "SearchSpace checks that every choice of the parent has a branch"
            values[param.name] = _suggest(branch, trial, param.optuna_name(values[param.parent]))
        else:
            values[param.name] = _suggest(param, trial, param.name)
    return values


def _suggest(param: Param, trial: optuna.Trial, name: str) -> Any:
    if param.kind == "fixed":
        return param.value
    if param.kind == "categorical":
        return trial.suggest_categorical(name, list(param.choices))
    assert param.low is not None and param.high is not None
    if param.kind == "int":
        step = int(param.step or 1)
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


class _Wrapper(BaseSampler):
    """A sampler that leaves everything to `model`, showing it the study as `_seen` does."""

    def __init__(self, model: BaseSampler) -> None:
        self.model = model

    def _seen(self, study: Study) -> Study:
        return study

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.model.infer_relative_search_space(self._seen(study), trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.model.sample_relative(self._seen(study), trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.model.sample_independent(self._seen(study), trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.model.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.model.reseed_rng()


class RandomShare(_Wrapper):
    """`model`'s draws, except for about `fraction` of the trials, which are uniform random."""

    def __init__(self, model: BaseSampler, fraction: float, seed: int) -> None:
        super().__init__(model)
        self.fraction, self._seed = fraction, seed
        # Its own stream: TPE's start-up draws come from a RandomSampler with the study seed.
        self._random = RandomSampler(seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))

    def is_random(self, trial: FrozenTrial) -> bool:
        """Whether this trial is one of the random share."""
        return bool(np.random.default_rng([self._seed, trial.number]).random() < self.fraction)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {} if self.is_random(trial) else super().sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if self.is_random(trial):
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        return super().sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self._random.reseed_rng()


class AsObserved(_Wrapper):
    """`model`, shown each pruned trial as completed with the values it had at its rung."""

    def __init__(self, model: BaseSampler) -> None:
        super().__init__(model)
        self._names: list[str] | None = None  # the objectives' names, set when the study was created

    def _seen(self, study: Study) -> Study:
        self._names = self._names or study.metric_names  # a storage round trip: once
        return StudyView(study, self._read)

    def _read(
        self, study: Study, deepcopy: bool, states: Container[TrialState] | None, use_cache: bool
    ) -> list[FrozenTrial]:
        """The study's trials, each pruned one completed at its rung: they are read in every
        state and filtered as seen, so a reader of the completed trials gets those too."""
        seen = [_observed(t, self._names) for t in read_trials(study, deepcopy, None, use_cache)]
        return [t for t in seen if states is None or t.state in states]


def _observed(trial: FrozenTrial, names: list[str] | None) -> FrozenTrial:
    """A trial pruned at a rung (hpo.study.objective records its values there) as if it had
    completed there; any other trial as it is."""
    rung = read_rung(trial) if trial.state == TrialState.PRUNED and names else None
    if rung is None:
        return trial
    seen = copy.copy(trial)
    seen.state, seen.values = TrialState.COMPLETE, rung.values(names or [])
    return seen


__all__ = ["AsObserved", "RandomShare", "build_sampler", "suggest"]
