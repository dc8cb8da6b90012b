"""No secret appears in any output: every `hpo` command, given a storage URL with a password
in each form hpo reads (the user-info, `?password=`) and each way it reads one (--storage,
$HPO_STORAGE, storage.url=), never prints it, nor keeps it where optuna-dashboard or anyone
with the database reads it: study and trial attributes (dashboard notes are system
attributes), hpo's own tables, a report's files.

Failing commands (a wrong password, an unencoded @, a malformed URL, a host that is down,
a gRPC URL) are cheap and each form meets several commands; a successful study runs once
per URL form. Nothing is mocked: a real PostgreSQL role that logs in with a password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
import sqlalchemy
from study_helpers import describe, free_port, hpo, hpo_ok, start_hpo, tiny, wait_for

from hpo.store.storage import open_storage

WRONG = "Wr0ng-secret"  # a password the server refuses, or that never reaches one


def _query_form(url: str) -> str:
    """`postgresql+psycopg://USER:PW@HOST/DB` as `postgresql+psycopg://USER@HOST/DB?password=PW`."""
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    user, password = userinfo.split(":", 1)
    return f"{scheme}://{user}@{host}?password={quote(password, safe='')}"


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user = rest.split(":", 1)[0]
    return f"{scheme}://{user}:{password}@{rest.rsplit('@', 1)[1]}"


def _given(way: str, url: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment that give `url` to a command `way`s."""
    if way == "env":
        return list(args), {"HPO_STORAGE": url}
    if way == "flag":
        return [*args, "--storage", url], {}
    assert way == "override"
    return [*args, f"storage.url='{url}'"], {}


def _assert_clean(text: str, secrets: Sequence[str], what: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} in {what}:\n{text}"


def _assert_silent(result: subprocess.CompletedProcess[str], secrets: Sequence[str]) -> None:
    _assert_clean(result.stdout + result.stderr, secrets, describe(result))


@contextmanager
def _first_line(command: str, *args: str, env: dict[str, str], printed: list[str]) -> Iterator[str]:
    """Start a server command, yield the first line it prints; stop it, and add to
    `printed` all it printed."""
    process = start_hpo(command, *args, env={**os.environ, **env})
    try:
        assert process.stdout is not None
        yield process.stdout.readline()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        printed.append(out + err)


def _stored_text(url: str) -> str:
    """Every row of every table of the database (Optuna's and hpo's), as text."""
    engine = sqlalchemy.create_engine(url)
    try:
        metadata = sqlalchemy.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            rows = [repr(tuple(row)) for table in metadata.sorted_tables for row in conn.execute(table.select())]
    finally:
        engine.dispose()
    assert rows, "an empty database proves nothing"
    return "\n".join(rows)


def _assert_nothing_stored(url: str, secrets: Sequence[str]) -> None:
    storage = open_storage(url)
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        _assert_clean(json.dumps(study.user_attrs, default=str), secrets, f"{study.study_name} user attrs")
        # optuna-dashboard keeps its notes (and hpo its figures) as system attributes
        system_attrs = storage.get_study_system_attrs(study._study_id)
        _assert_clean(json.dumps(system_attrs, default=str), secrets, f"{study.study_name} system attrs")
        for trial in study.trials:
            _assert_clean(json.dumps(trial.user_attrs, default=str), secrets, f"trial {trial.number} user attrs")
            _assert_clean(json.dumps(trial.system_attrs, default=str), secrets, f"trial {trial.number} system attrs")
    _assert_clean(_stored_text(url), secrets, "the database's tables")


FORMS = ["user-info", "query"]


@pytest.mark.parametrize("form", FORMS)
def test_successful_commands_never_show_the_password(
    form: str, postgres_password_url: str, postgres_password: str, tmp_path: Path
) -> None:
    url = postgres_password_url if form == "user-info" else _query_form(postgres_password_url)
    secrets = [postgres_password, quote(postgres_password, safe="")]
    name = f"secret-{form}"
    # the URL as an override, so the stored config holds it; not quiet, so it names the storage
    run = hpo_ok("run", *tiny(name, 2), f"storage.url='{url}'")
    assert ":***@" in run.stdout or "password=***" in run.stdout, run.stdout  # named, its password hidden
    results = [run, hpo_ok("config", f"storage.url='{url}'")]
    # the other commands that read a study, the URL given each way (resume, worker, train
    # and retrain train for seconds: the failing test runs them on this URL, for a missing study)
    if form == "user-info":
        commands = [
            ("env", ["studies"]),
            ("flag", ["show", name]),
            ("env", ["export", name, "--format", "json"]),
            ("flag", ["report", name, "--out", str(tmp_path / "report")]),
        ]
    else:
        commands = [("flag", ["studies"]), ("env", ["show", name]), ("flag", ["export", name, "--format", "csv"])]
    for way, args in commands:
        command, environment = _given(way, url, *args)
        results.append(hpo_ok(*command, env=environment))
    for result in results:
        _assert_silent(result, secrets)
    for path in (tmp_path / "report").glob("*") if (tmp_path / "report").exists() else []:
        _assert_clean(path.read_bytes().decode(errors="replace"), secrets, str(path))

    # the servers: the line that names what they serve, and all they print until stopped
    port = free_port()
    proxied = f"grpc://worker:{WRONG}@127.0.0.1:{port}"
    servers = [
        ("dashboard", [*_given("flag" if form == "user-info" else "env", url)[0], "--port", str(free_port())]),
        ("proxy", ["--port", str(port), "--figures-every", "1"]),
    ]
    for command, args in servers:
        env = {} if "--storage" in args else {"HPO_STORAGE": url}
        printed: list[str] = []
        with _first_line(command, *args, env=env, printed=printed) as line:
            _assert_clean(line, secrets, f"hpo {command}'s first line")
            assert "***" in line, line
            if command == "proxy":
                # a gRPC URL with a password of its own, through the proxy
                wait_for(lambda: hpo("studies", "--storage", proxied).returncode == 0, 60, "the proxy to answer")
                for result in [
                    hpo_ok("show", name, "--storage", proxied),
                    hpo_ok("studies", env={"HPO_STORAGE": proxied}),
                ]:
                    _assert_silent(result, [*secrets, WRONG])
        _assert_clean(printed[0], secrets, f"what hpo {command} printed")

    _assert_nothing_stored(postgres_password_url, [*secrets, WRONG])


def test_failing_commands_never_show_the_password(
    postgres_password_url: str, postgres_password: str, tmp_path: Path
) -> None:
    live = postgres_password_url
    host_db = live.rsplit("@", 1)[1]
    bad_urls = {
        "wrong-user-info": _with_password(live, WRONG),
        "wrong-query": _query_form(_with_password(live, WRONG)),
        "unencoded-at": _with_password(live, f"p@{WRONG}"),
        "unencoded-at-query": f"postgresql://hpo@{host_db}?password=p@{WRONG}",
        "down-user-info": f"postgresql+psycopg://hpo:{WRONG}@127.0.0.1:1/db",
        "down-query": f"postgresql+psycopg://hpo@127.0.0.1:1/db?password={WRONG}",
        "down-sslpassword": f"postgresql://hpo:{WRONG}@127.0.0.1:1/db?sslpassword={WRONG}",
        "malformed-port": f"postgresql://hpo:{WRONG}@{host_db.split(':')[0]}:port/db",
        "malformed-grpc": f"grpc://worker:{WRONG}@127.0.0.1/x",
        "grpc-down": f"grpc://worker:{WRONG}@127.0.0.1:1",
    }
    # the commands that only read a database, each way they take one; the URL forms in turn
    cheap = [
        ("env", ["show", "s"]),
        ("flag", ["export", "s", "--format", "json"]),
        ("env", ["report", "s", "--out", str(tmp_path / "report")]),
        ("flag", ["dashboard", "--port", str(free_port())]),
        ("env", ["proxy", "--port", str(free_port())]),
    ]
    cases = []
    for i, (form, url) in enumerate(bad_urls.items()):
        for way, args in [("env" if i % 2 else "flag", ["studies"]), cheap[i % len(cheap)]]:
            command, env = _given(way, url, *args)
            cases.append((form, command, env))
    # the commands that train import torch first (seconds): once each, a bad URL or the right
    # password and a study that is not there
    right = {"right-user-info": live, "right-query": _query_form(live)}
    for form, url, way, args in [
        ("wrong-query", bad_urls["wrong-query"], "override", ["run", *tiny("s", 1), "--quiet"]),
        ("down-query", bad_urls["down-query"], "flag", ["worker", "s", "--wait", "1"]),  # says it waits
        ("right-user-info", right["right-user-info"], "flag", ["resume", "missing"]),
        ("right-query", right["right-query"], "env", ["retrain", "missing", "--front"]),
        ("right-query", right["right-query"], "flag", ["train", "--from-trial=missing:0"]),
        ("right-user-info", right["right-user-info"], "env", ["show", "missing"]),
        ("unencoded-at", bad_urls["unencoded-at"], "override", ["config"]),
    ]:
        command, env = _given(way, url, *args)
        cases.append((form, command, env))

    def attempt(case: tuple[str, list[str], dict[str, str]]) -> subprocess.CompletedProcess[str]:
        return hpo(*case[1], env=case[2], timeout=60)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(attempt, cases))
    for (form, _, _), result in zip(cases, results, strict=True):
        if result.args[3:4] != ["config"]:
            assert result.returncode != 0, f"{form}: {describe(result)}"
        assert "Traceback" not in result.stderr, f"{form}: {describe(result)}"
        _assert_silent(result, [WRONG, postgres_password, quote(postgres_password, safe="")])
