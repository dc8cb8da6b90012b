"""The client side of Optuna's gRPC storage proxy, for studies with more workers than a
database has connections (hpo.browse.proxy runs the server).

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
in SQL tables has a proxy-side form too: learning curves (hpo.store.curves), device leases
(hpo.store.leases) and the order of claims (hpo.study.worker).

"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import optuna
from optuna.storages import GrpcStorageProxy
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.record.attrs import HEARTBEAT
from hpo.store.optuna_internals import BaseHeartbeat, trial_id

SCHEME = "grpc"


def is_grpc(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def address(url: str, shown: str) -> tuple[str, int]:
    """(host, port) of a `grpc://HOST:PORT` URL; HpoError if either is missing. `shown` is
    the URL as errors show it (hpo.store.storage.redact: no user-info password)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path not in ("", "/"):
        raise HpoError(
            f"storage URL {shown!r} is malformed; a gRPC storage proxy is grpc://HOST:PORT, "
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
            self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # A trial without a beat is one that a worker on the database itself runs: its
        # heartbeat is in RDBStorage's table, which that worker watches.
        oldest = time.time() - self.grace_period
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [trial_id(t) for t in running if t.system_attrs.get(HEARTBEAT, oldest) < oldest]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback


def connect(
    url: str,
    shown: str,
    heartbeat_interval: int,
    grace_period: int,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    timeout: float = 5.0,
) -> HeartbeatGrpcStorage:
    """The proxy at `url` (`shown` in messages: redacted); HpoError if it does not answer
    within `timeout` seconds."""
    host, port = address(url, shown)
    storage = HeartbeatGrpcStorage(host, port, heartbeat_interval, grace_period, stale_trial_callback)
    try:
        storage.wait_server_ready(timeout=timeout)
    except ConnectionError:
        storage.close()
        raise HpoError(
            f"no gRPC storage proxy answers at {shown}; start one with "
            f"`hpo proxy --storage DATABASE_URL --host {host} --port {port}`"
        ) from None
    return storage
