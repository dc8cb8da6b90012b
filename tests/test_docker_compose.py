"""The docker-compose topology, run without Docker: the exact commands of its services.

`docker-compose config` (the v1 tool validates and resolves the file without an engine)
gives each service's command and environment; the test runs them as local processes
against a real PostgreSQL database: one `create`, three `worker`s and the `dashboard`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from study_helpers import free_port

from hpo.store.leases import LEASES

ROOT = Path(__file__).resolve().parent.parent
STUDY = "compose-test"
TRIALS = 6
ENV = {
    "POSTGRES_USER": "hpo",
    "POSTGRES_PASSWORD": "s3cret-pw",
    "POSTGRES_DB": "hpo",
    "HPO_EXPERIMENT": "tiny",
    "HPO_STUDY": STUDY,
    "HPO_TRIALS": str(TRIALS),
    "HPO_HEARTBEAT": "1",
    "HPO_GRACE": "4",
}


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    """The compose file's services, resolved by docker-compose itself."""
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no", "off"):
            pytest.fail("CI is set but docker-compose (Debian package docker-compose) is missing", pytrace=False)
        pytest.skip("docker-compose (Debian package docker-compose) is not installed")
    resolved = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return yaml.safe_load(resolved.stdout)["services"]


def _command(service: dict) -> list[str]:
    """The service's command as a local process: the image's entrypoint is `hpo`."""
    return [sys.executable, "-m", "hpo", *(str(part) for part in service["command"])]


def _env(service: dict, url: str) -> dict[str, str]:
    env = {**os.environ, **{k: str(v) for k, v in service.get("environment", {}).items()}}
    assert env["HPO_STORAGE"].startswith("postgresql+psycopg://hpo:s3cret-pw@postgres:5432/")
    env["HPO_STORAGE"] = url  # the compose host `postgres` is this test's server
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def created(services: dict[str, dict], postgres_password_url: str) -> Iterator[str]:
    create = services["create"]
    result = subprocess.run(_command(create), env=_env(create, postgres_password_url), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    # Idempotent: a second `create` finds the study and leaves it as it is.
    again = subprocess.run(_command(create), env=_env(create, postgres_password_url), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    yield postgres_password_url


def _start_workers(services: dict[str, dict], url: str, n: int) -> list[subprocess.Popen]:
    worker = services["worker"]
    return [
        subprocess.Popen(_command(worker), env=_env(worker, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]


def _finish(workers: list[subprocess.Popen], timeout: float = 300) -> None:
    for worker in workers:
        _, err = worker.communicate(timeout=timeout)
        assert worker.returncode in (0, -signal.SIGKILL), err.decode()
        assert b"Traceback" not in err, err.decode()


@pytest.mark.timeout(600)
def test_compose_topology_runs_the_study(services: dict[str, dict], created: str) -> None:
    url = created
    workers = _start_workers(services, url, 3)
    dashboard = services["dashboard"]
    port = free_port()
    command = _command(dashboard)
    command[command.index("--port") + 1] = str(port)  # 8080 may be taken on this machine
    server = subprocess.Popen(
        command,
        env=_env(dashboard, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _finish(workers)
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies")
        assert STUDY in {s["study_name"] for s in studies["study_summaries"]}
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = optuna.load_study(study_name=STUDY, storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in trials}) == len(trials) == TRIALS


def _get_json(address: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(address, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.timeout(600)
def test_killed_worker_trial_is_retried_and_its_lease_released(services: dict[str, dict], created: str) -> None:
    url = created
    workers = _start_workers(services, url, 3)
    engine = sa.create_engine(url)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:  # a worker in the middle of a trial
        try:
            with engine.connect() as conn:
                owners = [row.owner for row in conn.execute(sa.select(LEASES.c.owner))]
        except sa.exc.ProgrammingError:  # no worker has created the lease table yet
            owners = []
        pids = {int(owner.split(":")[1]) for owner in owners}
        victim = next((w for w in workers if w.pid in pids), None)
        time.sleep(0.05)
    assert victim is not None, "no worker was seen holding a device lease"
    victim.kill()
    _finish(workers)

    trials = optuna.load_study(study_name=STUDY, storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials} - {None}
    assert failed and {t.number for t in failed} <= retried
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(LEASES)).scalar() == 0
    engine.dispose()


def test_worker_waits_for_the_database_then_gives_up_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "worker", "any", "--wait", "2",
         "--storage", "postgresql+psycopg://hpo:s3cret-pw@127.0.0.1:1/hpo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("waiting up to 2 s for the database")
    assert lines[-1].startswith("error: cannot open storage") and "waited 2 s" in lines[-1]
    assert "s3cret-pw" not in result.stderr and "Traceback" not in result.stderr


def test_worker_on_a_missing_study_exits_with_one_line(postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "worker", "no-such-study", "--storage", postgres_url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: study 'no-such-study' does not exist")
