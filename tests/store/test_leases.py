"""Device leases (docs/architecture.md, decision 10: several workers on one host never share a device), on SQLite
and PostgreSQL, then end to end through `hpo run --n-workers 2`.

Real databases, real processes; no test asserts a duration. Expiry is tested with a tiny
ttl and a sleep well past it, never with a sleep that must end before a deadline.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from study_helpers import tiny

from hpo.store.curves import CurveStore
from hpo.store.leases import LEASES, DeviceLeases, FileLeases, Leases

POOL = [0, 1, 2, 3]


@pytest.fixture(autouse=True)
def private_host_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own folder of host-wide locks: the machine's (/tmp/hpo-leases) is shared
    with every hpo process and test running beside it, whose locks would reorder choices."""
    monkeypatch.setenv("HPO_LEASE_DIR", str(tmp_path / "host-locks"))


def make_engine(url: str) -> sa.engine.Engine:
    # SQLite: wait for the write lock as hpo's own storage does, instead of failing at once.
    connect_args = {"timeout": 60} if url.startswith("sqlite") else {}
    return sa.create_engine(url, connect_args=connect_args)


@pytest.fixture
def engine(storage_url: str) -> Iterator[sa.engine.Engine]:
    engine = make_engine(storage_url)
    yield engine
    engine.dispose()


def expiry(engine: sa.engine.Engine, owner: str) -> list[float]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(LEASES.c.expires_at).where(LEASES.c.owner == owner)))


def test_workers_starting_together_create_hpo_tables_once(storage_url: str) -> None:
    """Every worker creates hpo's tables on first use; on PostgreSQL, two concurrent CREATE
    TABLEs of one name fail even under checkfirst, so hpo serialises the creation."""
    starters = 8
    barrier = threading.Barrier(starters)
    engines = [make_engine(storage_url) for _ in range(starters)]

    def start(engine: sa.engine.Engine) -> None:
        barrier.wait()
        DeviceLeases(engine, ttl=60, host="h")
        CurveStore(engine)

    try:
        with ThreadPoolExecutor(starters) as pool:
            for future in [pool.submit(start, engine) for engine in engines]:
                future.result()
        tables = set(sa.inspect(engines[0]).get_table_names())
        assert {"hpo_device_leases", "hpo_learning_curves"} <= tables
    finally:
        for engine in engines:
            engine.dispose()


def test_acquire_gives_distinct_devices_of_the_pool(engine: sa.engine.Engine) -> None:
    leases = DeviceLeases(engine, ttl=60, host="h")
    first = leases.try_acquire(POOL, 3, "a")
    assert first is not None and len(first) == 3 and len(set(first)) == 3 and set(first) <= set(POOL)
    assert leases.try_acquire(POOL, 2, "b") is None  # one device left: all or nothing
    second = leases.try_acquire(POOL, 1, "b")
    assert second is not None and set(first).isdisjoint(second)
    assert leases.held() == {**dict.fromkeys(first, "a"), **dict.fromkeys(second, "b")}
    assert leases.try_acquire(POOL, 1, "c") is None


def test_studies_in_two_databases_spread_over_the_cores(tmp_path: Path) -> None:
    """Each database's table sees only its own leases; the host-wide locks make a second
    study's trial take another core, and, all cores locked, still run (locks only order)."""
    one, two = (make_engine(f"sqlite:///{tmp_path}/{name}.db") for name in ("one", "two"))
    locks = tmp_path / "locks"
    first = DeviceLeases(one, ttl=60, host="h", host_locks=FileLeases(locks))
    second = DeviceLeases(two, ttl=60, host="h", host_locks=FileLeases(locks))
    assert first.try_acquire([0, 1], 1, "a") == [0]
    assert second.try_acquire([0, 1], 1, "b") == [1]  # core 0 trains study one's trial
    assert second.try_acquire([0, 1], 1, "c") == [0]  # every core locked: its own table decides
    second.release("b")
    second.release("c")
    first.release("a")
    assert second.try_acquire([0, 1], 1, "d") == [0]  # released with the leases


def test_a_leased_device_is_free_again_only_after_release(engine: sa.engine.Engine) -> None:
    leases = DeviceLeases(engine, ttl=60, host="h")
    assert leases.try_acquire([7], 1, "a") == [7]
    assert leases.try_acquire([7], 1, "b") is None
    assert leases.try_acquire([7], 1, "b") is None
    leases.release("b")  # releasing what another owner holds does nothing
    assert leases.try_acquire([7], 1, "b") is None
    leases.release("a")
    assert leases.held() == {}
    assert leases.try_acquire([7], 1, "b") == [7]


def test_hold_releases_on_exit_even_on_an_exception(engine: sa.engine.Engine) -> None:
    leases = DeviceLeases(engine, ttl=60, host="h")
    with pytest.raises(RuntimeError, match="trial failed"), leases.hold([0, 1], 2, "a") as devices:
        assert sorted(devices) == [0, 1]
        assert leases.held() == {0: "a", 1: "a"}
        raise RuntimeError("trial failed")
    assert leases.held() == {}


def test_hosts_lease_their_own_devices(engine: sa.engine.Engine) -> None:
    """Device 0 of one machine is not device 0 of another."""
    one, other = DeviceLeases(engine, ttl=60, host="one"), DeviceLeases(engine, ttl=60, host="other")
    assert one.try_acquire([0], 1, "a") == [0]
    assert other.try_acquire([0], 1, "b") == [0]
    assert one.held() == {0: "a"} and other.held() == {0: "b"}


def test_expired_leases_are_reclaimed(engine: sa.engine.Engine) -> None:
    """A dead holder's lease (never renewed) frees its device once the ttl has passed."""
    dead = DeviceLeases(engine, ttl=0.2, host="h")
    alive = DeviceLeases(engine, ttl=60, host="h")
    assert dead.try_acquire([0, 1], 2, "dead") == [0, 1]
    time.sleep(1.0)
    assert alive.held() == {}  # expired leases are not held, even before they are deleted
    # (in the order of the host-wide locks: the dead holder's are never closed, as a frozen one's)
    assert sorted(alive.try_acquire([0, 1], 2, "next") or []) == [0, 1]
    assert alive.held() == {0: "next", 1: "next"}
    assert expiry(engine, "dead") == []  # the expired rows were deleted


def test_renew_extends_a_lease(engine: sa.engine.Engine) -> None:
    leases = DeviceLeases(engine, ttl=2.0, host="h")
    assert leases.try_acquire([0], 1, "a") == [0]
    (first,) = expiry(engine, "a")
    time.sleep(1.0)
    renewed_at = time.time()
    leases.renew("a")
    (renewed,) = expiry(engine, "a")
    assert renewed >= renewed_at + 2.0 - 1e-3 > first
    while time.time() <= first + 0.05:  # past the first expiry, not the renewed one
        time.sleep(0.05)
    started = time.time()
    taken = leases.try_acquire([0], 1, "b")
    if started < renewed:  # (on a machine stalled for over a second the renewal ran out too)
        assert taken is None
        assert leases.held() == {0: "a"}


def test_renew_leaves_other_owners_alone(engine: sa.engine.Engine) -> None:
    leases = DeviceLeases(engine, ttl=60, host="h")
    assert leases.try_acquire([0, 1], 1, "a") == [0]
    assert leases.try_acquire([0, 1], 1, "b") == [1]
    (before,) = expiry(engine, "b")
    time.sleep(0.05)
    leases.renew("a")
    assert expiry(engine, "b") == [before]


# --- file leases, for workers behind a gRPC proxy ------------------------------------------


def test_file_leases_give_distinct_devices_all_or_nothing(tmp_path: Path) -> None:
    one, other = FileLeases(tmp_path), FileLeases(tmp_path)  # two workers of one host
    first = one.try_acquire(POOL, 3, "a")
    assert first is not None and len(set(first)) == 3
    assert other.try_acquire(POOL, 2, "b") is None  # one device left: all or nothing
    second = other.try_acquire(POOL, 1, "b")
    assert second is not None and not set(second) & set(first)
    assert one.held() == other.held() == {**dict.fromkeys(first, "a"), **dict.fromkeys(second, "b")}
    other.release("a")  # releasing what another holds does nothing
    assert other.try_acquire(POOL, 1, "c") is None
    one.release("a")
    assert other.held() == dict.fromkeys(second, "b")
    with pytest.raises(RuntimeError, match="trial failed"), one.hold(POOL, 3, "d") as devices:
        assert sorted(devices) == sorted(set(POOL) - set(second))
        raise RuntimeError("trial failed")
    assert one.held() == dict.fromkeys(second, "b")


HOLD_AND_WAIT = """
import sys, time
from hpo.store.leases import FileLeases
leases = FileLeases(sys.argv[1])
print(leases.try_acquire([0, 1], 2, "doomed"), flush=True)
time.sleep(600)
"""


def test_a_killed_holders_file_leases_are_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "[0, 1]"
        assert FileLeases(tmp_path).held() == {0: "doomed", 1: "doomed"}
    finally:
        holder.kill()
        holder.communicate()
    assert FileLeases(tmp_path).try_acquire([0, 1], 2, "next") == [0, 1]  # no expiry to wait for


# --- many holders at once -------------------------------------------------------------------

HOLDERS = 4
ROUNDS = 5


def open_leases(where: str) -> Leases:
    """`dir:PATH` for file leases in PATH, else the lease table of a database URL."""
    if where.startswith("dir:"):
        return FileLeases(where.removeprefix("dir:"))
    return DeviceLeases(make_engine(where), ttl=60, host="h")


def hold_in_a_loop(where: str, index: int, ready_dir: str) -> list[tuple[int, float, float]]:
    """One process: lease n devices of [0, 1] ROUNDS times, hold them briefly, and return
    (device, start, end) for each holding. Holder 0 takes both devices at once."""
    leases = open_leases(where)
    n = 2 if index == 0 else 1
    Path(ready_dir, str(index)).touch()
    while len(os.listdir(ready_dir)) < HOLDERS:  # start together, so they really compete
        time.sleep(0.01)
    intervals = []
    for round_ in range(ROUNDS):
        with leases.hold([0, 1], n, f"holder-{index}-{round_}", poll=0.01) as devices:
            start = time.time()
            assert len(devices) == n
            time.sleep(0.05)
            end = time.time()
        intervals += [(device, start, end) for device in devices]
    return intervals


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "files"])
def lease_place(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where leases live: a database's table, or (behind a gRPC proxy) a folder of lock files."""
    if request.param == "files":
        return f"dir:{tmp_path / 'leases'}"
    return request.getfixturevalue(f"{request.param}_url")


def test_concurrent_holders_never_share_a_device(lease_place: str, tmp_path: Path) -> None:
    """HOLDERS processes compete for 2 devices: no device ever has two holders at once."""
    where = lease_place
    leases = open_leases(where)  # the table exists before the race
    ready = tmp_path / "ready"
    ready.mkdir()
    with ProcessPoolExecutor(HOLDERS, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(hold_in_a_loop, where, i, str(ready)) for i in range(HOLDERS)]
        per_holder = [f.result(timeout=300) for f in futures]
    assert [len(intervals) for intervals in per_holder] == [2 * ROUNDS] + [ROUNDS] * (HOLDERS - 1)
    by_device: dict[int, list[tuple[float, float, int]]] = {0: [], 1: []}
    for holder, intervals in enumerate(per_holder):
        for device, start, end in intervals:
            by_device[device].append((start, end, holder))
    for device, spans in by_device.items():
        spans.sort()
        for (_, end, holder), (next_start, _, next_holder) in itertools.pairwise(spans):
            assert end <= next_start, f"device {device}: holder {holder} and {next_holder} overlap"
    assert leases.held() == {}


# --- end to end: a study with two workers ----------------------------------------------------


def test_a_two_worker_study_leases_and_returns_devices(
    storage_url: str, engine: sa.engine.Engine, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpo",
            "run",
            *tiny("leased", 4, "search_space.n_devices={choices: [1, 2]}"),
            "storage.heartbeat_interval=2",  # a worker with nothing to claim polls this often
            "storage.grace_period=20",
            "--n-workers",
            "2",
            "--quiet",
            "--storage",
            storage_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "HPO_CACHE_DIR": str(tmp_path / "cache")},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    trials = optuna.load_study(study_name="leased", storage=storage_url).get_trials()
    assert len(trials) == 4
    cores = sorted(os.sched_getaffinity(0))
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
        devices = trial.user_attrs["devices"]
        assert len(devices) == trial.params["n_devices"] == trial.user_attrs["n_devices"]
        assert len(set(devices)) == len(devices) and set(devices) <= set(cores)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(LEASES)) == 0
