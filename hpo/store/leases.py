"""Device leases in the study's database, so workers on one host never share a device.

A trial holds a lease on each device it trains on: a row (host, device) in the table
`hpo_device_leases`, whose primary key makes an acquisition atomic (two workers that
pick the same free device cannot both insert it; the loser retries). A lease expires
unless its holder renews it with the trial's heartbeat, so a killed worker's devices
return to the pool after the grace period. On CPU machines a device is a core, and a
rank is pinned to the core it leased.

Leases are per host: `HPO_LEASE_HOST` names the machine when the host name does not
(containers on one machine each have a host name of their own, but share its devices).

The table is one database's: a study in another database on the same host sees none of
its leases. So a trial also takes a host-wide lock on each device it can (`FileLeases`
named `preferred`, apart from the gRPC workers' `device` leases), and prefers devices no
one else's lock holds: two studies on one machine then
train on different cores, and since the locks only order the choice, a frozen holder
never keeps a device from a retry.

Workers behind Optuna's gRPC storage proxy (hpo.store.grpc) have no SQL to run. Their leases
are `FileLeases`: an flock on one file per device in a folder of the host, which the
kernel releases the moment its holder dies, so nothing needs to expire. Containers of
one machine mount the same folder (`HPO_LEASE_DIR`).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from hpo.store.storage import create_tables

_metadata = sa.MetaData()
LEASES = sa.Table(
    "hpo_device_leases",
    _metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("device", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds of the host that holds it
)


class Leases(abc.ABC):
    """Devices of this host held by trials; subclasses say how a lease is taken and kept."""

    @abc.abstractmethod
    def try_acquire(self, pool: Sequence[int], n: int, owner: str) -> list[int] | None:
        """n devices of the pool, atomically, or None if fewer are free now."""

    def renew(self, owner: str) -> None:  # noqa: B027 (a lease that cannot expire needs no renewal)
        """Called with every heartbeat of the owner's trial."""

    @abc.abstractmethod
    def release(self, owner: str) -> None: ...

    @abc.abstractmethod
    def held(self) -> dict[int, str]:
        """Device -> owner of this host's live leases."""

    @contextlib.contextmanager
    def hold(self, pool: Sequence[int], n: int, owner: str, poll: float = 0.5) -> Iterator[list[int]]:
        """Wait for n free devices of the pool, hold them for the block, then release them."""
        assert 0 < n <= len(pool), f"cannot lease {n} of {len(pool)} devices"
        while (devices := self.try_acquire(pool, n, owner)) is None:
            time.sleep(poll)
        try:
            yield devices
        finally:
            self.release(owner)


class DeviceLeases(Leases):
    """The lease table of one database, seen from this host."""

    def __init__(
        self,
        engine: sa.engine.Engine,
        ttl: float,
        host: str | None = None,
        host_locks: FileLeases | _NoLocks | None = None,
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.host = host or os.environ.get("HPO_LEASE_HOST") or platform.node()
        self.host_locks = host_locks or _preference_locks()
        create_tables(engine, _metadata)

    def try_acquire(self, pool: Sequence[int], n: int, owner: str) -> list[int] | None:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.delete(LEASES).where(LEASES.c.host == self.host, LEASES.c.expires_at < now))
                taken = set(conn.scalars(sa.select(LEASES.c.device).where(LEASES.c.host == self.host)))
                free = [d for d in pool if d not in taken]
                if len(free) < n:
                    return None
                chosen = self.host_locks.prefer(free, n, owner)
                conn.execute(
                    sa.insert(LEASES),
                    [{"host": self.host, "device": d, "owner": owner, "expires_at": now + self.ttl} for d in chosen],
                )
                return chosen
        except (IntegrityError, OperationalError):
            self.host_locks.release(owner)
            return None  # another worker won the race (or held the SQLite write lock): retry

    def renew(self, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(LEASES)
                .where(LEASES.c.host == self.host, LEASES.c.owner == owner)
                .values(expires_at=time.time() + self.ttl)
            )

    def release(self, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(LEASES).where(LEASES.c.host == self.host, LEASES.c.owner == owner))
        self.host_locks.release(owner)

    def held(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(LEASES.c.device, LEASES.c.owner).where(
                    LEASES.c.host == self.host, LEASES.c.expires_at >= time.time()
                )
            )
            return {device: owner for device, owner in rows}


class FileLeases(Leases):
    """Leases as flocks on files `NAME-N.lock` (`device-N.lock` by default) in a folder of
    this host; `name` keeps apart locks that mean different things in one folder."""

    def __init__(self, directory: str | Path | None = None, name: str = "device") -> None:
        default = Path(tempfile.gettempdir()) / "hpo-leases"
        self.directory = Path(directory or os.environ.get("HPO_LEASE_DIR") or default)
        self.name = name
        self.directory.mkdir(parents=True, exist_ok=True)
        self._handles: dict[str, list[IO[str]]] = {}

    def _lock(self, device: int) -> IO[str] | None:
        """An open handle that holds the device's lock, or None if someone else holds it."""
        handle = open(self.directory / f"{self.name}-{device}.lock", "a+")  # noqa: SIM115 (held past this call)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def _lock_some(self, devices: Sequence[int], n: int) -> dict[int, IO[str]]:
        """Up to n of `devices` whose locks were free, in order, with the handles that hold them."""
        taken: dict[int, IO[str]] = {}
        for device in devices:
            if len(taken) == n:
                break
            if (handle := self._lock(device)) is not None:
                taken[device] = handle
        return taken

    def try_acquire(self, pool: Sequence[int], n: int, owner: str) -> list[int] | None:
        taken = self._lock_some(pool, n)
        if len(taken) < n:
            for handle in taken.values():
                handle.close()
            return None
        for handle in taken.values():
            handle.truncate(0)
            handle.write(owner)
            handle.flush()
        self._handles.setdefault(owner, []).extend(taken.values())
        return list(taken)

    def prefer(self, free: Sequence[int], n: int, owner: str) -> list[int]:
        """n of the `free` devices, those no other process of this host holds first, whose
        locks `owner` then holds. What a database's lease table calls free, a trial of a
        study in another database may train on: the locks spread such studies over the
        cores, and since they only order the choice, a holder that hangs blocks nobody."""
        try:
            taken = self._lock_some(free, n)
        except OSError:  # a folder this user cannot write (another user's, a read-only /tmp)
            taken = {}
        self._handles.setdefault(owner, []).extend(taken.values())
        return [*taken, *(d for d in free if d not in taken)][:n]

    def release(self, owner: str) -> None:
        for handle in self._handles.pop(owner, []):
            handle.close()  # closing the last descriptor of a file drops its flock

    def held(self) -> dict[int, str]:
        out = {}
        for path in self.directory.glob(f"{self.name}-*.lock"):
            device = int(path.stem.removeprefix(f"{self.name}-"))
            handle = self._lock(device)
            if handle is None:
                out[device] = path.read_text()
            else:
                handle.close()
        return out


def _preference_locks() -> FileLeases | _NoLocks:
    """The host-wide locks that order a database lease's choice of devices: files of their
    own name (`preferred-N.lock`), apart from the gRPC workers' leases, which exclude; none
    where the folder cannot be made (they only order a choice, so none is no error)."""
    try:
        return FileLeases(name="preferred")
    except OSError:
        return _NoLocks()


class _NoLocks:
    """No host-wide locks: a database lease takes the first free devices."""

    def prefer(self, free: Sequence[int], n: int, owner: str) -> list[int]:
        return list(free[:n])

    def release(self, owner: str) -> None:
        pass


def lease_owner(study_name: str, trial_number: int) -> str:
    return f"{platform.node()}:{os.getpid()}:{study_name}:{trial_number}"
