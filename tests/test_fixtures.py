"""The storage fixtures in conftest.py work: each URL connects, creates a table, writes and reads."""

from __future__ import annotations

import pytest
import sqlalchemy as sa


def _roundtrip(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        table = sa.Table(
            "fixture_check",
            meta,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(50), nullable=False),
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert().values(id=1, name="hello"))
        with engine.connect() as conn:
            assert conn.execute(sa.select(table.c.name).where(table.c.id == 1)).scalar_one() == "hello"
    finally:
        engine.dispose()


def test_sqlite_url(sqlite_url: str, tmp_path) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path}/hpo.db"
    _roundtrip(sqlite_url)
    assert (tmp_path / "hpo.db").exists()


def test_postgres_url(postgres_url: str, postgres_server) -> None:
    assert postgres_url.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/")
    _roundtrip(postgres_url)


def test_postgres_url_is_fresh_per_test(postgres_url: str) -> None:
    # The previous test created fixture_check in its own database; this one starts empty.
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    _roundtrip(postgres_url)


def test_postgres_password_url(postgres_password_url: str, postgres_password: str, postgres_server) -> None:
    assert postgres_password_url.startswith(
        f"postgresql+psycopg://hpo:{postgres_password}@127.0.0.1:{postgres_server.port}/"
    )
    _roundtrip(postgres_password_url)
    engine = sa.create_engine(postgres_password_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == "hpo"
    finally:
        engine.dispose()


def test_postgres_password_is_required(postgres_password_url: str, postgres_password: str) -> None:
    wrong = postgres_password_url.replace(postgres_password, "wrong-password")
    engine = sa.create_engine(wrong)
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect().close()
    finally:
        engine.dispose()


def test_storage_url(storage_url: str) -> None:
    assert storage_url.split(":", 1)[0] in ("sqlite", "postgresql+psycopg")
    _roundtrip(storage_url)


def test_postgres_tests_are_marked(request: pytest.FixtureRequest, postgres_url: str) -> None:
    assert request.node.get_closest_marker("postgres") is not None
