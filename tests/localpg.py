"""A throwaway local PostgreSQL server: for the tests, and for trying the multi-worker
topology on one machine without Docker (scripts/local_cluster.py).

PostgreSQL refuses to run as root, so as root its tools run as the `postgres` user, in a
directory that user owns; the server listens on 127.0.0.1 only, with durability off
(fsync, full-page writes, synchronous commit): fast, and never for data you keep.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PG_PASSWORD_USER = "hpo"
PG_PASSWORD = "s3cret-pw"
_PG_TOOLS = ("initdb", "pg_ctl", "postgres")
_PG_START_ATTEMPTS = 3
_PG_START_TIMEOUT_S = 60


# --------------------------------------------------------------------------------------------------
# PostgreSQL: locating binaries


def _version_key(bindir: str) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric version, highest last."""
    version = Path(bindir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_pg_bindir() -> str | None:
    """The directory holding initdb, pg_ctl and postgres, or None when PostgreSQL is not installed.

    Looks at $HPO_PG_BINDIR, then /usr/lib/postgresql/*/bin (Debian/Ubuntu; highest version first),
    then the directory of ``initdb`` on PATH.
    """

    def complete(directory: str) -> bool:
        return all(os.access(os.path.join(directory, tool), os.X_OK) for tool in _PG_TOOLS)

    candidates: list[str] = []
    if os.environ.get("HPO_PG_BINDIR"):
        candidates.append(os.environ["HPO_PG_BINDIR"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))
    for directory in candidates:
        if complete(directory):
            return directory
    return None


# --------------------------------------------------------------------------------------------------
# PostgreSQL: a throwaway server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running throwaway PostgreSQL cluster. ``str(server)`` is its superuser URL (no database)."""

    host: str
    port: int
    user: str
    bindir: str
    root: Path
    password_user: str = PG_PASSWORD_USER
    password: str = PG_PASSWORD
    _counter: int = field(default=0, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    def url(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for ``dbname``."""
        credentials = user or self.user
        if password is not None:
            credentials += f":{password}"
        return f"postgresql+psycopg://{credentials}@{self.host}:{self.port}/{dbname}"

    def __str__(self) -> str:
        return self.url()

    def admin(self, sql: str) -> None:
        """Run one statement as the superuser, in autocommit mode (CREATE/DROP DATABASE need it)."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)

    def create_database(self, hint: str = "t", owner: str | None = None) -> str:
        """Create a database with a unique, readable name and return the name."""
        self._counter += 1
        stem = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:32] or "t"
        name = f"{stem}_{self._counter}_{uuid.uuid4().hex[:8]}"
        owner_clause = f' OWNER "{owner}"' if owner else ""
        self.admin(f'CREATE DATABASE "{name}"{owner_clause}')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connections a test left open. Errors are ignored."""
        with contextlib.suppress(Exception):
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], cwd: Path, what: str, logfile: Path | None = None) -> None:
    result = subprocess.run(
        _as_postgres_user(cmd),
        cwd=cwd,  # the postgres user must be able to enter the working directory
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_PG_START_TIMEOUT_S + 30,
        check=False,
    )
    if result.returncode != 0:
        log = ""
        if logfile is not None and logfile.exists():
            log = "\n--- server log (tail) ---\n" + "\n".join(logfile.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n{result.stdout}\n{result.stderr}{log}"
        )


def _make_root(root: Path | None = None) -> Path:
    """A directory that the server's user owns (pytest's tmp dirs are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="hpo-pg-")) if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    (root / "sock").mkdir(exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(
                "running as root, but there is no 'postgres' user to run PostgreSQL as "
                "(install the postgresql package, or run the tests as a normal user)"
            ) from exc
        for path in (root, root / "sock"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return root


def _initdb(bindir: str, root: Path) -> None:
    _run(
        [
            os.path.join(bindir, "initdb"),
            "--pgdata",
            str(root / "data"),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ],
        cwd=root,
        what="initdb",
    )
    datadir = root / "data"
    # First match wins: the password role must authenticate; everyone else is trusted (local only).
    (datadir / "pg_hba.conf").write_text(
        "# written by tests/localpg.py\n"
        "local all all                trust\n"
        f"host  all {PG_PASSWORD_USER}  127.0.0.1/32   scram-sha-256\n"
        "host  all all                127.0.0.1/32   trust\n"
    )


def _configure(root: Path, port: int) -> None:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{root / 'sock'}'",
        "max_connections": "200",
        "shared_buffers": "'32MB'",
        "fsync": "off",
        "full_page_writes": "off",
        "synchronous_commit": "off",
        "password_encryption": "'scram-sha-256'",
        "log_min_messages": "warning",
    }
    # postgresql.auto.conf is read last, so these override postgresql.conf; rewritten on each attempt.
    text = "# written by tests/localpg.py\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
    (root / "data" / "postgresql.auto.conf").write_text(text)


def start_server(bindir: str, root: Path | None = None) -> PostgresServer:
    """initdb and start a cluster in `root` (default: a new temporary directory)."""
    root = _make_root(root)
    try:
        _initdb(bindir, root)
        pg_ctl = os.path.join(bindir, "pg_ctl")
        last_error: Exception | None = None
        for _attempt in range(_PG_START_ATTEMPTS):  # the free port may be taken before we bind it
            port = _free_port()
            _configure(root, port)
            server = PostgresServer(host="127.0.0.1", port=port, user="postgres", bindir=bindir, root=root)
            try:
                _run(
                    [
                        pg_ctl,
                        "start",
                        "--pgdata",
                        str(server.datadir),
                        "--log",
                        str(server.logfile),
                        "--wait",
                        "--timeout",
                        str(_PG_START_TIMEOUT_S),
                    ],
                    cwd=root,
                    what="pg_ctl start",
                    logfile=server.logfile,
                )
                _wait_for_tcp(server)
                server.admin(f"CREATE ROLE {PG_PASSWORD_USER} LOGIN PASSWORD '{PG_PASSWORD}'")
                return server
            except Exception as exc:
                last_error = exc
                stop_server(bindir, root)
        raise RuntimeError(f"PostgreSQL did not start after {_PG_START_ATTEMPTS} attempts") from last_error
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _wait_for_tcp(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + _PG_START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(
                host=server.host, port=server.port, user=server.user, dbname="postgres", connect_timeout=5
            ) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop_server(bindir: str, root: Path) -> None:
    """Stop the cluster in `root` at once (no checkpoint: the data is throwaway)."""
    if not (root / "data" / "postmaster.pid").exists():
        return
    subprocess.run(
        _as_postgres_user([os.path.join(bindir, "pg_ctl"), "stop", "--pgdata", str(root / "data"), "-m", "immediate"]),
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )


def restart_server(server: PostgresServer, down_s: float = 0.0) -> None:
    """Stop the server as `pg_ctl restart -m fast` does (every session is cut), keep it down
    for `down_s` seconds, and start it again on the same port and data."""
    pg_ctl = os.path.join(server.bindir, "pg_ctl")
    datadir = str(server.datadir)
    _run([pg_ctl, "stop", "--pgdata", datadir, "-m", "fast", "--wait"], cwd=server.root, what="pg_ctl stop")
    time.sleep(down_s)
    start = [pg_ctl, "start", "--pgdata", datadir, "--log", str(server.logfile), "--wait"]
    _run([*start, "--timeout", str(_PG_START_TIMEOUT_S)], cwd=server.root, what="pg_ctl start", logfile=server.logfile)
    _wait_for_tcp(server)
