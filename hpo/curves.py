"""Learning curves, stored durably in the study's database as trials run.

Optuna cannot hold them for hpo's studies (`trial.report` raises NotImplementedError when a
study has several objectives), and trial user attributes would not do either: each is a
JSON blob rewritten whole, and a pruning decision needs, for one rung, the first point at
or after that many tokens of every trial of the study. A table of its own, in the same
database, answers that with one indexed query, from any worker, and keeps the points of
failed and pruned trials too.
"""

from __future__ import annotations

from dataclasses import asdict, fields

import sqlalchemy as sa

from hpo.train import EvalEvent

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


class CurveStore:
    """The learning-curve table of one database (created on first use)."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        _metadata.create_all(engine, checkfirst=True)

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
        """Each trial's first point at or after `tokens`: what it had shown at that rung."""
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
        """Drop the points of a study name (a new study reusing a deleted one's name)."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(CURVES).where(CURVES.c.study == study))


def _event_columns() -> list[sa.Column]:
    return [CURVES.c[f.name] for f in fields(EvalEvent)]
