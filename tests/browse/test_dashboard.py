"""`hpo dashboard`: a real server process, a real headless browser, and bad input.

The browser test drives Debian's Chromium through Playwright (never `playwright
install`): without either it is skipped locally, and fails under CI (CI=true), where
`.ci/run` installs Chromium.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from browse_helpers import STUDY, browse_study, png_size
from study_helpers import assert_user_error, free_port, hpo, load, start_hpo, wait_for

from hpo.browse.dashboard import exposure_warning, is_local

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PAGE_TIMEOUT_MS = 90_000  # a loaded 2-core machine renders the React app slowly
SERVER_TIMEOUT_S = 60


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _need_browser() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if _in_ci():
            pytest.fail(f"CI is set, so the browser test must run: {reason}", pytrace=False)
        pytest.skip(reason)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.load(response)


@dataclass
class Served:
    """A dashboard process; `out` and `err` hold what it printed once it has stopped."""

    process: subprocess.Popen[str]
    port: int
    out: str = ""
    err: str = ""


@contextlib.contextmanager
def dashboard(*args: str, **popen: Any) -> Iterator[Served]:
    """A running `hpo dashboard ARGS --port P` process, answering HTTP; stopped at the end."""
    served = Served(start_hpo("dashboard", *args, "--port", str(port := free_port()), **popen), port)
    process = served.process
    try:
        wait_for(
            lambda: process.poll() is not None or _answers(f"http://127.0.0.1:{port}/api/meta"),
            SERVER_TIMEOUT_S,
            "the dashboard to answer",
        )
        assert process.poll() is None, f"hpo dashboard exited {process.returncode}"
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        served.out, served.err = process.communicate(timeout=30)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return browse_study(tmp_path_factory)


def test_dashboard_shows_the_study_in_a_browser(url: str, tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    study = load(url, STUDY)
    trial = study.best_trials[0]
    with dashboard("--storage", url) as served:
        port = served.port
        summaries = _get(port, "/api/studies")["study_summaries"]
        (study_id,) = [s["study_id"] for s in summaries if s["study_name"] == STUDY]
        base = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1200})
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.goto(base)
                # The hypervolume figure, drawn by plotly.js once the study's JSON has arrived.
                figure = page.locator('[id="user-defined-plot:hypervolume"]')
                expect(figure.locator(".main-svg").first).to_be_visible()
                expect(figure).to_contain_text("Hypervolume history")
                expect(page.locator('[id="user-defined-plot:pareto-front"]')).to_contain_text("coloured by device")
                expect(page.locator('[id="user-defined-plot:learning-curves"]')).to_contain_text("tokens seen")
                page.wait_for_load_state("networkidle")
                body = page.inner_text("body")
                assert STUDY in body
                assert "val_accuracy" in body and "tokens_per_sec" in body
                overview = tmp_path / "dashboard.png"
                page.screenshot(path=str(overview), full_page=True)
                # The trial page: the note the worker wrote.
                page.goto(f"{base}/trials?numbers={trial.number}")
                heading = page.get_by_role("heading", name=f"Trial {trial.number}: complete")
                expect(heading).to_be_visible()
                expect(page.get_by_text("FLOPs per token")).to_be_visible()
                expect(page.get_by_text(trial.user_attrs["sample"], exact=True)).to_be_attached()
                page.screenshot(path=str(tmp_path / "dashboard-trial.png"))
            finally:
                browser.close()
    width, height = png_size(overview)
    assert width == 1600 and height > 1200  # the whole page, below the fold too
    print(f"screenshots: {overview} and {tmp_path / 'dashboard-trial.png'}")
    assert "warning" not in served.err  # 127.0.0.1: nothing to warn about
    assert f"http://127.0.0.1:{port}/dashboard" in served.out


def test_non_local_host_warns_that_anyone_can_delete_studies(url: str) -> None:
    with dashboard("--storage", url, "--host", "0.0.0.0") as served:
        pass
    # the warning, and nothing else but the line SIGTERM (how the test stops it) ends it with
    (line,) = [line for line in served.err.splitlines() if line.strip() and line != "terminated"]
    assert line.startswith("warning: the dashboard on 0.0.0.0:") and "no authentication" in line and "delete" in line


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_local_hosts_need_no_warning(host: str) -> None:
    assert is_local(host) and exposure_warning(host, 8080) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_other_hosts_get_the_warning(host: str) -> None:
    assert not is_local(host) and "no authentication" in str(exposure_warning(host, 8080))


def test_port_in_use_is_one_error_line(url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = hpo("dashboard", "--storage", url, "--port", str(port), timeout=60)
    assert_user_error(result, f"port {port} on 127.0.0.1 is in use", "--port")


@pytest.mark.parametrize("port", ["0", "70000"])
def test_port_out_of_range_is_one_error_line(url: str, port: str) -> None:
    assert_user_error(hpo("dashboard", "--storage", url, "--port", port, timeout=60), f"--port={port}")


def test_unreachable_database_is_one_error_line() -> None:
    result = hpo(
        "dashboard", "--storage", "postgresql+psycopg://u:p@127.0.0.1:1/db", "--port", str(free_port()), timeout=60
    )
    line = assert_user_error(result, "cannot open storage", "u:***@127.0.0.1:1/db")
    assert ":p@" not in line  # the password is not printed


def test_missing_sqlite_file_is_an_error_not_a_new_database(sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    result = hpo("dashboard", "--storage", sqlite_url, "--port", str(free_port()), timeout=60)
    assert_user_error(result, "no database file", str(path))
    assert not path.exists()


def test_storage_comes_from_the_environment(url: str) -> None:
    with dashboard(env={**os.environ, "HPO_STORAGE": url}) as served:
        names = [s["study_name"] for s in _get(served.port, "/api/studies")["study_summaries"]]
    assert names == [STUDY]
    assert optuna.get_all_study_names(url) == [STUDY]
