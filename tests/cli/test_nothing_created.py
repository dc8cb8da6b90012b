"""Bad input creates nothing: exit 2, one `error:` line naming the value and the fix, and
no database, folder or file made, no study changed (issue #26, kinds 2, 3, 6, 7 and 10).

Every case runs a real `hpo` process in a folder of its own, holding a copy of a database
with one tiny study and a regular file (a path under it cannot be written, even by root),
and compares the folder's listing and the database's rows before and after.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from study_helpers import TINY, assert_user_error, hpo, hpo_ok, sqlite_snapshot, tiny

STUDY = "kept"

# (case, command with {url} (the folder's database), {new} (a database URL whose file does not
# exist), {file} (a regular file), {dir} (the folder); fragments of the error line)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # 2: output paths checked before the work
    ("train-checkpoint-under-file", ["train", *TINY, "--checkpoint", "{file}/model.pt"], ("--checkpoint=", "give a")),
    (
        "train-state-in-proc",
        ["train", *TINY, "train.save_state=/proc/hpo-test/state.pt"],
        ("train.save_state=", "give a"),
    ),
    ("train-checkpoint-key-in-proc", ["train", *TINY, "train.checkpoint=/proc/m.pt"], ("train.checkpoint=", "give a")),
    (
        "export-output-under-file",
        ["export", STUDY, "--storage", "{url}", "--format", "csv", "--output", "{file}/t.csv"],
        ("--output=", "give a"),
    ),
    (
        "export-model-in-proc",
        ["export", STUDY, "--storage", "{url}", "--trial", "0", "--model", "/proc/m.pt"],
        ("--model=", "give a"),
    ),
    ("report-out-under-file", ["report", STUDY, "--storage", "{url}", "--out", "{file}/report"], ("--out=", "give a")),
    ("report-out-is-file", ["report", STUDY, "--storage", "{url}", "--out", "{file}"], ("--out=", "not a folder")),
    # 3: inputs validated before a database is opened (and so created)
    (
        "run-missing-corpus",
        ["run", *tiny("new", 1), "data.source={dir}/missing.txt", "--storage", "{new}"],
        ("missing.txt", "give a text file"),
    ),
    ("proxy-bad-port", ["proxy", "--storage", "{new}", "--port", "99999"], ("--port=99999", "65535")),
    (
        "proxy-bad-host",
        ["proxy", "--storage", "{new}", "--host", "nosuch.invalid"],
        ("--host=nosuch.invalid", "use --host"),
    ),
    ("dashboard-bad-port", ["dashboard", "--storage", "{new}", "--port", "0"], ("--port=0", "65535")),
    ("resume-no-db", ["resume", STUDY, "--storage", "{new}"], ("no database file", "--storage")),
    ("worker-no-db", ["worker", STUDY, "--storage", "{new}", "--wait", "0"], ("no database file", "--storage")),
    ("retrain-no-db", ["retrain", STUDY, "--front", "--storage", "{new}"], ("no database file", "--storage")),
    ("from-trial-no-db", ["train", "--from-trial", f"{STUDY}:0", "--storage", "{new}"], ("no database file",)),
    ("studies-no-db", ["studies", "--storage", "{new}"], ("no database file",)),
    ("show-no-db", ["show", STUDY, "--storage", "{new}"], ("no database file",)),
    ("export-no-db", ["export", STUDY, "--storage", "{new}", "--format", "csv"], ("no database file",)),
    ("report-no-db", ["report", STUDY, "--storage", "{new}", "--out", "{dir}/r"], ("no database file",)),
    # 6: fixed settings that rule out every trial refused before the study exists
    (
        "devices-this-machine-lacks",
        ["run", *tiny("dev", 1), "resources.devices=4096", "--storage", "{url}"],
        ("resources.devices=4096", "use resources.devices=auto"),
    ),
    (
        "every-device-count-too-many",
        [
            "run",
            *tiny("dev", 1),
            "resources.devices=1",
            "search_space.n_devices={choices: [2, 4]}",
            "--storage",
            "{url}",
        ],
        ("n_devices=2", "no trial of study 'dev'", "change the settings"),
    ),
    (
        "memory-limit-below-every-trial",
        ["run", *tiny("dev", 1), "resources.memory_limit_gb=0.0000001", "--storage", "{url}"],
        ("resources.memory_limit_gb=1e-07", "change the"),
    ),
    (
        "cuda-without-gpu",
        ["run", *tiny("dev", 1), "train.device=cuda", "--storage", "{url}"],
        ("train.device=cuda", "use train.device=cpu"),
    ),
    # 7: numbers out of range
    (
        "run-negative-timeout",
        ["run", *tiny(STUDY, 1), "--storage", "{url}", "--timeout", "-5"],
        ("--timeout=-5", "leave it out"),
    ),
    ("resume-zero-timeout", ["resume", STUDY, "--storage", "{url}", "--timeout", "0"], ("--timeout=0", "leave it out")),
    ("worker-negative-timeout", ["worker", STUDY, "--storage", "{url}", "--timeout", "-1"], ("--timeout=-1",)),
    (
        "retrain-negative-timeout",
        ["retrain", STUDY, "--front", "--storage", "{url}", "--timeout", "-2"],
        ("--timeout=-2",),
    ),
    (
        "resume-zero-trials",
        ["resume", STUDY, "--storage", "{url}", "--n-trials", "0"],
        ("--n-trials=0", "leave it out"),
    ),
    ("retrain-zero-n", ["retrain", STUDY, "--front", "--storage", "{url}", "--n", "0"], ("--n=0", "leave it out")),
    ("worker-negative-wait", ["worker", STUDY, "--storage", "{url}", "--wait", "-1"], ("--wait=-1", "0 or more")),
    ("dashboard-port-too-big", ["dashboard", "--storage", "{url}", "--port", "70000"], ("--port=70000", "free port")),
    ("proxy-port-zero", ["proxy", "--storage", "{url}", "--port", "0"], ("--port=0", "free port")),
]

if torch.cuda.is_available():  # train.device=cuda can run here
    CASES = [case for case in CASES if case[0] != "cuda-without-gpu"]


def _filled(arg: str, values: dict[str, object]) -> str:
    for key, value in values.items():
        arg = arg.replace(f"{{{key}}}", str(value))
    return arg


def _listing(folder: Path) -> list[str]:
    """Every path under `folder`, but SQLite's own -wal and -shm, which reading the database
    makes and its last connection's close deletes."""
    paths = (str(path.relative_to(folder)) for path in folder.rglob("*"))
    return sorted(path for path in paths if not path.endswith(("-wal", "-shm")))


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a database holding one tiny study of one trial, run to its end."""
    folder = tmp_path_factory.mktemp("kept")
    hpo_ok("run", *tiny(STUDY, 1), "--storage", f"sqlite:///{folder}/hpo.db", "--quiet", cwd=folder)
    return folder


def test_a_run_leaves_no_lock_file(kept_study: Path) -> None:
    assert (kept_study / "hpo.db").exists()
    assert list(kept_study.glob("*.lock")) == [], _listing(kept_study)
    assert not any(name.endswith(".lock") for name in _listing(kept_study)), _listing(kept_study)


@pytest.fixture(scope="module")
def bad_runs(
    kept_study: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[subprocess.CompletedProcess[str], list[str], list[str], list[str], list[str]]]:
    """Every case once, two at a time, each in a copy of the kept study's folder: its
    result, and the folder's listing and database rows before and after."""

    def one(case: str, args: list[str]):
        folder = tmp_path_factory.mktemp(case)
        shutil.copy(kept_study / "hpo.db", folder / "hpo.db")
        (folder / "afile.txt").write_text("a regular file\n")
        url = f"sqlite:///{folder}/hpo.db"
        values = {"url": url, "new": f"sqlite:///{folder}/new.db", "file": folder / "afile.txt", "dir": folder}
        listing, rows = _listing(folder), sqlite_snapshot(url)
        result = hpo(*(_filled(arg, values) for arg in args), cwd=folder, timeout=120)
        return result, listing, _listing(folder), rows, sqlite_snapshot(url)

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(one, case, args) for case, args, _ in CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize(("case", "fragments"), [(c[0], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_and_creates_nothing(case: str, fragments: tuple[str, ...], bad_runs) -> None:
    result, listed_before, listed_after, rows_before, rows_after = bad_runs[case]
    assert_user_error(result, *fragments)
    assert listed_after == listed_before  # no database, -states, -artifacts, lock or output
    assert rows_after == rows_before  # the existing study intact
    assert "step " not in result.stdout  # refused before any training


def test_a_gpu_study_may_be_created_on_a_host_without_one(tmp_path: Path) -> None:
    """`--create-only` makes the study for the workers that will run it (docker-compose's
    `create` service has no GPU): only running its trials here is refused."""
    url = f"sqlite:///{tmp_path}/hpo.db"
    hpo_ok("run", *tiny("gpu", 1), "train.device=cuda", "--storage", url, "--create-only", cwd=tmp_path)
    if not torch.cuda.is_available():
        assert_user_error(hpo("run", *tiny("gpu", 1), "train.device=cuda", "--storage", url, cwd=tmp_path), "cuda")


def test_a_feasible_device_choice_is_accepted(tmp_path: Path) -> None:
    """A searched value that rules out only some trials is no error: those trials are infeasible."""
    url = f"sqlite:///{tmp_path}/hpo.db"
    hpo_ok(
        "run", *tiny("some", 1), "resources.devices=1", "search_space.n_devices={choices: [1, 2]}",
        "--storage", url, "--create-only", cwd=tmp_path,
    )  # fmt: skip
    assert (tmp_path / "hpo.db").exists()


CONTENDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from hpo.store.locks import file_lock

    lock, counter, inside, rounds = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    for _ in range(rounds):
        with file_lock(lock):
            marker = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # FileExistsError: two inside
            value = int(counter.read_text())
            time.sleep(0.0005)
            counter.write_text(str(value + 1))
            os.close(marker)
            os.unlink(inside)
    """
)


def test_the_study_lock_excludes_across_processes_and_leaves_no_file(tmp_path: Path) -> None:
    """Three processes take the lock 150 times each: never two inside at once, no count lost,
    and no lock file left (its holder deletes it; a waiter on a deleted file tries again)."""
    lock, counter, inside = tmp_path / "hpo.db.study.lock", tmp_path / "counter", tmp_path / "inside"
    counter.write_text("0")
    rounds = 150
    script = tmp_path / "contender.py"
    script.write_text(CONTENDER)
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(lock), str(counter), str(inside), str(rounds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert int(counter.read_text()) == 3 * rounds
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contender.py", "counter"]
