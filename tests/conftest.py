"""Shared pytest fixtures: SQL storage URLs for SQLite and a throwaway PostgreSQL server.

Fixtures
--------
``sqlite_url``            a fresh ``sqlite:///.../hpo.db`` file URL per test.
``postgres_server``       (session) a private PostgreSQL cluster on 127.0.0.1 and a free port.
``postgres_url``          a fresh database per test, superuser ``postgres``, no password (trust).
``postgres_password_url`` a fresh database owned by role ``hpo``, which must log in with a password
                          (scram-sha-256): ``postgresql+psycopg://hpo:s3cret-pw@127.0.0.1:PORT/DB``.
``postgres_password``     the password in that URL, for tests that check it never leaks.
``storage_url``           parametrized over ``sqlite`` and ``postgres``.

Tests that need PostgreSQL get the ``postgres`` marker automatically, so ``-m "not postgres"``
deselects them. Without PostgreSQL server binaries on the machine they are skipped, except when the
``CI`` environment variable is set (``CI=true``): there a missing PostgreSQL is an error, because CI
must run them. ``HPO_PG_BINDIR`` may name the directory holding ``initdb``/``pg_ctl``/``postgres``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from localpg import PG_PASSWORD, PG_PASSWORD_USER, PostgresServer, find_pg_bindir, start_server, stop_server

from hpo.config.training import DataConfig
from hpo.trainer.data import Dataset, load_dataset


def _in_ci() -> bool:
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


# --------------------------------------------------------------------------------------------------
# SQLite


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file URL inside the test's own temporary directory."""
    return f"sqlite:///{tmp_path}/hpo.db"


# --------------------------------------------------------------------------------------------------
# In-process training


@pytest.fixture(scope="module")
def quiet_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One torch thread, and the CPU peak-FLOP/s probe's cache out of the user's home.

    On a 2-core machine shared with other jobs, two intra-op threads spin against each
    other and a run gets 10-30x slower; one thread keeps the suite fast and changes no
    result that the tests check. Use it with `pytestmark = pytest.mark.usefixtures(...)`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_CACHE_DIR", str(tmp_path_factory.mktemp("hpo-cache")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def builtin() -> Dataset:
    """The builtin corpus, loaded once."""
    return load_dataset(DataConfig())


# --------------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway server for the session (tests/localpg.py)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for the whole session; stopped and deleted at the end."""
    bindir = find_pg_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in $HPO_PG_BINDIR, "
            "/usr/lib/postgresql/*/bin or PATH; install them with `apt-get install postgresql`"
        )
        if _in_ci():
            pytest.fail(f"CI is set, so PostgreSQL tests must run: {reason}", pytrace=False)
        pytest.skip(reason)
    server = start_server(bindir)
    try:
        yield server
    finally:
        stop_server(bindir, server.root)
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database per test: ``postgresql+psycopg://postgres@127.0.0.1:PORT/DBNAME``."""
    name = postgres_server.create_database(request.node.name)
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_password() -> str:
    """The password in ``postgres_password_url``: tests check it never shows in logs or output."""
    return PG_PASSWORD


@pytest.fixture
def postgres_password_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database owned by role ``hpo``, which authenticates with a password (scram-sha-256)."""
    name = postgres_server.create_database(request.node.name, owner=PG_PASSWORD_USER)
    yield postgres_server.url(name, user=PG_PASSWORD_USER, password=PG_PASSWORD)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest) -> str:
    """A fresh storage URL of each kind, for tests that must pass on both SQL backends."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


_POSTGRES_FIXTURES = {"postgres_server", "postgres_url", "postgres_password_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a PostgreSQL fixture ``postgres`` (select with ``-m postgres``)."""
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
