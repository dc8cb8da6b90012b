"""Two ways to steer what a model-based sampler learns from in a pruned study.

`RandomShare`: a fixed share of the trials drawn at random, so the sampler keeps exploring.

TPE draws where its model of good and bad regions points, and a categorical choice that
did well early (no positional encoding, two devices, SGD) can take nearly every later
trial. In a pruned study that lock-in feeds itself: the trials that survive the rungs are
those TPE learns from, and it proposes more of their kind (README, Early stopping). BOHB
(Falkner et al. 2018) draws a constant fraction of its configurations at random for
this reason; `sampler.random_fraction` does the same for any Optuna sampler here.

Which trials are random is a function of the seed and the trial number alone, so every
worker of a study agrees on it and a rerun with the same seed draws the same trials.

`CompletedOnly`: the model sees completed trials only. Optuna's TPE counts every pruned
trial as worse than every completed one (a multi-objective study has no intermediate
values to rank them by), so two one-device trials stopped at the first rung teach it that
one device is bad, however good the same shapes would have ended. GP and NSGA-II learn
from completed trials only already, as BOHB's model learns from the trials evaluated on
the largest budget only (Falkner et al. 2018).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class RandomShare(BaseSampler):
    """`model`'s draws, except for about `fraction` of the trials, which are uniform random."""

    def __init__(self, model: BaseSampler, fraction: float, seed: int) -> None:
        self.model, self.fraction, self._seed = model, fraction, seed
        # Its own stream: TPE's start-up draws come from a RandomSampler with the study seed.
        self._random = RandomSampler(seed=int(np.random.SeedSequence([seed, 1]).generate_state(1)[0]))

    def is_random(self, trial: FrozenTrial) -> bool:
        """Whether this trial is one of the random share."""
        return bool(np.random.default_rng([self._seed, trial.number]).random() < self.fraction)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.model.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {} if self.is_random(trial) else self.model.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        sampler = self._random if self.is_random(trial) else self.model
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.model.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.model.reseed_rng()
        self._random.reseed_rng()


class _WithoutPruned(Study):
    """A study as a sampler sees it with its pruned trials left out. It reads through the
    study's own trial cache, which Optuna renews as trials finish."""

    def __init__(self, study: Study) -> None:
        self.__dict__.update(study.__dict__)  # no storage round trip: the same study, read filtered
        self._study = study

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        kept = [s for s in TrialState if s != TrialState.PRUNED and (states is None or s in states)]
        return self._study._get_trials(deepcopy, kept, use_cache)


class CompletedOnly(BaseSampler):
    """`model`, shown the study's completed (and running) trials but not its pruned ones."""

    def __init__(self, model: BaseSampler) -> None:
        self.model = model

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.model.infer_relative_search_space(_WithoutPruned(study), trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.model.sample_relative(_WithoutPruned(study), trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.model.sample_independent(_WithoutPruned(study), trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.model.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.model.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.model.reseed_rng()


__all__ = ["CompletedOnly", "RandomShare"]
