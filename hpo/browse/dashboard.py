"""`hpo dashboard`: optuna-dashboard on the studies' own database.

optuna-dashboard has no authentication, and anyone who reaches it can delete studies,
so it listens on 127.0.0.1 unless told otherwise, and says so when told otherwise.

It runs on a threaded wsgiref server (what the `optuna-dashboard` command itself uses
without gunicorn), made here rather than by `optuna_dashboard.run_server`, whose
single-threaded server makes a browser's parallel requests queue. Making it here also
binds the port first: a port in use is one clear error, with no window between a check
and the real bind, and before any database is touched.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import optuna
from optuna.artifacts import FileSystemArtifactStore

from hpo.errors import HpoError
from hpo.store import grpc
from hpo.store.artifacts import beside
from hpo.store.storage import open_storage, parse_url, redact, sqlite_file

# A viewer opens the storage as workers do (hpo.store.storage), with Optuna's experimental heartbeat
# arguments, whose warnings would precede every message and break the one-line errors.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # Ctrl-C must not wait for a browser's open connections


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr: a page load makes dozens."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def is_local(host: str) -> bool:
    """Whether only this machine can reach `host` (a loopback address or `localhost`)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to a public interface


def exposure_warning(host: str, port: int) -> str | None:
    """The warning printed before serving on a host other machines can reach, else None."""
    if is_local(host):
        return None
    return (
        f"warning: the dashboard on {host}:{port} has no authentication; anyone who can reach it "
        "can read and delete studies. Use --host 127.0.0.1 and an SSH tunnel unless the network is trusted"
    )


def bind(host: str, port: int) -> WSGIServer:
    """A server listening on host:port; HpoError naming the fix if it cannot."""
    if not 1 <= port <= 65535:
        raise HpoError(f"--port={port} must be between 1 and 65535")
    server_class = _IPv6Server if ":" in host else _Server
    try:
        return server_class((host.strip("[]"), port), _QuietHandler)
    except socket.gaierror:
        raise HpoError(f"--host={host} is not an address of this machine; use --host 127.0.0.1") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise HpoError(f"port {port} on {host} is in use; pass --port with a free port") from None
        if exc.errno == errno.EACCES:
            raise HpoError(f"port {port} on {host} needs privileges; pass --port 1024 or above") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise HpoError(f"--host={host} is not an address of this machine; use --host 127.0.0.1") from None
        raise HpoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def artifact_store(url: str, artifacts: str | None) -> FileSystemArtifactStore | None:
    """The store of the studies' kept models (hpo.store.artifacts) that the Artifacts tab
    reads: `artifacts`, else a SQLite database's `-artifacts` folder if it exists."""
    if artifacts is not None:
        if not Path(artifacts).is_dir():
            raise HpoError(f"--artifacts {artifacts} is not a folder; give the folder the studies keep their models in")
        return FileSystemArtifactStore(artifacts)
    folder = beside(sqlite_file(parse_url(url))) if not grpc.is_grpc(url) else None
    return FileSystemArtifactStore(folder) if folder is not None and folder.is_dir() else None


def serve(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, artifacts: str | None = None) -> None:
    """Serve optuna-dashboard on the database at `url` (and the models in `artifacts`) until interrupted."""
    import optuna_dashboard

    server = bind(host, port)
    try:
        storage = open_storage(url, must_exist=True)
        server.set_app(optuna_dashboard.wsgi(storage, artifact_store=artifact_store(url, artifacts)))
        warning = exposure_warning(host, port)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        print(f"optuna-dashboard of {redact(url)} on http://{shown}:{port}/dashboard (Ctrl-C stops it)", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
