"""Mutual exclusion between every worker of a study, across processes and hosts.

A PostgreSQL advisory lock, or a file lock beside a SQLite database (which only one host
can use anyway) whose file exists only while it is held or waited for: a run leaves no
lock file behind. Claims of trial slots (hpo.study.worker), promotions of paused trials
and the redrawing of a study's dashboard figures (hpo.browse.publisher) happen under it.
Behind Optuna's gRPC proxy there is no SQL and no lock: callers are told so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
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
    with file_lock(Path(f"{database}.{hashlib.sha256(study_name.encode()).hexdigest()[:12]}.lock")):
        yield True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on the file `path`, which exists only while someone holds or
    waits for the lock: the holder deletes it before it lets go.

    Deleting a lock file races with a process that opened it and waits: once it gets the
    lock, the path may name a new file, locked by someone else, or none. So a process that
    gets the lock checks that the path still names the file it locked (same device and
    inode), and starts over otherwise; and only the holder deletes the file, while it
    still holds the lock, so a path that names a locked file names the only live lock.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = os.fstat(fd)
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None
        except BaseException:
            os.close(fd)
            raise
        if named is not None and (named.st_dev, named.st_ino) == (locked.st_dev, locked.st_ino):
            break
        os.close(fd)  # a file its holder deleted: closing it drops the lock on it; try the path again
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):  # someone removed it by hand
                os.unlink(path)
        finally:
            os.close(fd)
