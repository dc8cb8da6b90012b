"""Where a study keeps the trained models of its trials: Optuna artifacts in a folder.

A kept model is the checkpoint that the trial's run saved (hpo.trainer.checkpoint), stored
with Optuna's artifact API in a `FileSystemArtifactStore`: the file under a random artifact
id in the folder, and the trial system attribute `artifacts:<id>` that names it, which
optuna-dashboard's Artifacts tab lists. The folder lies beside a SQLite database by
default (`hpo.db` keeps them in `hpo.db-artifacts/`, as its states in `hpo.db-states/`),
or is `storage.artifacts`, which the workers of a PostgreSQL study must all mount.

Which models a study keeps, and when one goes, is hpo.study.models's decision; this
module only stores, lists, drops and copies them. A trial's model is the artifact named
`trial-<number>-model.pt`: a retry inherits the system attributes of the trial it retries,
and so the names of that trial's artifacts, which are not its own model.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from hpo.config.settings import StorageConfig
from hpo.store.optuna_internals import ARTIFACTS_ATTR_PREFIX, delete_trial_system_attr, trial_id

MODEL_SUFFIX = "-model.pt"
# A running worker's checkpoints wait in `.running-<pid>@<host>@<random>/` of the folder.
SCRATCH = ".running-"


def model_name(number: int) -> str:
    """The file name of trial `number`'s model, as its artifact and a download call it."""
    return f"trial-{number}{MODEL_SUFFIX}"


def artifact_folder(config: StorageConfig, sqlite_file: str | None) -> Path | None:
    """Where the study's models go: `storage.artifacts`, else beside the database's SQLite
    file, if it has one; None (no models kept) without either, or with `storage.keep_models=none`."""
    if config.keep_models == "none":
        return None
    if config.artifacts:
        return Path(config.artifacts)
    return beside(sqlite_file)


def beside(sqlite_file: str | None) -> Path | None:
    """The default folder of a SQLite database's models (None for other databases)."""
    return Path(sqlite_file + "-artifacts") if sqlite_file else None


@dataclass(frozen=True)
class KeptModel:
    """One model artifact of a trial: its id and its file name."""

    artifact_id: str
    filename: str

    @property
    def key(self) -> str:
        """The trial system attribute that names it."""
        return ARTIFACTS_ATTR_PREFIX + self.artifact_id


def models(trial: FrozenTrial) -> list[KeptModel]:
    """The model artifacts a trial's system attributes name (its own, and any it inherited
    as a retry), read from the record at hand: no storage round trip."""
    found = []
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACTS_ATTR_PREFIX):
            meta = json.loads(value)
            if str(meta.get("filename", "")).endswith(MODEL_SUFFIX):
                found.append(KeptModel(meta["artifact_id"], meta["filename"]))
    return found


def own_model(trial: FrozenTrial) -> KeptModel | None:
    """The model that this trial's own run trained, if it is kept."""
    return next((m for m in models(trial) if m.filename == model_name(trial.number)), None)


class ModelFolder:
    """A folder of model artifacts, with the checkpoints of this process's running trials
    in a private subfolder until they are kept or dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = FileSystemArtifactStore(path)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def checkpoint(self, number: int) -> Path:
        """Where trial `number`'s run saves its model, for `keep` to keep (on the same file
        system as the folder, which a large model must fit anyway). The subfolder goes when
        this process ends; `keep` and `discard` delete the file before that."""
        if self._scratch is None:
            self.create()
            self._sweep()
            prefix = f"{SCRATCH}{os.getpid()}@{platform.node()}@"
            self._scratch = tempfile.TemporaryDirectory(prefix=prefix, dir=self.path)
        return Path(self._scratch.name) / model_name(number)

    def _sweep(self) -> None:
        """Delete the scratch subfolders of this host's workers that died without cleaning
        up (SIGKILL, an out-of-memory kill): a checkpoint left there is the size of a model.
        Only this host's are judged, since a pid means nothing on another machine; one of a
        pid that another process took since is kept, which is safe."""
        for folder in self.path.glob(SCRATCH + "*"):
            pid, _, rest = folder.name.removeprefix(SCRATCH).partition("@")
            if rest.rpartition("@")[0] == platform.node() and pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def keep(self, storage: optuna.storages.BaseStorage, trial: optuna.Trial, checkpoint: Path) -> str:
        """Store a running trial's model as its artifact; returns the artifact id. The
        checkpoint file is deleted either way."""
        try:
            return upload_artifact(
                artifact_store=self.store, file_path=str(checkpoint), study_or_trial=trial, storage=storage
            )
        finally:
            checkpoint.unlink(missing_ok=True)

    def drop(self, storage: optuna.storages.RDBStorage, trial: FrozenTrial, model: KeptModel) -> None:
        """Delete a model and the attribute that names it. Another worker may have dropped
        it first: dropping a dropped model does nothing."""
        with contextlib.suppress(ArtifactNotFound):
            self.store.remove(model.artifact_id)
        delete_trial_system_attr(storage, trial_id(trial), model.key)

    def download(self, model: KeptModel, path: Path) -> None:
        """Copy a model to `path` (replaced if it exists; written whole or not at all).
        ArtifactNotFound if the folder lacks it."""
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            download_artifact(artifact_store=self.store, file_path=str(partial), artifact_id=model.artifact_id)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether a process of this id runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
