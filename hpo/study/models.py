"""Which trained models a study keeps (`storage.keep_models`), and when one goes.

`front` keeps the models of the Pareto front's trials (`study.best_trials`), `all` those
of every complete trial, `none` none. A trial's run saves its model to a file that
hpo.store.artifacts gives it; the objective (hpo.study.objective) then keeps it and tells
the trial, in that order, because Optuna writes an artifact's record as a trial system
attribute, which it refuses on a finished trial. With `front`, a model is stored only if
no complete trial dominates it already; after each tell the worker drops the models of
trials that left the front. A trial never comes back to the front once dominated, so
whichever worker drops last (it has seen every tell before its own) leaves exactly the
front's models, and two workers dropping one model is harmless.

Dropping deletes a finished trial's attribute with SQL (hpo.store.optuna_internals), which
workers behind a gRPC proxy cannot do: there `front` is refused, and `all` keeps models
without ever dropping one.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.config.settings import HpoConfig
from hpo.errors import HpoError
from hpo.record.attrs import STUDY_CONFIG, config_from_stored
from hpo.search.pareto import feasible_complete, pareto_trials
from hpo.store import grpc
from hpo.store.artifacts import KeptModel, ModelFolder, artifact_folder, beside, models, own_model
from hpo.store.storage import Storage, parse_url, sqlite_file


@dataclass
class KeptModels:
    """A worker's side of keeping models: what to keep, where, and what to drop."""

    folder: ModelFolder
    storage: Storage
    keep: str  # front or all
    _dropped: set[tuple[int, str]] = field(default_factory=set)  # (trial, artifact id) this process dropped

    def checkpoint(self, number: int) -> Path:
        """Where trial `number`'s run saves its model (hpo.store.artifacts.ModelFolder.checkpoint)."""
        return self.folder.checkpoint(number)

    def keep_if_worth_it(
        self, study: optuna.Study, trial: optuna.Trial, values: Sequence[float], checkpoint: Path
    ) -> None:
        """Keep a running trial's model, with `front` only if no complete trial dominates its
        values (every objective maximized); the checkpoint file goes either way."""
        if self.keep == "front" and _dominated(values, feasible_complete(study.get_trials(deepcopy=False))):
            checkpoint.unlink(missing_ok=True)
            return
        if not checkpoint.is_file():  # a run that saved none (a checkpoint is its last act)
            return
        try:
            self.folder.keep(self.storage, trial, checkpoint)
        except OSError as exc:  # a full disk costs the model, not the trial
            print(f"warning: trial {trial.number}'s model was not kept: {exc}", file=sys.stderr, flush=True)

    def drop_stale(self, study: optuna.Study) -> None:
        """Drop the models that the study no longer keeps: those of trials off the front
        (with `front`), of finished trials that did not complete (a Ctrl-C between keeping
        and the tell), and those a retry inherited. Nothing without SQL (a gRPC proxy)."""
        if not isinstance(self.storage, optuna.storages.RDBStorage):
            return
        trials = study.get_trials(deepcopy=False)
        if self.keep == "front":
            kept = {t.number for t in pareto_trials(study, trials)}
        else:
            kept = {t.number for t in trials if t.state == TrialState.COMPLETE}
        for trial in trials:
            if not trial.state.is_finished():
                continue  # a running trial keeps its model before its tell: not judged yet
            own = own_model(trial) if trial.number in kept else None
            for model in models(trial):
                if model != own and (trial.number, model.artifact_id) not in self._dropped:
                    try:
                        self.folder.drop(self.storage, trial, model)
                    except OSError as exc:  # bookkeeping: a later drop retries it
                        print(f"warning: trial {trial.number}'s model was not dropped: {exc}", file=sys.stderr)
                        continue
                    self._dropped.add((trial.number, model.artifact_id))


def _dominated(values: Sequence[float], trials: Sequence[FrozenTrial]) -> bool:
    """Whether a trial dominates `values`: no worse in every objective, better in one."""
    return any(
        all(v >= w for v, w in zip(t.values, values, strict=True))
        and any(v > w for v, w in zip(t.values, values, strict=True))
        for t in trials
    )


def models_of(storage: Storage, config: HpoConfig) -> KeptModels | None:
    """The study's kept models for a worker on `storage`; None if it keeps none (the
    setting, or no folder for this database, which a note says once); HpoError for
    `front` behind a gRPC proxy."""
    keep = config.storage.keep_models
    is_rdb = isinstance(storage, optuna.storages.RDBStorage)
    database = sqlite_file(storage.engine.url) if isinstance(storage, optuna.storages.RDBStorage) else None
    folder = artifact_folder(config.storage, database)
    if keep == "none":
        return None
    if folder is None:
        _note(
            f"note: no models are kept: storage.keep_models={keep} keeps them beside a SQLite database, and this "
            "one is not; give storage.artifacts=DIR (a folder every worker mounts), or storage.keep_models=none"
        )
        return None
    if keep == "front" and not is_rdb:
        raise HpoError(
            "storage.keep_models=front drops models that leave the Pareto front, which workers behind a gRPC proxy "
            "cannot (it takes SQL); use storage.keep_models=all or none, or give the workers the database URL"
        )
    models = ModelFolder(folder)
    models.create()
    return KeptModels(models, storage, keep)


@functools.cache
def _note(text: str) -> None:
    """Print a note once per process (each worker opens its stores once, `hpo run` twice)."""
    print(text, file=sys.stderr, flush=True)


def study_models(study: optuna.Study, url: str, artifacts: str | None = None) -> ModelFolder:
    """The folder of a stored study's models: `artifacts`, else its `storage.artifacts`, else
    beside its SQLite database (at `url`); HpoError if it kept none."""
    stored = study.user_attrs.get(STUDY_CONFIG)
    config = config_from_stored(stored).storage if stored is not None else None
    if artifacts:
        if not Path(artifacts).is_dir():
            raise HpoError(f"--artifacts {artifacts} is not a folder; give the folder the study keeps its models in")
        return ModelFolder(Path(artifacts))
    if config is not None and config.keep_models == "none":
        raise HpoError(f"study {study.study_name!r} keeps no models (storage.keep_models=none)")
    database = None if grpc.is_grpc(url) else sqlite_file(parse_url(url))
    folder = (artifact_folder(config, database) if config is not None else None) or beside(database)
    if folder is None or not folder.is_dir():
        where = (
            f"no folder {folder}" if folder is not None else "no storage.artifacts for a database that is not SQLite"
        )
        raise HpoError(
            f"study {study.study_name!r} has no kept models here ({where}); give the folder with --artifacts DIR"
        )
    return ModelFolder(folder)


def trial_model(study: optuna.Study, number: int) -> KeptModel:
    """Trial `number`'s kept model; HpoError saying why there is none."""
    trials = study.get_trials(deepcopy=False)
    trial = next((t for t in trials if t.number == number), None)
    if trial is None:
        raise HpoError(f"study {study.study_name!r} has no trial {number} (its trials are 0 to {len(trials) - 1})")
    if trial.state != TrialState.COMPLETE:
        raise HpoError(f"trial {number} is {trial.state.name.lower()}, not complete: only complete trials keep models")
    model = own_model(trial)
    if model is not None:
        return model
    stored = study.user_attrs.get(STUDY_CONFIG)
    keep = config_from_stored(stored).storage.keep_models if stored is not None else None
    if keep == "front" and number not in {t.number for t in pareto_trials(study)}:
        raise HpoError(
            f"trial {number} has no kept model: it is not on the Pareto front (any more), and "
            "storage.keep_models=front keeps only the front's; `hpo show` lists the front"
        )
    raise HpoError(f"trial {number} has no kept model: its worker kept none (no artifact folder, or an older hpo)")
