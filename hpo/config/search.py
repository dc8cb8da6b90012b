"""How a study draws and stops its trials: the sampler and pruner settings.

Only what the settings are and which values are valid lives here; the samplers and the
early-stopping rule themselves are in hpo.search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from hpo.errors import HpoError

SamplerName = Literal["tpe", "nsga2", "nsga3", "gp", "random"]
PrunedTrials = Literal["last", "observed"]  # how a model-based sampler sees a pruned trial (hpo.search.samplers)
PrunerName = Literal["none", "moasha", "median", "successive_halving", "hyperband"]
# Optuna's own pruners, which judge one objective through `trial.report`.
OPTUNA_PRUNERS: tuple[str, ...] = ("median", "successive_halving", "hyperband")
RungMetric = Literal["val_loss", "val_accuracy"]


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna's samplers, seeded from the study seed. `n_startup_trials` random trials
    come first for TPE and GP, and `random_fraction` of the later ones are random too
    (hpo.search.samplers); NSGA-II/III evolve populations of `population_size`. The
    last two settings apply to TPE and GP only.
    `pruned_trials=observed` shows the sampler each trial that a rung stopped with the
    values it had there; `last` leaves Optuna's view: every pruned trial worse than every
    completed one. Studies stored before the key existed resume with `last`
    (hpo.record.attrs.KEYS_ADDED)."""

    name: SamplerName = "tpe"
    n_startup_trials: int = 5
    population_size: int = 8
    multivariate: bool = True
    random_fraction: float = 0.0
    pruned_trials: PrunedTrials = "observed"

    def __post_init__(self) -> None:
        if self.name not in get_args(SamplerName):
            raise HpoError(f"sampler.name={self.name!r} is unknown; use one of {', '.join(get_args(SamplerName))}")
        if self.n_startup_trials < 0:
            raise HpoError(f"sampler.n_startup_trials={self.n_startup_trials} must be >= 0")
        if not 0 <= self.random_fraction < 1:
            raise HpoError(f"sampler.random_fraction={self.random_fraction} must be in [0, 1); 0 turns it off")
        if self.population_size < 2:
            raise HpoError(f"sampler.population_size={self.population_size} must be at least 2")


@dataclass(frozen=True)
class PrunerConfig:
    """`moasha` for multi-objective studies; `median`, `successive_halving` and `hyperband`
    are Optuna's, for studies with a single objective. Rungs start at `min_tokens`
    (default: the token budget / eta^2) and grow by `eta`. `keep_front` lets every trial
    on a rung's first front continue, and `rung_metric` is what judges the accuracy
    objective at a rung (hpo.search.pruning says why). `pause` makes a rung pause the
    trials it does not keep, for a later promotion, instead of stopping them;
    `min_trials` and `keep_front` then play no part."""

    name: PrunerName = "none"
    eta: int = 3
    min_tokens: int | None = None
    min_trials: int = 3
    keep_front: bool = True
    rung_metric: RungMetric = "val_loss"
    pause: bool = False

    def __post_init__(self) -> None:
        if self.name not in get_args(PrunerName):
            raise HpoError(f"pruner.name={self.name!r} is unknown; use one of {', '.join(get_args(PrunerName))}")
        if self.eta < 2:
            raise HpoError(f"pruner.eta={self.eta} must be at least 2")
        if self.min_tokens is not None and self.min_tokens < 1:
            raise HpoError(f"pruner.min_tokens={self.min_tokens} must be positive")
        if self.min_trials < 1:
            raise HpoError(f"pruner.min_trials={self.min_trials} must be at least 1")
        if self.pause and self.name != "moasha":
            raise HpoError(f"pruner.pause=true needs pruner=moasha (got pruner={self.name}); or drop pruner.pause")
        if self.rung_metric not in get_args(RungMetric):
            raise HpoError(
                f"pruner.rung_metric={self.rung_metric!r} is unknown; use one of {', '.join(get_args(RungMetric))}"
            )

    @property
    def is_optunas(self) -> bool:
        """Whether Optuna's pruner judges (through `trial.report`), which needs one objective."""
        return self.name in OPTUNA_PRUNERS

    def rungs(self, budget_tokens: int) -> list[int]:
        """Token counts where trials are compared: min_tokens x eta^k, as long as the next
        level (the rung times eta) fits in the budget, as in ASHA, where the last rung
        promotes to the full budget. A rung just short of the budget (66,666 x 3 = 199,998
        of 200,000) would stop trials that had paid for nearly all of it.

        The default rungs are the budget / eta^2 and / eta, divided down from the budget: built
        up from a rounded first rung instead, the last one could miss the budget / eta.
        """
        if self.min_tokens is None:
            return sorted({budget_tokens // self.eta**k for k in (2, 1)} - {0})
        out, rung = [], self.min_tokens
        while rung * self.eta <= budget_tokens:
            out.append(rung)
            rung *= self.eta
        return out

    def rung_fields(self, objectives: tuple[str, ...] | list[str]) -> list[str]:
        """The learning-curve field that a rung judges each objective by."""
        return [self.rung_metric if name == "val_accuracy" else name for name in objectives]

    def check_budget(self, budget_tokens: int) -> None:
        """Raise HpoError unless `min_tokens` leaves this pruner a token count to compare at."""
        first = self.min_tokens
        if first is None:
            return
        if first >= budget_tokens:
            raise HpoError(
                f"pruner.min_tokens={first} is not below budget.tokens={budget_tokens}, so no trial would ever be "
                f"compared; lower it (or use pruner=none)"
            )
        if self.name == "moasha" and not self.rungs(budget_tokens):
            raise HpoError(
                f"pruner.min_tokens={first} leaves no rung: the trials a rung keeps go on to min_tokens x eta = "
                f"{first * self.eta} tokens, beyond budget.tokens={budget_tokens}; "
                f"lower it to {budget_tokens // self.eta} or less"
            )
