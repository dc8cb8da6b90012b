"""Use what a study found: train a trial's exact configuration again, alone (`hpo train
--from-trial`) or with the rest of the Pareto front in a new study (`hpo retrain`).

A trial stores its resolved training config, seed included (hpo.record.attrs.CONFIG), and
its study stores the rest (resources, storage, objectives), so a trial is rebuilt from the
database alone, with no parameter retyped; overrides (a bigger budget, say) apply on top,
with the same `key=value` grammar as everywhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.compose import apply_overrides, hpo_config
from hpo.config.settings import HpoConfig
from hpo.errors import HpoError
from hpo.record import attrs
from hpo.search.pareto import feasible_complete, pareto_trials
from hpo.store.locks import study_lock
from hpo.study.lifecycle import create_or_continue

# Fields of a trial's stored `train` section that name that trial's own files: a run
# trained again writes its own, or none.
OWN_FILES = ("save_state", "resume_from", "checkpoint")


def complete_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` of the study; HpoError unless it completed (only a complete trial's
    run is one to train again: a pruned or failed one stopped before its budget)."""
    name = study.study_name
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None:
        n = len(study.get_trials(deepcopy=False))
        have = f"its trials are 0-{n - 1}" if n else "it has no trials yet"
        raise HpoError(f"study {name!r} has no trial {number}; {have} (`hpo show {name}` lists the front)")
    if trial.state != TrialState.COMPLETE:
        why = attrs.read_reason(trial) or trial.state.name.lower()
        raise HpoError(
            f"trial {number} of study {name!r} did not complete ({why}); only a complete trial can be trained "
            f"again: pick one of the front (`hpo show {name}`)"
        )
    return trial


def trial_config(study_config: HpoConfig, trial: FrozenTrial, overrides: Sequence[str], what: str) -> HpoConfig:
    """The study's config with `trial`'s resolved training config (its seed included), then
    `overrides` on top; `what` names the command in an override's error."""
    run = copy.deepcopy(trial.user_attrs[attrs.CONFIG])
    run["train"].update(dict.fromkeys(OWN_FILES))
    return hpo_config(apply_overrides({**study_config.to_dict(), **run}, overrides, what))


def retrain_config(study: optuna.Study, study_config: HpoConfig, overrides: Sequence[str], n: int | None) -> HpoConfig:
    """The config of a study that trains the source study's front (its first `n` trials by
    the first objective) again: the source's config under the name `SOURCE-retrain`, then
    the overrides (a bigger budget, a study.name), without early stopping (every trial must
    reach the new budget for the ranking to be compared), with one trial per front trial."""
    front = len(_front(study, n))
    data = study_config.to_dict()
    data["study"].update(name=f"{study.study_name}-retrain", baselines=[])
    data["pruner"] = {"name": "none"}
    data = apply_overrides(data, overrides, "hpo retrain")
    if data["pruner"] != {"name": "none"}:
        raise HpoError("hpo retrain trains every front trial to the new budget; leave out the pruner.* overrides")
    # What the ranking compares must be what the source measured, on the data it measured it on.
    before = study_config.to_dict()
    for what, now, then in (
        ("data.*", data["data"], before["data"]),
        ("study.objectives", list(data["study"]["objectives"]), list(before["study"]["objectives"])),
    ):
        if now != then:
            raise HpoError(
                f"hpo retrain compares the front on its own data and objectives; leave out the {what} overrides"
            )
    data["study"]["n_trials"] = front
    return hpo_config(data)


def create_retrain(
    source: optuna.Study, config: HpoConfig, storage: optuna.storages.BaseStorage, n: int | None, fingerprint: str
) -> optuna.Study:
    """The retrain study of `config`, created with one queued trial per front trial of
    `source` (its parameters, and its seed and values as the trial's Source), or continued
    as it was queued (its target stays: a front that grew since is a new retrain)."""
    # Under the study lock: two retrains launched at once queue the front once.
    with study_lock(storage, config.study.name):
        return _create_retrain(source, config, storage, n, fingerprint)


def _create_retrain(
    source: optuna.Study, config: HpoConfig, storage: optuna.storages.BaseStorage, n: int | None, fingerprint: str
) -> optuna.Study:
    if config.study.name in optuna.get_all_study_names(storage):
        held = optuna.load_study(study_name=config.study.name, storage=storage)
        if held.user_attrs.get(attrs.RETRAIN_OF) == source.study_name:
            config = replace(config, study=replace(config.study, n_trials=attrs.target(held)))
    study = create_or_continue(config, storage, fingerprint)
    made_from = study.user_attrs.get(attrs.RETRAIN_OF)
    if made_from is not None:
        if made_from != source.study_name:
            raise HpoError(
                f"study {study.study_name!r} retrains {made_from!r}, not {source.study_name!r}; "
                f"name the new study (study.name=...)"
            )
        return study
    if len(study.get_trials(deepcopy=False)) > 0:
        raise HpoError(f"study {study.study_name!r} already has trials of its own; name the new study (study.name=...)")
    names = source.metric_names or list(config.study.objectives)
    for trial in _front(source, n):
        seed = int(trial.user_attrs[attrs.SEED])
        values = dict(zip(names, trial.values, strict=True))
        queued = attrs.Source(source.study_name, trial.number, seed, values)
        study.enqueue_trial(trial.params, user_attrs=queued.as_attrs())
    study.set_user_attr(attrs.RETRAIN_OF, source.study_name)
    return study


def _front(study: optuna.Study, n: int | None) -> list[FrozenTrial]:
    """The study's Pareto front by the first objective, its first `n` trials."""
    if n is not None and n < 1:
        raise HpoError(f"--n={n} must be at least 1")
    front = sorted(pareto_trials(study), key=lambda t: -t.values[0])
    front = [t for t in feasible_complete(front) if attrs.SEED in t.user_attrs]
    if not front:
        raise HpoError(f"study {study.study_name!r} has no complete trial yet; run it first (`hpo resume`)")
    return front[:n]
