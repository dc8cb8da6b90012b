"""The typed form of a whole composed config: one training base plus how to search it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from hpo.errors import HpoError
from hpo.feasibility import ResourcesConfig
from hpo.pruning import PrunerConfig
from hpo.search_space import SearchSpace
from hpo.storage import StorageConfig
from hpo.trainspec import TrainConfig

OBJECTIVES: tuple[str, ...] = ("val_accuracy", "tokens_per_sec")
SamplerName = Literal["tpe", "nsga2", "nsga3", "gp", "random"]
PrunedTrials = Literal["last", "observed"]  # how a model-based sampler sees a pruned trial (hpo.sampling)


@dataclass(frozen=True)
class StudySettings:
    """`n_trials` counts trials that ran to an outcome (complete, pruned, failed by their
    configuration); trials lost to a dead worker or Ctrl-C are retried, not counted."""

    name: str = "hpo"
    n_trials: int = 8
    seed: int = 0
    objectives: tuple[str, ...] = OBJECTIVES
    trial_timeout: float | None = 900.0
    baselines: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise HpoError("study.name is empty; give the study a name (study.name=my-study)")
        if self.n_trials < 1:
            raise HpoError(f"study.n_trials={self.n_trials} must be at least 1")
        if not 0 <= self.seed < 2**32:
            raise HpoError(f"study.seed={self.seed} must be in [0, 2**32); any such number gives a reproducible study")
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise HpoError(
                f"study.objectives={list(self.objectives)} must be distinct names among {', '.join(OBJECTIVES)}"
            )
        if self.trial_timeout is not None and self.trial_timeout <= 0:
            raise HpoError(f"study.trial_timeout={self.trial_timeout} must be positive (or null: none)")


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna's samplers, seeded from the study seed. `n_startup_trials` random trials
    come first for TPE and GP, and `random_fraction` of the later ones are random too
    (hpo.sampling); NSGA-II/III evolve populations of `population_size`.
    `pruned_trials=observed` shows the sampler each trial that a rung stopped with the
    values it had there (hpo.sampling); `last`, the default of studies stored before it
    existed, leaves Optuna's view: every pruned trial worse than every completed one.
    sampler/tpe.yaml sets `observed`, where it was measured (README, Early stopping)."""

    name: SamplerName = "tpe"
    n_startup_trials: int = 5
    population_size: int = 8
    multivariate: bool = True
    random_fraction: float = 0.0
    pruned_trials: PrunedTrials = "last"

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
class HpoConfig:
    """Everything a study needs; stored whole in the study so a resume needs nothing else."""

    train: TrainConfig = field(default_factory=TrainConfig)
    search_space: dict[str, Any] = field(default_factory=dict)
    study: StudySettings = field(default_factory=StudySettings)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        space = SearchSpace.from_dict(self.search_space)  # validate early: before a study exists
        # Fixed values are in every trial: a wrong one is a config error now, not N infeasible trials.
        space.apply(self.train, {p.name: p.value for p in space.params if p.kind == "fixed"})
        for i, baseline in enumerate(self.study.baselines):
            space.check_point(baseline, f"study.baselines[{i}]")
        if self.pruner.optuna_pruner() is not None and len(self.study.objectives) > 1:
            raise HpoError(
                f"pruner={self.pruner.name} is Optuna's and needs a single objective "
                f"(study.objectives={list(self.study.objectives)}); use pruner=moasha"
            )
        if self.pruner.name != "none":
            if self.train.budget.tokens is None:
                raise HpoError(f"pruner={self.pruner.name} compares trials at token counts; use budget=tokens")
            self.pruner.check_budget(self.train.budget.tokens)
        if self.pruner.pause and not self.storage.save_states:
            raise HpoError("pruner.pause=true resumes paused trials from their states; leave storage.save_states on")

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.search_space)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
