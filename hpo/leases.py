"""Device leases in the study's database, so workers on one host never share a device.

A trial holds a lease on each device it trains on: a row (host, device) in the table
`hpo_device_leases`, whose primary key makes an acquisition atomic (two workers that
pick the same free device cannot both insert it; the loser retries). A lease expires
unless its holder renews it with the trial's heartbeat, so a killed worker's devices
return to the pool after the grace period. On CPU machines a device is a core, and a
rank is pinned to the core it leased.

Leases are per host: `HPO_LEASE_HOST` names the machine when the host name does not
(containers on one machine each have a host name of their own, but share its devices).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

_metadata = sa.MetaData()
LEASES = sa.Table(
    "hpo_device_leases",
    _metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("device", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds of the host that holds it
)


class DeviceLeases:
    """The lease table of one database, seen from this host."""

    def __init__(self, engine: sa.engine.Engine, ttl: float, host: str | None = None) -> None:
        self.engine = engine
        self.ttl = ttl
        self.host = host or os.environ.get("HPO_LEASE_HOST") or platform.node()
        _metadata.create_all(engine, checkfirst=True)

    def try_acquire(self, pool: Sequence[int], n: int, owner: str) -> list[int] | None:
        """n devices of the pool, atomically, or None if fewer are free now."""
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.delete(LEASES).where(LEASES.c.host == self.host, LEASES.c.expires_at < now))
                taken = set(conn.scalars(sa.select(LEASES.c.device).where(LEASES.c.host == self.host)))
                free = [d for d in pool if d not in taken]
                if len(free) < n:
                    return None
                chosen = free[:n]
                conn.execute(
                    sa.insert(LEASES),
                    [{"host": self.host, "device": d, "owner": owner, "expires_at": now + self.ttl} for d in chosen],
                )
                return chosen
        except (IntegrityError, OperationalError):
            return None  # another worker won the race (or held the SQLite write lock): retry

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

    def held(self) -> dict[int, str]:
        """Device -> owner of this host's unexpired leases."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(LEASES.c.device, LEASES.c.owner).where(
                    LEASES.c.host == self.host, LEASES.c.expires_at >= time.time()
                )
            )
            return {device: owner for device, owner in rows}


def lease_owner(study_name: str, trial_number: int) -> str:
    return f"{platform.node()}:{os.getpid()}:{study_name}:{trial_number}"
