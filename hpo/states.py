"""Where a study's running trials keep their training state, so that a retry resumes it.

A trial's worker can die (a killed process, a lost machine) or be stopped (Ctrl-C); the
trial then comes back as a retry with the same parameters (hpo.worker, hpo.objective).
Without a state the retry trains from scratch. With one it goes on from the last
evaluation that the lost run reached: the run saves its state there (`train.save_state`,
hpo.checkpoint), and the retry resumes from that file and takes the very steps the lost
run would have taken.

The files live in a folder: next to a SQLite database by default (`hpo.db` keeps them in
`hpo.db-states/`), or `storage.states` for workers of a PostgreSQL study, which must all
mount that folder for one worker's retry to find another's state. A trial names its file
in a trial system attribute before it trains; Optuna copies system attributes into the
retry, which is how the retry finds it. The name is random, so a file left by a deleted
study never passes for another study's state. A trial that ends (complete, pruned or
failed) deletes its file and the one it resumed from; only the trials of dead or stopped
workers leave theirs, for their retries, and paused trials, for their promotions
(hpo.promotion, which names the paused run's state at its rung in the new trial).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from hpo.trainspec import RUNG_STATE

ATTR_STATE = "hpo:state"


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
        """The trial paused (hpo.promotion): its own state stays, the one it resumed from goes."""
        if self.resume is not None:
            _delete_run(self.resume.with_name(self.resume.name.split(RUNG_STATE)[0]))


def _delete_run(path: Path) -> None:
    """A run's state files: the latest, those at its rungs, and a save cut short."""
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
        inherited = trial.system_attrs.get(ATTR_STATE, [])
        existing = [(number, name) for number, name in inherited if (self.path / name).is_file()]
        own = (trial.number, f"trial-{trial.number}-{uuid.uuid4().hex[:12]}.pt")
        storage.set_trial_system_attr(trial._trial_id, ATTR_STATE, [own, *existing[:1]])
        if not existing:
            return StateFiles(self.path / own[1])
        number, name = existing[0]
        return StateFiles(self.path / own[1], self.path / name, number)


def state_folder(storage: optuna.storages.BaseStorage, configured: str | None) -> StateFolder | None:
    """The configured folder, else the one beside a SQLite database, else None (no states:
    retries start over)."""
    if configured:
        return StateFolder(Path(configured))
    if isinstance(storage, optuna.storages.RDBStorage) and storage.engine.url.get_backend_name() == "sqlite":
        database = storage.engine.url.database
        if database:
            return StateFolder(Path(database + "-states"))
    return None
