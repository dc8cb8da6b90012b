"""The docker-compose topology on one machine without Docker: PostgreSQL, a study, N workers.

    python scripts/local_cluster.py up DIR                  # start PostgreSQL in DIR, print its URL
    python scripts/local_cluster.py workers DIR N [OVERRIDES...]   # create the study, start N workers
    python scripts/local_cluster.py status DIR              # workers alive, `hpo studies`
    python scripts/local_cluster.py down DIR                # stop the workers and PostgreSQL

DIR holds the database cluster, the workers' logs and their pids. The server listens on
127.0.0.1 only, with durability off: a place to try multi-worker studies, not to keep them.
Each step exits non-zero with a one-line message when it fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The throwaway PostgreSQL server of the tests (tests/localpg.py): test tooling, not part of hpo.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from localpg import find_pg_bindir, start_server, stop_server

STATE = "cluster.json"


def _state(directory: Path) -> dict:
    try:
        return json.loads((directory / STATE).read_text())
    except FileNotFoundError:
        sys.exit(f"error: no cluster in {directory}; start one with `local_cluster.py up {directory}`")


def _save(directory: Path, state: dict) -> None:
    (directory / STATE).write_text(json.dumps(state, indent=1))


def up(directory: Path) -> None:
    if (directory / STATE).exists():
        sys.exit(f"error: {directory} already has a cluster; `local_cluster.py down {directory}` first")
    bindir = find_pg_bindir()
    if bindir is None:
        sys.exit("error: PostgreSQL server binaries not found; install them (apt-get install postgresql)")
    directory.mkdir(parents=True, exist_ok=True)
    server = start_server(bindir, directory.resolve() / "pg")
    server.admin("CREATE DATABASE hpo")
    url = server.url("hpo")
    _save(directory, {"bindir": bindir, "root": str(server.root), "url": url, "workers": []})
    print(url)


def workers(directory: Path, count: int, overrides: list[str]) -> None:
    state = _state(directory)
    env = {**os.environ, "HPO_STORAGE": state["url"]}
    create = subprocess.run([sys.executable, "-m", "hpo", "run", "--create-only", *overrides], env=env)
    if create.returncode != 0:
        sys.exit("error: the study could not be created (see the message above)")
    name = _study_name(overrides, env)
    for i in range(count):
        log = open(directory / f"worker-{len(state['workers']) + i}.log", "w")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen(
            [sys.executable, "-m", "hpo", "worker", name], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this script; `down` stops it
        )  # fmt: skip
        state["workers"].append(process.pid)
    _save(directory, state)
    print(f"{count} workers on study {name}; logs in {directory}/worker-*.log")


def _study_name(overrides: list[str], env: dict[str, str]) -> str:
    printed = subprocess.run(
        [sys.executable, "-m", "hpo", "config", *overrides], env=env, capture_output=True, text=True, check=True
    ).stdout
    import yaml

    return str(yaml.safe_load(printed)["study"]["name"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def status(directory: Path) -> None:
    state = _state(directory)
    alive = [pid for pid in state["workers"] if _alive(pid)]
    print(f"database {state['url']}; {len(alive)} of {len(state['workers'])} workers running")
    subprocess.run([sys.executable, "-m", "hpo", "studies", "--storage", state["url"]], check=False)


def down(directory: Path) -> None:
    state = _state(directory)
    for pid in state["workers"]:
        if _alive(pid):
            os.killpg(pid, signal.SIGINT)  # a worker marks its running trial failed and exits
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in state["workers"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in state["workers"]:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    stop_server(state["bindir"], Path(state["root"]))
    (directory / STATE).unlink()
    print(f"stopped {len(state['workers'])} workers and PostgreSQL; data left in {state['root']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "status", "down"):
        commands.add_parser(name).add_argument("dir", type=Path)
    start = commands.add_parser("workers")
    start.add_argument("dir", type=Path)
    start.add_argument("count", type=int)
    start.add_argument("overrides", nargs="*", help="Hydra overrides of the study (e.g. experiment=smoke)")
    args = parser.parse_args()
    if args.command == "up":
        up(args.dir)
    elif args.command == "workers":
        if args.count < 1:
            sys.exit(f"error: worker count {args.count} must be at least 1")
        workers(args.dir, args.count, args.overrides)
    elif args.command == "status":
        status(args.dir)
    else:
        down(args.dir)


if __name__ == "__main__":
    main()
