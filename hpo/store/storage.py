"""Open the SQL backend of a study: SQLite by default, PostgreSQL for many workers.

The URL comes from `--storage`, else the config's `storage.url`, else `HPO_STORAGE`,
else `sqlite:///hpo.db`; `grpc://HOST:PORT` reaches a database through Optuna's gRPC
storage proxy (hpo.store.grpc). It is shown only through `redact`, so a password never reaches a
terminal or a log. Heartbeats turn a trial whose worker died into a retried trial.
"""

from __future__ import annotations

import os
import re
import sys
import time
import weakref
from typing import Any, TypeAlias
from urllib.parse import unquote, unquote_plus

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.schema import CreateIndex, CreateTable

from hpo.config.settings import StorageConfig
from hpo.errors import HpoError
from hpo.store import grpc
from hpo.store.locks import advisory_key
from hpo.store.states import RetryLostTrial, state_folder

# What hpo opens: either keeps heartbeats, so a dead worker's trial is failed and retried.
Storage: TypeAlias = "optuna.storages.RDBStorage | grpc.HeartbeatGrpcStorage"
# Every database this process opened, for close_all.
_OPENED: weakref.WeakSet[sqlalchemy.engine.Engine] = weakref.WeakSet()

DEFAULT_URL = "sqlite:///hpo.db"
DATABASE_URLS = "sqlite:///PATH.db or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
URL_HELP = f"use {DATABASE_URLS.replace(' or ', ', ')} or grpc://HOST:PORT (an `hpo proxy`)"


def resolve_url(flag: str | None = None, configured: str | None = None) -> str:
    return flag or configured or os.environ.get("HPO_STORAGE") or DEFAULT_URL


MASK = "***"
MALFORMED = "<malformed storage URL>"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)\Z", re.S)
# A query parameter that carries a secret: libpq's `password` and `sslpassword`, or any key
# that names a password; or a `password=` inside a value, as libpq's `options=-c password=...`
# would hold one (plain or percent-encoded). (`passfile` names a file, not a secret, and is shown.)
_QUERY_SECRET = re.compile(r"[?&][^?&=#]*password[^?&=#]*=|password\s*(?:=|%3D)", re.I)
_SCHEMES = ("sqlite", "postgresql", "postgres", grpc.SCHEME)
# What cannot be in a user name: text before a `:` that holds one of these is not a user name.
_NOT_A_USER = re.compile(r"[@/?#&]")


def _masked(url: str) -> tuple[str, list[str]]:
    """(the URL with its secrets replaced by ***, the secrets as they appear in it).

    Works on the text itself, not on a parse, so a URL that parses wrongly or not at all
    (an unencoded `@`, `/`, `?` or `&` in a password) never shows a piece of its password:
    - the user-info's password is everything between the user name's `:` and the *last*
      `@`; a user-info whose user name is unclear (it holds `@`, `/`, `?`, `#` or `&`) is
      masked whole, so everything between `://` and the last `@` is hidden;
    - a query password (`?password=`, `&sslpassword=`) is masked to the end of the URL,
      since an unencoded `&` or `#` may be part of it;
    - a URL that has nothing to mask but does not parse is not shown at all, nor is one of
      a scheme hpo does not open (its scheme only: `mysql://***`).
    """
    match = _SCHEME.match(url)
    if match is None:
        return MALFORMED, [url]
    scheme, rest = match.groups()
    backend = scheme.lower().split("+")[0]
    if backend not in _SCHEMES:  # not a URL hpo opens, maybe no URL at all: the scheme only
        return f"{scheme}://{MASK}", [rest]
    rest_at = match.start(2)
    hidden = [False] * len(url)
    if "@" in rest and not (backend == "sqlite" and rest.startswith("/")):  # a path's @ is no user-info
        at = rest_at + rest.rindex("@")
        user, colon, _ = url[rest_at:at].partition(":")
        start = rest_at + len(user) + 1 if colon and not _NOT_A_USER.search(user) else rest_at
        if colon or _NOT_A_USER.search(user):
            hidden[start:at] = [True] * (at - start)
    query_at = url.find("?", rest_at)
    query = _QUERY_SECRET.search(url, query_at) if query_at >= 0 else None
    if query is not None:
        hidden[query.end() :] = [True] * (len(url) - query.end())
    shown: list[str] = []
    secrets: list[str] = []
    i = 0
    while i < len(url):
        j = i
        while j < len(url) and hidden[j] == hidden[i]:
            j += 1
        if hidden[i]:
            secrets.append(url[i:j])
        shown.append(MASK if hidden[i] else url[i:j])
        i = j
    if not secrets:
        try:
            make_url(url)
        except (ArgumentError, ValueError):
            return MALFORMED, [url]
    return "".join(shown), secrets


def redact(url: str) -> str:
    """The URL with its passwords replaced by ***, safe to print or store.

    The one redaction for every storage URL hpo shows: SQLAlchemy URLs (a password in the
    user-info or in the query), `grpc://` URLs, and malformed ones (a malformed URL with
    nothing to mask is not shown at all).
    """
    return _masked(url)[0]


def scrub(text: str, url: str) -> str:
    """`text` (a driver's error message about `url`) without any secret of `url` in it:
    psycopg echoes parts of a connection string, e.g. the host it could not resolve, which
    an unencoded `@` in a password makes a piece of that password."""
    pieces: set[str] = set()
    for secret in _masked(url)[1]:
        for form in (secret, unquote(secret), unquote_plus(secret)):
            pieces.add(form)
            pieces.update(re.split(r"[@:/?#&=]", form))
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 3:
            text = text.replace(piece, MASK)
    return text


def parse_url(url: str) -> URL:
    """A validated SQLAlchemy URL; plain `postgresql://` uses psycopg 3, the driver hpo ships."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise HpoError(f"storage URL {redact(url)!r} is malformed; {URL_HELP}") from None
    if parsed.get_backend_name() != "sqlite" and url.count("@") > 1:
        # SQLAlchemy would split the URL at one of them and the driver would, say, look up
        # the rest of a password as a host name (and print it)
        raise HpoError(
            f"storage URL {redact(url)!r} has more than one @; write an @ in a user name, password "
            "or query value as %40"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise HpoError(f"storage URL {redact(url)!r} names an unsupported database; {URL_HELP}")
    if parsed.get_backend_name() == "sqlite" and not parsed.database:
        raise HpoError(f"storage URL {redact(url)!r} has no file; use sqlite:///PATH.db")
    return parsed


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite database (not an in-memory one), else None."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return url.database
    return None


def open_storage(
    url: str, config: StorageConfig | None = None, *, must_exist: bool = False, proxy_timeout: float = 5.0
) -> Storage:
    """An RDBStorage (or a gRPC proxy client) with heartbeats and retries; HpoError if the
    database (or the proxy, within `proxy_timeout` seconds) does not answer.

    `must_exist` is for commands that only read or join studies: opening a mistyped SQLite
    path would otherwise create an empty database and report that nothing is there.
    """
    config = config or StorageConfig()
    if grpc.is_grpc(url):
        retry = RetryLostTrial(config.max_retry, state_folder(config, None))
        return grpc.connect(
            url, redact(url), config.heartbeat_interval, config.grace_period, retry, timeout=proxy_timeout
        )
    parsed = parse_url(url)
    file = sqlite_file(parsed)
    retry = RetryLostTrial(config.max_retry, state_folder(config, file))
    if parsed.get_backend_name() == "sqlite":
        # Several local workers share one file: wait for the write lock instead of failing.
        engine_kwargs: dict[str, object] = {"connect_args": {"timeout": 60}}
        if file:
            path = os.path.abspath(file)
            if not os.path.isdir(os.path.dirname(path)):
                raise HpoError(f"storage URL {redact(url)!r}: folder {os.path.dirname(path)} does not exist")
            if must_exist and not os.path.exists(path):
                raise HpoError(
                    f"storage {redact(url)}: no database file at {path}; "
                    "pass --storage URL of the studies (`hpo studies --storage URL` lists them)"
                )
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    try:
        storage = optuna.storages.RDBStorage(
            parsed.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            heartbeat_stale_trial_callback=retry,
        )
        if file:
            _write_ahead_log(storage.engine)
        _OPENED.add(storage.engine)
        return storage
    except (SQLAlchemyError, ImportError, OSError) as exc:
        detail = scrub(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0], url)
        raise HpoError(
            f"cannot open storage {redact(url)}: {detail}; check that the database server is "
            "running and the URL is right"
        ) from None


def _write_ahead_log(engine: sqlalchemy.engine.Engine) -> None:
    """SQLite in write-ahead-log mode, synchronised at checkpoints rather than at every commit.

    A trial writes some forty small transactions (attributes, curve points, heartbeats);
    with the default rollback journal each costs two fsyncs (3 ms here; 1.1 ms in WAL
    mode without them). WAL also lets readers (the dashboard, `hpo show`) read while a
    worker writes. A commit survives a crash of any process; only an OS crash or power
    loss can take back the last commits, never corrupt the file. WAL needs the database
    on a local disk, which is where SQLite serves a study's workers anyway.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # kept in the file; a no-op once set
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    engine.dispose()  # connections opened by RDBStorage's set-up reopen with the pragmas


# Study locks are "hpo:STUDY" (hpo.store.locks.study_lock); this name cannot be one of them.
_TABLES_LOCK = advisory_key("hpo-tables")


def create_tables(engine: sqlalchemy.engine.Engine, metadata: sqlalchemy.MetaData) -> None:
    """Create hpo's own tables and their indexes where missing, safely when workers start
    together. `create_all(checkfirst=True)` is not safe: two workers can both find a table
    missing, and the second CREATE fails ("already exists" on SQLite, a unique violation
    in pg_type on PostgreSQL, even with IF NOT EXISTS). So every statement says IF NOT
    EXISTS, which SQLite decides under its write lock, and on PostgreSQL the creation
    holds a transaction-scoped advisory lock."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TABLES_LOCK})
        for table in metadata.sorted_tables:
            conn.execute(CreateTable(table, if_not_exists=True))
            for index in table.indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))


def close_all() -> None:
    """Close the pooled connections of every database this process opened."""
    for engine in list(_OPENED):
        engine.dispose()


def wait_for_storage(
    url: str, config: StorageConfig | None = None, timeout: float = 60.0, poll: float = 1.0
) -> Storage:
    """open_storage, retried while the database does not answer yet (a worker that starts
    before its database, as in docker-compose); says once that it waits, and gives up
    with an HpoError after `timeout` seconds. A malformed URL fails at once."""
    if grpc.is_grpc(url):
        grpc.address(url, redact(url))
    else:
        parse_url(url)
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        left = deadline - time.monotonic()
        try:
            return open_storage(url, config, must_exist=True, proxy_timeout=max(0.1, min(poll, left)))
        except HpoError as exc:
            if time.monotonic() >= deadline:
                raise HpoError(f"{exc} (waited {timeout:g} s)") from None
            if not announced:
                print(f"waiting up to {timeout:g} s for the database at {redact(url)}", file=sys.stderr, flush=True)
                announced = True
            time.sleep(max(0.0, min(poll, deadline - time.monotonic())))
