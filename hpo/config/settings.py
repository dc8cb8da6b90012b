"""The typed form of a whole composed config: what one run is given, and how to search it.

`HpoConfig` has one field per top-level key of `study_configs/config.yaml` (model, data,
optim, train, budget, search_space, study, sampler, pruner, storage, resources), so a
value has the same dotted name in the YAML, on the command line, in an error message and
in the code: `train.batch_size` is `config.train.batch_size`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hpo.config.search import PrunerConfig, SamplerConfig
from hpo.config.search_space import SearchSpace
from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.errors import HpoError

OBJECTIVES: tuple[str, ...] = ("val_accuracy", "tokens_per_sec")
# Which trained models a study keeps (`storage.keep_models`): none, the Pareto front's, every complete trial's.
KEEP_MODELS: tuple[str, ...] = ("none", "front", "all")
# Whether a study's workers must all measure throughput on the same hardware (`study.hardware`).
HARDWARE_MODES: tuple[str, ...] = ("same", "mixed")
# The keys of the RunSpec part of a composed config.
TRAIN_KEYS: tuple[str, ...] = ("model", "data", "optim", "train", "budget")


@dataclass(frozen=True)
class StudySettings:
    """`n_trials` counts trials that ran to an outcome (complete, pruned, failed by their
    configuration); trials lost to a dead worker or Ctrl-C are retried, not counted.

    `hardware`: tokens/s measured on one GPU model (or CPU) and on another are different
    quantities. With `same` the study records the hardware of its first worker and refuses
    workers on other hardware; with `mixed` any may join, each trial records its own, and
    the front is read per hardware.
    """

    name: str = "hpo"
    n_trials: int = 10
    seed: int = 0
    objectives: tuple[str, ...] = OBJECTIVES
    trial_timeout: float | None = 900.0
    baselines: tuple[dict[str, Any], ...] = ()
    hardware: str = "same"

    def __post_init__(self) -> None:
        if self.hardware not in HARDWARE_MODES:
            raise HpoError(f"study.hardware={self.hardware!r} is unknown; use {' or '.join(HARDWARE_MODES)}")
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
class StorageConfig:
    """Where studies live and how dead workers are detected.

    A running trial's worker writes a heartbeat every `heartbeat_interval` seconds; one
    silent for `grace_period` seconds is failed and re-queued (up to `max_retry` times).
    The retry resumes from the training state that the lost run kept in `states`
    (hpo.store.states; by default beside a SQLite database); with `save_states` off, runs
    keep none (a large model's state costs seconds at every evaluation) and retries start
    over.

    `keep_models` keeps the trained weights of complete trials as Optuna artifacts in
    `artifacts` (hpo.store.artifacts; by default beside a SQLite database): `front` those of
    the Pareto front's trials (a model goes when its trial leaves the front), `all` every
    complete trial's, `none` none.
    """

    url: str | None = None
    heartbeat_interval: int = 10
    grace_period: int = 30
    max_retry: int = 3
    states: str | None = None
    save_states: bool = True
    keep_models: str = "front"
    artifacts: str | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1:
            raise HpoError(f"storage.heartbeat_interval={self.heartbeat_interval} must be >= 1 second")
        if self.grace_period <= self.heartbeat_interval:
            raise HpoError(
                f"storage.grace_period={self.grace_period} must exceed "
                f"storage.heartbeat_interval={self.heartbeat_interval}"
            )
        if self.max_retry < 0:
            raise HpoError(f"storage.max_retry={self.max_retry} must be >= 0")
        if self.keep_models not in KEEP_MODELS:
            raise HpoError(
                f"storage.keep_models={self.keep_models!r} is not an option; use storage.keep_models=front "
                "(the Pareto front's models), all or none"
            )


@dataclass(frozen=True)
class ResourcesConfig:
    """Which devices trials may use: `auto` (all visible GPUs, else every CPU core, one
    rank per core), a count (the first N of those) or an explicit list of device ids
    (hpo.trainer.hardware.device_pool finds them).

    `memory_limit_gb` caps the estimated peak memory of one device (host memory on CPU).
    """

    devices: str | int | tuple[int, ...] = "auto"
    memory_limit_gb: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.devices, str) and self.devices != "auto":
            raise HpoError(f"resources.devices={self.devices!r} must be auto, a count or a list of ids")
        if isinstance(self.devices, int) and self.devices < 1:
            raise HpoError(f"resources.devices={self.devices} must be auto or a positive count")
        if isinstance(self.devices, tuple) and (not self.devices or len(set(self.devices)) != len(self.devices)):
            raise HpoError(f"resources.devices={list(self.devices)} must list distinct device ids")
        if self.memory_limit_gb is not None and self.memory_limit_gb <= 0:
            raise HpoError(f"resources.memory_limit_gb={self.memory_limit_gb} must be positive")


@dataclass(frozen=True)
class HpoConfig:
    """Everything a study needs; stored whole in the study so a resume needs nothing else.

    `search_space` has no default of its own: study_configs/search_space/default.yaml is it.
    """

    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    budget: BudgetConfig = field(default_factory=lambda: BudgetConfig(tokens=1_000_000))
    search_space: dict[str, Any] = field(default_factory=dict)
    study: StudySettings = field(default_factory=StudySettings)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)

    def __post_init__(self) -> None:
        space = SearchSpace.from_dict(self.search_space)  # validate early: before a study exists
        space.check(self.training)  # every value a trial can take, before the study exists
        for i, baseline in enumerate(self.study.baselines):
            space.check_point(baseline, f"study.baselines[{i}]")
        if self.pruner.is_optunas and len(self.study.objectives) > 1:
            raise HpoError(
                f"pruner={self.pruner.name} is Optuna's and needs a single objective "
                f"(study.objectives={list(self.study.objectives)}); use pruner=moasha"
            )
        if self.pruner.name != "none":
            if self.budget.tokens is None:
                raise HpoError(f"pruner={self.pruner.name} compares trials at token counts; use budget=tokens")
            self.pruner.check_budget(self.budget.tokens)
        if self.pruner.pause and not self.storage.save_states:
            raise HpoError("pruner.pause=true resumes paused trials from their states; leave storage.save_states on")

    @property
    def training(self) -> RunSpec:
        """The training configuration that every trial starts from (the search space changes it)."""
        return RunSpec(model=self.model, data=self.data, optim=self.optim, train=self.train, budget=self.budget)

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.search_space)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
