"""Create, find and resume self-describing studies (decision 5 in DESIGN.md).

A study stores its resolved config, its data fingerprint, the hpo version and its trial
target in its user attributes, so `hpo resume NAME` and `hpo worker NAME` rebuild
everything from the database. Continuing a study with a different search space or
different data is refused: the trials would not be comparable.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo import __version__
from hpo.curves import CurveStore
from hpo.errors import HpoError
from hpo.sampling import AsObserved, RandomShare
from hpo.settings import HpoConfig, SamplerConfig
from hpo.storage import redact
from hpo.structured import build, differences

ATTR_CONFIG = "hpo_config"
ATTR_FINGERPRINT = "data_fingerprint"
ATTR_VERSION = "hpo_version"
ATTR_TARGET = "n_trials"
ATTR_REASON = "failure_reason"
ATTR_MESSAGE = "failure_message"
# A claim that a worker behind the gRPC proxy gave back (hpo.worker): it never ran.
SURPLUS = "surplus"
# Failure reasons of trials that free their slot of the target for another trial.
LOST_REASONS = ("interrupted", SURPLUS)
# Keys of the stored config that may differ when a study is continued: run control only.
MUTABLE_KEYS = ("study.n_trials", "storage")

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# hpo drives trials with ask/tell and keeps each running trial's heartbeat itself
# (hpo.objective), which this warning of Study.ask does not know.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def build_sampler(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured Optuna sampler, with its view of pruned trials and its random share
    if so configured (hpo.sampling). Constraints come from `trial.set_constraint`."""
    seed %= 2**32  # NumPy's limit, which the offsets of continued studies and joining workers can pass
    sampler = _optuna_sampler(config, seed)
    if config.pruned_trials == "observed":
        sampler = AsObserved(sampler)
    return RandomShare(sampler, config.random_fraction, seed) if config.random_fraction else sampler


def _optuna_sampler(config: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
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
    return optuna.samplers.RandomSampler(seed=seed)


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ, ignoring run-control keys (MUTABLE_KEYS)."""
    return [k for k in differences(stored, current) if not any(k == m or k.startswith(m + ".") for m in MUTABLE_KEYS)]


def create_or_continue(
    config: HpoConfig, storage: optuna.storages.BaseStorage, fingerprint: str, seed_offset: int = 0
) -> optuna.Study:
    """Create the study of `config.study.name`, or continue it if it exists and matches."""
    name = config.study.name
    directions = [optuna.study.StudyDirection.MAXIMIZE] * len(config.study.objectives)
    pruner = config.pruner.optuna_pruner()
    if name in optuna.get_all_study_names(storage):
        # Seeded as when the study began, the sampler would draw the study's first trials
        # again (its random start-up trials, say): a continued study's starts past them.
        held = storage.get_n_trials(storage.get_study_id_from_name(name))
        sampler = build_sampler(config.sampler, config.study.seed + seed_offset + held)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        check_compatible(study, config, fingerprint)
        # Never lower the target: `hpo resume --n-trials` raised it beyond the stored config's
        # n_trials, which is what a later resume or a joining worker passes here.
        study.set_user_attr(ATTR_TARGET, max(target(study), config.study.n_trials))
        return study
    sampler = build_sampler(config.sampler, config.study.seed + seed_offset)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if ATTR_CONFIG in study.user_attrs:  # another process created it first
        check_compatible(study, config, fingerprint)
        return study
    if isinstance(storage, optuna.storages.RDBStorage):
        CurveStore(storage.engine).forget(name)  # points left by a deleted study of this name
    study.set_metric_names(list(config.study.objectives))
    study.set_user_attr(ATTR_CONFIG, stored_config(config))
    study.set_user_attr(ATTR_FINGERPRINT, fingerprint)
    study.set_user_attr(ATTR_VERSION, __version__)
    study.set_user_attr(ATTR_TARGET, config.study.n_trials)
    for params in config.study.baselines:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


def stored_config(config: HpoConfig) -> dict[str, Any]:
    """The config as the study keeps it: a storage URL's password would show in the dashboard."""
    data = config.to_dict()
    if data["storage"]["url"]:
        data["storage"]["url"] = redact(data["storage"]["url"])
    return data


def check_compatible(study: optuna.Study, config: HpoConfig, fingerprint: str) -> None:
    stored_fp = study.user_attrs.get(ATTR_FINGERPRINT)
    if stored_fp != fingerprint:
        raise HpoError(
            f"study {study.study_name!r} was made on data with fingerprint {str(stored_fp)[:12]}, "
            f"but the data now has {fingerprint[:12]}; restore the data or start a new study.name"
        )
    # Through `build`, as `hpo resume` reads it: keys that hpo gained since the study was
    # stored take their defaults, which keep the behaviour the study was made with.
    stored = build(HpoConfig, study.user_attrs.get(ATTR_CONFIG, {})).to_dict()
    diffs = config_differences(stored, config.to_dict())
    if diffs:
        raise HpoError(
            f"study {study.study_name!r} exists with a different config ({', '.join(diffs[:3])}); "
            f"use `hpo resume {study.study_name}` to continue it as stored, or a new study.name"
        )


def find_study(name: str, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """The study called `name` (made by hpo or not), or an HpoError that says where to look."""
    if name not in optuna.get_all_study_names(storage):
        raise HpoError(f"study {name!r} does not exist in {redact(url)}; `hpo studies` lists those that do")
    return optuna.load_study(study_name=name, storage=storage)


def load_existing(name: str, storage: optuna.storages.BaseStorage, url: str) -> tuple[optuna.Study, HpoConfig]:
    """A stored hpo study and its config, rebuilt from the database alone."""
    study = find_study(name, storage, url)
    stored = study.user_attrs.get(ATTR_CONFIG)
    if stored is None:
        raise HpoError(f"study {name!r} was not created by hpo (it has no stored config); it cannot be resumed")
    return study, build(HpoConfig, stored)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials queued again (their worker died, or Ctrl-C stopped it)."""
    return {n for t in trials for n in optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t)}


def slot_takers(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that hold a slot of the target, or will once they run: all but those lost to a
    dead worker (their retry holds the slot) or to Ctrl-C, and surplus claims (hpo.worker)."""
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried and t.user_attrs.get(ATTR_REASON) not in LOST_REASONS]


def ran(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """All trials but surplus claims: those are bookkeeping of the proxy's workers, and
    counting them as failures would tell the user that something went wrong."""
    return [t for t in trials if t.user_attrs.get(ATTR_REASON) != SURPLUS]


def counted_trials(study: optuna.Study) -> int:
    """Trials that took a slot of the target: started, and not lost."""
    return sum(1 for t in slot_takers(study.get_trials(deepcopy=False)) if t.state != TrialState.WAITING)


def target(study: optuna.Study) -> int:
    return int(study.user_attrs.get(ATTR_TARGET, 0))
