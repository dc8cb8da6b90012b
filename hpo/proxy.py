"""Optuna's gRPC storage proxy, for studies with more workers than a database has connections.

Every worker on an RDBStorage holds its own pool of database connections; a few thousand
of them exhaust a PostgreSQL server. Optuna's proxy (`run_grpc_proxy_server`) holds the
connections and a cache of the study in one process, and the workers talk to it through
`GrpcStorageProxy`. `hpo proxy` runs it on a database URL; workers take `grpc://HOST:PORT`
as their storage URL.

The proxy carries Optuna's storage API and nothing else: no SQL, and no heartbeat
(GrpcStorageProxy does not implement one, so a killed worker's trial would stay RUNNING
for ever). `HeartbeatGrpcStorage` adds the heartbeat through Optuna's own BaseHeartbeat
protocol: each beat is a trial system attribute, and a RUNNING trial whose last beat is
older than the grace period is stale. `optuna.storages.fail_stale_trials` and
RetryHeartbeatStaleTrialCallback then work exactly as with RDBStorage. A beat carries
its worker's clock and another worker judges it by its own, so hosts must keep their
clocks in sync (NTP does, to far better than a grace period of seconds). What hpo keeps
in SQL tables has a proxy-side form too: learning curves (hpo.curves), device leases
(hpo.leases) and the order of claims (hpo.worker).

One thing only the database side can do: redraw a study's dashboard figures, which
takes the study lock (hpo.worker.study_lock) so that two writers never interleave a
figure's chunks. Workers behind the proxy have no lock, so the proxy draws the figures
of their studies itself (`FigureDrawer`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError

SCHEME = "grpc"
DEFAULT_PORT = 13000
HEARTBEAT_ATTR = "hpo:heartbeat"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_grpc(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def address(url: str) -> tuple[str, int]:
    """(host, port) of a `grpc://HOST:PORT` URL; HpoError if either is missing."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path not in ("", "/"):
        raise HpoError(
            f"storage URL {url!r} is malformed; a gRPC storage proxy is grpc://HOST:PORT, "
            "the address `hpo proxy` listens on"
        )
    return host, port


class HeartbeatGrpcStorage(GrpcStorageProxy, BaseHeartbeat):
    """A GrpcStorageProxy with heartbeats kept in trial system attributes."""

    def __init__(
        self,
        host: str,
        port: int,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(host=host, port=port)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        # A trial another worker has just failed as stale cannot beat again: nothing to do.
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # A trial without a beat is one that a worker on the database itself runs: its
        # heartbeat is in RDBStorage's table, which that worker watches.
        oldest = time.time() - self.grace_period
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if t.system_attrs.get(HEARTBEAT_ATTR, oldest) < oldest]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback


def connect(
    url: str,
    heartbeat_interval: int,
    grace_period: int,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    timeout: float = 5.0,
) -> HeartbeatGrpcStorage:
    """The proxy at `url`; HpoError if it does not answer within `timeout` seconds."""
    host, port = address(url)
    storage = HeartbeatGrpcStorage(host, port, heartbeat_interval, grace_period, stale_trial_callback)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise HpoError(
            f"no gRPC storage proxy answers at {url}; start one with "
            f"`hpo proxy --storage DATABASE_URL --host {host} --port {port}`"
        ) from None
    return storage


class FigureDrawer:
    """Redraws the dashboard figures of every study whose workers are behind the proxy.

    Every `every` seconds it looks for studies with newly finished trials that have
    proxy-side learning curves (a study with none has only workers on the database,
    which draw its figures themselves), and draws them under the study lock. The figures
    trail the trials by up to `every` seconds. Only a view: a failure is a warning.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, database: optuna.storages.RDBStorage, every: float):
        self.storage, self.database, self.every = storage, database, every
        self._finished = self._count_finished()  # what is there at startup was drawn by its own workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpo-figures", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop after the drawing in progress, if any."""
        self._stop.set()
        self._thread.join()

    def _count_finished(self) -> dict[str, int]:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return {
            name: len(
                self.storage.get_all_trials(self.storage.get_study_id_from_name(name), deepcopy=False, states=finished)
            )
            for name in optuna.get_all_study_names(self.storage)
        }

    def _run(self) -> None:
        from hpo.curves import AttrCurves
        from hpo.notes import save_figures
        from hpo.worker import only_warn, study_lock

        curves = AttrCurves(self.storage)
        while not self._stop.wait(self.every):
            with only_warn("dashboard figures of proxied studies"):
                counts = self._count_finished()
                for name, count in counts.items():
                    if count == self._finished.get(name, 0):
                        continue
                    proxied = curves.curves(name)  # none: its workers are on the database and draw them
                    if not proxied:
                        continue
                    with only_warn(f"dashboard figures of study {name}"), study_lock(self.database, name):
                        save_figures(optuna.load_study(study_name=name, storage=self.storage), proxied)
                self._finished = counts


def serve(storage: optuna.storages.RDBStorage, url: str, host: str, port: int, figures_every: float = 10.0) -> None:
    """Run Optuna's proxy for `storage` on host:port until interrupted, drawing the figures
    of proxied studies every `figures_every` seconds (0: never)."""
    from hpo.dashboard import bind  # imported here: hpo.dashboard imports hpo.storage, which imports this

    # Bind first, as the dashboard does: a port out of range or in use, or a host that is not
    # this machine's, is then a one-line error and not one from deep inside gRPC.
    bind(host, port).server_close()
    if host not in LOCAL_HOSTS:
        print(
            f"warning: the proxy has no authentication or TLS: anyone who reaches {host}:{port} can read "
            "and change every study; keep it on a private network",
            file=sys.stderr,
        )
    print(f"gRPC storage proxy for {url} on {SCHEME}://{host}:{port}", flush=True)
    # get_storage puts Optuna's cache in front of an RDBStorage, as its proxy docs advise.
    cached = optuna.storages.get_storage(storage)
    drawer = FigureDrawer(cached, storage, figures_every) if figures_every > 0 else None
    try:
        optuna.storages.run_grpc_proxy_server(cached, host=host, port=port)
    finally:
        if drawer is not None:
            drawer.close()
