"""The real `hpo` command line (`python -m hpo`), run as a subprocess: output and exit codes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def hpo(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # One torch thread: on a shared 2-core machine two threads spin against other jobs and
    # a run gets 10-30x slower. A private cache keeps the CPU peak probe out of $HOME.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HPO_CACHE_DIR": str(tmp_path / "hpo-cache")}
    return subprocess.run(
        [sys.executable, "-m", "hpo", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def metric(stdout: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s+(\S+)\s*$", stdout, re.MULTILINE)
    assert match, f"no {name} row in:\n{stdout}"
    return match.group(1)


def test_train_smoke(tmp_path: Path) -> None:
    proc = hpo("train", "experiment=smoke", "budget.tokens=60000", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert 0.0 < float(metric(out, "val_accuracy")) < 1.0
    assert float(metric(out, "tokens/s").replace(",", "")) > 0
    assert int(metric(out, "tokens").replace(",", "")) >= 60_000
    assert re.search(r"^step\s+\d+\s+tokens", out, re.MULTILINE)  # progress lines, not --quiet
    sample = out.split("\nsample:\n", 1)
    assert len(sample) == 2 and sample[1].strip()


def test_train_resumes_its_saved_state(tmp_path: Path) -> None:
    state = tmp_path / "run.pt"
    run = ["train", "--quiet", "experiment=smoke", "budget.tokens=16000", "train.evals=2"]
    first = hpo(*run, f"train.save_state={state}", tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"run state saved to {state}" in first.stdout
    again = hpo(*run, f"train.resume_from={state}", tmp_path=tmp_path)  # the whole run is in the state
    assert again.returncode == 0, again.stderr
    assert metric(again.stdout, "resumed at tokens") == metric(again.stdout, "tokens")
    assert metric(again.stdout, "val_accuracy") == metric(first.stdout, "val_accuracy")


def test_config_prints_yaml(tmp_path: Path) -> None:
    proc = hpo("config", "experiment=smoke", "optim.lr=0.002", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["model"]["n_layer"] == 2
    assert config["model"]["n_embd"] == 64
    assert config["budget"]["tokens"] == 300_000
    assert config["optim"]["lr"] == 0.002


def test_flags_and_overrides_in_any_order(tmp_path: Path) -> None:
    common = ["budget.tokens=16000", "train.sample_tokens=0"]
    orders = [
        ["train", "--quiet", "experiment=smoke", *common],
        ["train", "experiment=smoke", *common, "--quiet"],
    ]
    results = []
    for args in orders:
        proc = hpo(*args, tmp_path=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert not re.search(r"^step\s", proc.stdout, re.MULTILINE), args  # --quiet took effect
        assert metric(proc.stdout, "tokens") == "16,384", args  # the overrides took effect
        results.append((metric(proc.stdout, "val_accuracy"), metric(proc.stdout, "val_loss")))
    assert results[0] == results[1]  # the same seeded run both times


def test_help_and_version(tmp_path: Path) -> None:
    for args in (["--help"], ["train", "--help"], ["--version"]):
        proc = hpo(*args, tmp_path=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout.strip()


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`hpo ... | head` where the reader has gone: no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # gone before hpo writes a line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hpo", "--help"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == ""


BAD_INPUTS: list[tuple[str, list[str], str]] = [
    ("heads-do-not-divide-width", ["train", "experiment=smoke", "model.n_head=3"], "n_head=3"),
    ("block-longer-than-val", ["train", "experiment=smoke", "model.block_size=100000"], "block_size=100000"),
    ("empty-corpus", ["train", "experiment=smoke", "data.source={empty}"], "empty.txt"),
    ("missing-corpus", ["train", "experiment=smoke", "data.source={missing}"], "missing.txt"),
    ("non-utf8-corpus", ["train", "experiment=smoke", "data.source={latin1}"], "tokenizer=byte"),
    ("lr-zero", ["train", "experiment=smoke", "optim.lr=0"], "optim.lr=0"),
    ("lr-negative", ["train", "experiment=smoke", "optim.lr=-1"], "optim.lr=-1"),
    ("batch-zero", ["train", "experiment=smoke", "train.batch_size=0"], "train.batch_size=0"),
    ("optim-group-nope", ["train", "optim=nope"], "optim/nope"),
    ("optim-name-nope", ["train", "optim.name=nope"], "optim.name"),
    ("pos-encoding-nope", ["train", "model.pos_encoding=nope"], "model.pos_encoding"),
    ("budget-zero", ["train", "experiment=smoke", "budget.tokens=0"], "budget.tokens=0"),
    ("unknown-key", ["train", "model.n_layers=2"], "model.n_layers"),
    ("no-equals", ["train", "experiment=smoke", "model.n_layer"], "model.n_layer"),
    ("wrong-type", ["config", "model.n_layer=two"], "model.n_layer"),
    ("config-bad-value", ["config", "model.n_head=3"], "n_head=3"),
    ("seed-negative", ["config", "study.seed=-1"], "study.seed=-1 must be in [0, 2**32)"),
    ("random-share-all", ["config", "sampler.random_fraction=1"], "sampler.random_fraction=1.0 must be in [0, 1)"),
    ("random-share-of-random", ["config", "sampler=random", "sampler.random_fraction=0.3"], "add sampler=tpe"),
    ("pruned-view-unknown", ["config", "sampler.pruned_trials=hidden"], "use one of last, observed"),
    ("pause-stateless", ["config", "pruner=moasha", "pruner.pause=true", "storage.save_states=false"], "leave storage"),
    ("resume-missing", ["train", "experiment=smoke", "train.resume_from={state}"], "state.pt' does not exist"),
    ("resume-not-a-state", ["train", "experiment=smoke", "train.resume_from={latin1}"], "not an hpo run state"),
    ("unknown-command", ["nope"], "nope"),
    ("unknown-flag", ["train", "--nope", "experiment=smoke"], "--nope"),
    # The kinds of bad input that once got past the checks, two of each (README: one error line,
    # nothing created). 1: search-space choices and steps, checked as they will be sampled.
    ("space-choice-wrong-type", ["config", "search_space.n_head={{choices: [2, four]}}"], "search_space.n_head"),
    ("space-step-zero", ["config", "search_space.lr={{low: 0.001, high: 0.01, step: 0}}"], "search_space.lr"),
    # 2: output paths, checked before any training.
    ("checkpoint-under-a-file", ["train", "experiment=smoke", "--checkpoint", "{latin1}/m.pt"], "--checkpoint"),
    ("state-under-a-file", ["train", "experiment=smoke", "train.save_state={latin1}/s.pt"], "train.save_state"),
    # 3: inputs checked before a database exists.
    ("run-missing-corpus", ["run", "data.source={missing}", "--storage", "sqlite:///{dir}/a.db"], "missing.txt"),
    ("proxy-bad-port", ["proxy", "--port", "99999", "--storage", "sqlite:///{dir}/b.db"], "99999"),
    # 4: URLs whose password once showed (tests/test_secrets.py scans every output for it).
    ("password-in-query", ["studies", "--storage", "postgresql://u@127.0.0.1:1/db?password=pw-in-query"], "***"),
    ("password-with-at", ["studies", "--storage", "postgresql://u:pw@with-at@127.0.0.1:1/db"], "%40"),
    # 5: numbers that are not finite.
    ("lr-nan", ["config", "optim.lr=nan"], "optim.lr"),
    ("weight-decay-inf", ["config", "optim.weight_decay=inf"], "optim.weight_decay"),
    # 6: a fixed setting that rules out every trial.
    ("devices-lacking", ["run", "resources.devices=[7]", "--storage", "sqlite:///{dir}/c.db"], "[7]"),
    (
        "memory-below-every-trial",
        ["run", "resources.memory_limit_gb=0.000001", "--storage", "sqlite:///{dir}/d.db"],
        "memory",
    ),
    # 7: flags out of range.
    ("timeout-negative", ["run", "--timeout", "-1", "--storage", "sqlite:///{dir}/e.db"], "--timeout"),
    ("resume-timeout-zero", ["resume", "x", "--timeout", "0", "--storage", "sqlite:///{dir}/f.db"], "--timeout"),
    # 8: non-ASCII letters: plain values just work (tests/config/test_validation.py); inside a
    # list or mapping Hydra needs quotes, and the error shows how to write them.
    ("non-ascii-in-a-list", ["config", "study.objectives=[précision]"], "quote the value"),
    ("non-ascii-choice", ["config", "+search_space.pos_encoding={{choices: [été]}}"], "['été']"),
    # 9: errors name keys as the user writes them.
    ("fixed-value-key", ["config", "+search_space.pos_encoding=nope"], "search_space.pos_encoding='nope'"),
    ("baseline-value-key", ["config", "study.baselines=[{{n_layer: 0}}]"], "n_layer"),
]


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every bad input, run once, two at a time (each is mostly interpreter start-up)."""
    tmp_path = tmp_path_factory.mktemp("bad-inputs")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me\n".encode("latin-1") * 100)
    files = {name: str(tmp_path / f"{name}.txt") for name in ("empty", "missing", "latin1")}
    files["state"] = str(tmp_path / "state.pt")
    files["dir"] = str(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            case: pool.submit(hpo, *(arg.format(**files) for arg in args), tmp_path=tmp_path)
            for case, args, _ in BAD_INPUTS
        }
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize(("case", "needle"), [(c[0], c[2]) for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_user_errors_exit_2_with_one_error_line(case: str, needle: str, bad_input_runs) -> None:
    proc = bad_input_runs[case]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
