"""Mutual exclusion between every worker of a study, across processes and hosts.

A PostgreSQL advisory lock, or a file lock beside a SQLite database (which only one host
can use anyway). Claims of trial slots (hpo.study.worker), promotions of paused trials
and the redrawing of a study's dashboard figures (hpo.browse.publisher) happen under it.
Behind Optuna's gRPC proxy there is no SQL and no lock: callers are told so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy


def advisory_key(name: str) -> int:
    """The 64-bit PostgreSQL advisory-lock key of a lock hpo names (a study's, its tables')."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[bool]:
    """Mutual exclusion between every worker of one study, across processes and hosts.

    Yields whether the block is exclusive: False behind a gRPC proxy, which has no lock.
    """
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield False
        return
    engine: sqlalchemy.engine.Engine = storage.engine
    if engine.dialect.name == "postgresql":
        key = advisory_key(f"hpo:{study_name}")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield True
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # an in-memory database has a single process
        return
    lock_path = Path(f"{database}.{hashlib.sha256(study_name.encode()).hexdigest()[:12]}.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
