"""Where a study's running trials keep their training state, so that a retry resumes it.

A trial's worker can die (a killed process, a lost machine) or be stopped (Ctrl-C); the
trial then comes back as a retry with the same parameters (hpo.study.worker, hpo.study.objective).
Without a state the retry trains from scratch. With one it goes on from the last
evaluation that the lost run reached: the run saves its state there (`train.save_state`,
hpo.trainer.checkpoint), and the retry resumes from that file and takes the very steps the lost
run would have taken.

The files live in a folder: next to a SQLite database by default (`hpo.db` keeps them in
`hpo.db-states/`), or `storage.states` for workers of a PostgreSQL study, which must all
mount that folder for one worker's retry to find another's state. A trial names its file
in a trial system attribute before it trains; Optuna copies system attributes into the
retry, which is how the retry finds it. The name is random, so a file left by a deleted
study never passes for another study's state. A trial that ends (complete, pruned or
failed) deletes its file and the one it resumed from; only the trials of dead or stopped
workers leave theirs, for their retries (a trial past `storage.max_retry` gets none, and
its files go: `RetryLostTrial`), and paused trials, for their promotions (hpo.search.promotion,
which names the paused run's state at its rung in the new trial).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from hpo.config.settings import StorageConfig
from hpo.config.training import RUNG_STATE
from hpo.record.attrs import STATE_FILES
from hpo.store.optuna_internals import trial_id


@dataclass(frozen=True)
class StateFiles:
    """One trial's state files: where it saves its own, and the one it resumes from (saved
    by trial number `resumed_trial`)."""

    save: Path
    resume: Path | None = None
    resumed_trial: int | None = None

    def discard(self) -> None:
        """The trial has ended: delete its own state and the one it resumed from."""
        _delete_run(self.save)
        self.discard_resumed()

    def discard_resumed(self) -> None:
        """The trial paused (hpo.search.promotion): its own state stays, the one it resumed from goes."""
        if self.resume is not None:
            _delete_run(self.resume)


def _delete_run(path: Path) -> None:
    """The state files of the run that saved `path` (its latest, or one at a rung): the latest,
    those at its rungs, and a save cut short."""
    path = path.with_name(path.name.split(RUNG_STATE)[0])
    for file in [path, path.with_name(path.name + ".partial"), *path.parent.glob(path.name + RUNG_STATE + "*")]:
        file.unlink(missing_ok=True)


@dataclass(frozen=True)
class StateFolder:
    """The folder of one database's trial states."""

    path: Path

    def claim(self, storage: optuna.storages.BaseStorage, trial: FrozenTrial) -> StateFiles:
        """This trial's files: a new one to save to, and the state it goes on from, if any: the
        latest that the runs it retries saved (if one got as far as an evaluation), or the
        paused run's that it continues.

        The trial's system attribute lists its own file first, then the one it resumes from:
        a retry that dies before its first evaluation leaves its own retry that older state.
        """
        inherited = trial.system_attrs.get(STATE_FILES, [])
        existing = [(number, name) for number, name in inherited if (self.path / name).is_file()]
        own = (trial.number, f"trial-{trial.number}-{uuid.uuid4().hex[:12]}.pt")
        storage.set_trial_system_attr(trial_id(trial), STATE_FILES, [own, *existing[:1]])
        if not existing:
            return StateFiles(self.path / own[1])
        number, name = existing[0]
        return StateFiles(self.path / own[1], self.path / name, number)


def state_folder(config: StorageConfig, sqlite_file: str | None) -> StateFolder | None:
    """Where running trials keep their states: `storage.states`, else beside the database's
    SQLite file, if it has one; None (retries start over) without either, or with
    `storage.save_states` off."""
    if not config.save_states:
        return None
    if config.states:
        return StateFolder(Path(config.states))
    return StateFolder(Path(sqlite_file + "-states")) if sqlite_file else None


class RetryLostTrial:
    """Optuna's retry of a lost trial (a dead worker's, or one stopped by Ctrl-C) that also
    deletes the trial's states when it gets no retry: past `max_retry` retries nothing would
    ever resume them, and a long study would fill its folder with them."""

    def __init__(self, max_retry: int, folder: StateFolder | None) -> None:
        self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self._max_retry, self._folder = max_retry, folder

    @property
    def max_retry(self) -> int:
        """How many times a lost trial is retried (`storage.max_retry`)."""
        return self._max_retry

    def retries(self, trial: FrozenTrial) -> int | None:
        """Which retry of the lost run `trial` gets (1 for the first), or None past `max_retry`."""
        done = len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial))
        return done + 1 if done < self._max_retry else None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Queue the retry, as Optuna's heartbeat check and hpo's Ctrl-C handler ask."""
        last = len(optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)) >= self._max_retry
        self._retry(study, trial)
        if last and self._folder is not None:
            for _, name in trial.system_attrs.get(STATE_FILES, []):  # its own run, and the one it resumed
                _delete_run(self._folder.path / name)
