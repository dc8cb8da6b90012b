"""Create, find and resume self-describing studies.

A study stores its resolved config, its data fingerprint, the hpo version and its trial
target in its user attributes, so `hpo resume NAME` and `hpo worker NAME` rebuild
everything from the database. Continuing a study with a different search space or
different data is refused: the trials would not be comparable.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from hpo import __version__
from hpo.config.settings import HpoConfig
from hpo.config.structured import differences
from hpo.errors import HpoError
from hpo.record import attrs
from hpo.search.pruning import optuna_pruner
from hpo.search.samplers import build_sampler
from hpo.store.curves import CurveStore
from hpo.store.storage import redact

# Keys of the stored config that may differ when a study is continued: run control only.
MUTABLE_KEYS = ("study.n_trials", "storage")

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# hpo drives trials with ask/tell and keeps each running trial's heartbeat itself
# (hpo.study.objective), which this warning of Study.ask does not know.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ, ignoring run-control keys (MUTABLE_KEYS)."""
    return [k for k in differences(stored, current) if not any(k == m or k.startswith(m + ".") for m in MUTABLE_KEYS)]


def create_or_continue(
    config: HpoConfig, storage: optuna.storages.BaseStorage, fingerprint: str, seed_offset: int = 0
) -> optuna.Study:
    """Create the study of `config.study.name`, or continue it if it exists and matches."""
    name = config.study.name
    directions = [optuna.study.StudyDirection.MAXIMIZE] * len(config.study.objectives)
    pruner = optuna_pruner(config.pruner)
    if name in optuna.get_all_study_names(storage):
        # Seeded as when the study began, the sampler would draw the study's first trials
        # again (its random start-up trials, say): a continued study's starts past them.
        held = storage.get_n_trials(storage.get_study_id_from_name(name))
        sampler = build_sampler(config.sampler, config.study.seed + seed_offset + held)
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        check_compatible(study, config, fingerprint)
        # Never lower the target: `hpo resume --n-trials` raised it beyond the stored config's
        # n_trials, which is what a later resume or a joining worker passes here.
        study.set_user_attr(attrs.TARGET, max(attrs.target(study), config.study.n_trials))
        return study
    sampler = build_sampler(config.sampler, config.study.seed + seed_offset)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if attrs.STUDY_CONFIG in study.user_attrs:  # another process created it first
        check_compatible(study, config, fingerprint)
        return study
    if isinstance(storage, optuna.storages.RDBStorage):
        CurveStore(storage.engine).forget(name)  # points left by a deleted study of this name
    study.set_metric_names(list(config.study.objectives))
    study.set_user_attr(attrs.STUDY_CONFIG, stored_config(config))
    study.set_user_attr(attrs.DATA_FINGERPRINT, fingerprint)
    study.set_user_attr(attrs.HPO_VERSION, __version__)
    study.set_user_attr(attrs.TARGET, config.study.n_trials)
    for params in config.study.baselines:
        study.enqueue_trial(config.space.optuna_params(params), skip_if_exists=True)
    return study


def stored_config(config: HpoConfig) -> dict[str, Any]:
    """The config as the study keeps it: a storage URL's password would show in the dashboard."""
    data = attrs.stored_config(config)
    if data["storage"]["url"]:
        data["storage"]["url"] = redact(data["storage"]["url"])
    return data


def check_compatible(study: optuna.Study, config: HpoConfig, fingerprint: str) -> None:
    stored_fp = study.user_attrs.get(attrs.DATA_FINGERPRINT)
    if stored_fp != fingerprint:
        raise HpoError(
            f"study {study.study_name!r} was made on data with fingerprint {str(stored_fp)[:12]}, "
            f"but the data now has {fingerprint[:12]}; restore the data or start a new study.name"
        )
    # As `hpo resume` reads it: keys that hpo gained since the study was stored take the
    # values that keep the behaviour the study was made with.
    stored = attrs.config_from_stored(study.user_attrs.get(attrs.STUDY_CONFIG, {})).to_dict()
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
    stored = study.user_attrs.get(attrs.STUDY_CONFIG)
    if stored is None:
        raise HpoError(f"study {name!r} was not created by hpo (it has no stored config); it cannot be resumed")
    return study, attrs.config_from_stored(stored)
