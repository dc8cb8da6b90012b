"""Learning curves, stored durably in the study's database as trials run.

Optuna cannot hold them for hpo's studies (`trial.report` raises NotImplementedError when a
study has several objectives), and trial user attributes would not do either: each is a
JSON blob rewritten whole, and a pruning decision needs, for one rung, the first point at
or after that many tokens of every trial of the study. A table of its own, in the same
database, answers that with one indexed query, from any worker, and keeps the points of
failed and pruned trials too.

Behind Optuna's gRPC storage proxy (hpo.store.grpc) there is no SQL to run. There each point is
a trial system attribute of its own, written once and never rewritten, and a rung is read
from the study's trials, which the proxy client caches and refreshes incrementally.
`open_curves` picks the form that the storage allows.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Protocol

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial

from hpo.record.attrs import CURVE_POINT
from hpo.record.outcome import EvalEvent
from hpo.store.storage import create_tables

_metadata = sa.MetaData()
CURVES = sa.Table(
    "hpo_learning_curves",
    _metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("trial", sa.Integer, primary_key=True),
    sa.Column("step", sa.Integer, primary_key=True),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("train_loss", sa.Float, nullable=False),
    sa.Column("val_loss", sa.Float, nullable=False),
    sa.Column("val_accuracy", sa.Float, nullable=False),
    sa.Column("tokens_per_sec", sa.Float, nullable=False),
    sa.Index("ix_hpo_learning_curves_study_tokens", "study", "tokens"),
)


class Curves(Protocol):
    """Where the learning curves of a database's studies are kept."""

    def record(self, study: str, trial: int, event: EvalEvent) -> None: ...

    def curve(self, study: str, trial: int) -> list[EvalEvent]: ...

    def curves(self, study: str) -> dict[int, list[EvalEvent]]: ...

    def at_rung(self, study: str, tokens: int) -> dict[int, EvalEvent]:
        """Each trial's first point at or after `tokens`: what it had shown at that rung."""
        ...

    def forget(self, study: str) -> None:
        """Drop the points of a study name (a new study reusing a deleted one's name)."""
        ...

    def take_over(self, study: str, parent: int | None, trial: int) -> list[EvalEvent]:
        """Give `trial` the points of `parent`, whose run it resumes (hpo.store.states), or none
        when it starts over (`parent` None); returns them."""
        ...


def open_curves(storage: optuna.storages.BaseStorage) -> Curves:
    if isinstance(storage, optuna.storages.RDBStorage):
        return CurveStore(storage.engine)
    return AttrCurves(storage)


class CurveStore:
    """The learning-curve table of one database (created on first use)."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        create_tables(engine, _metadata)

    def record(self, study: str, trial: int, event: EvalEvent) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.insert(CURVES).values(study=study, trial=trial, **asdict(event)))

    def curve(self, study: str, trial: int) -> list[EvalEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*_event_columns())
                .where(CURVES.c.study == study, CURVES.c.trial == trial)
                .order_by(CURVES.c.step)
            )
            return [EvalEvent(*row) for row in rows]

    def curves(self, study: str) -> dict[int, list[EvalEvent]]:
        out: dict[int, list[EvalEvent]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(CURVES.c.trial, *_event_columns())
                .where(CURVES.c.study == study)
                .order_by(CURVES.c.trial, CURVES.c.step)
            )
            for trial, *values in rows:
                out.setdefault(trial, []).append(EvalEvent(*values))
        return out

    def at_rung(self, study: str, tokens: int) -> dict[int, EvalEvent]:
        first: dict[int, EvalEvent] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(CURVES.c.trial, *_event_columns())
                .where(CURVES.c.study == study, CURVES.c.tokens >= tokens)
                .order_by(CURVES.c.trial, CURVES.c.tokens)
            )
            for trial, *values in rows:
                first.setdefault(trial, EvalEvent(*values))
        return first

    def forget(self, study: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(CURVES).where(CURVES.c.study == study))

    def take_over(self, study: str, parent: int | None, trial: int) -> list[EvalEvent]:
        points = self.curve(study, parent) if parent is not None else []
        if points:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(CURVES), [{"study": study, "trial": trial, **asdict(e)} for e in points])
        return points


class AttrCurves:
    """Learning curves as trial system attributes, one per point, for storages without SQL."""

    PREFIX = CURVE_POINT

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage = storage
        self._trial_ids: dict[tuple[str, int], int] = {}  # ids never change: one lookup each

    def _trial_id(self, study: str, trial: int) -> int:
        if (study, trial) not in self._trial_ids:
            study_id = self.storage.get_study_id_from_name(study)
            self._trial_ids[study, trial] = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial)
        return self._trial_ids[study, trial]

    def record(self, study: str, trial: int, event: EvalEvent) -> None:
        key = f"{self.PREFIX}{event.step:012d}"
        self.storage.set_trial_system_attr(self._trial_id(study, trial), key, asdict(event))

    def curve(self, study: str, trial: int) -> list[EvalEvent]:
        return self._points(self.storage.get_trial(self._trial_id(study, trial)))

    def curves(self, study: str) -> dict[int, list[EvalEvent]]:
        study_id = self.storage.get_study_id_from_name(study)
        trials = self.storage.get_all_trials(study_id, deepcopy=False)
        return {t.number: points for t in trials if (points := self._points(t))}

    def _points(self, trial: FrozenTrial) -> list[EvalEvent]:
        points = sorted((k, v) for k, v in trial.system_attrs.items() if k.startswith(self.PREFIX) and v is not None)
        return [EvalEvent(**value) for _, value in points]

    def at_rung(self, study: str, tokens: int) -> dict[int, EvalEvent]:
        first: dict[int, EvalEvent] = {}
        for trial, events in self.curves(study).items():
            reached = [e for e in events if e.tokens >= tokens]
            if reached:
                first[trial] = min(reached, key=lambda e: e.tokens)
        return first

    def forget(self, study: str) -> None:
        """Nothing to do: the points of a deleted study went with its trials."""

    def take_over(self, study: str, parent: int | None, trial: int) -> list[EvalEvent]:
        """Nothing to copy: Optuna copied the lost run's points into the retry with the system
        attributes. A retry that starts over blanks them (attributes cannot be deleted), or
        its curve would show the lost run's points until its own overwrote them, and those
        past where it stopped for good."""
        if parent is not None:
            return self.curve(study, trial)
        trial_id = self._trial_id(study, trial)
        for key, value in self.storage.get_trial(trial_id).system_attrs.items():
            if key.startswith(self.PREFIX) and value is not None:
                self.storage.set_trial_system_attr(trial_id, key, None)
        return []


def _event_columns() -> list[sa.Column]:
    return [CURVES.c[f.name] for f in fields(EvalEvent)]
