"""A model-based sampler that keeps exploring: a fixed share of its trials drawn at random.

TPE draws where its model of good and bad regions points, and a categorical choice that
did well early (no positional encoding, two devices, SGD) can take nearly every later
trial. In a pruned study that lock-in feeds itself: the trials that survive the rungs are
those TPE learns from, and it proposes more of their kind (README, Early stopping). BOHB
(Falkner et al. 2018) draws a constant fraction of its configurations at random for
this reason; `sampler.random_fraction` does the same for any Optuna sampler here.

Which trials are random is a function of the seed and the trial number alone, so every
worker of a study agrees on it and a rerun with the same seed draws the same trials.
"""

from __future__ import annotations

from collections.abc import Sequence
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


__all__ = ["RandomShare"]
