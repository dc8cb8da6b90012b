"""The multi-device launcher: N ranks under torch.distributed (gloo on CPU), real processes.

Decisions 3, 8 and 10 of docs/architecture.md: `batch_size` is global, so N ranks optimize exactly as
one rank with the whole batch; a trial's ranks fail the trial, never the worker, and never
outlive it; a configuration that cannot run is refused before it starts. Nothing here is
mocked: every rank is a real process, and the faults are injected through `train_fn`
(functions in tests/rank_faults.py). No test asserts a duration: the machine is shared.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
import rank_faults
import torch
from study_helpers import tiny as tiny_study

from hpo.config.compose import compose, hpo_config
from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent, TrialResult
from hpo.trainer.launch import TrialFailure, run_isolated
from hpo.trainer.model import GPT

# A wait (not an assertion about speed) long enough for a busy 2-core machine.
PATIENCE_S = 120.0
# A failing trial may take this long before the test calls it a hang.
FAULT_TIMEOUT_S = 90.0


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The CPU peak-FLOP/s cache out of the user's home (for the ranks too, when this module
    starts the forkserver that forks them)."""
    path = tmp_path_factory.mktemp("hpo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_CACHE_DIR", str(path))
        yield path


def tiny(n_devices: int, **run: Any) -> RunSpec:
    """A one-layer GPT, 8 sequences of 32 tokens a step, one thread per rank, no dropout."""
    return RunSpec(
        model=GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0),
        data=DataConfig(val_tokens=1024),
        optim=OptimConfig(lr=1e-3, warmup_frac=0.0),  # no warm-up: step 1 has the full lr
        train=TrainSettings(
            **{"batch_size": 8, "n_devices": n_devices, "evals": 1, "sample_tokens": 0, "threads": 1, **run}
        ),
        budget=BudgetConfig(steps=1),
    )


# --- process helpers ------------------------------------------------------------------------


def alive(pids: Sequence[int]) -> list[int]:
    """Those pids still running (an exited process not yet reaped, a zombie, is not)."""
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def rank_processes(root: int | None = None) -> list[psutil.Process]:
    """Live rank processes under `root` (default: this process): children of a forkserver."""
    found = []
    try:
        descendants = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    for process in descendants:
        try:
            parent = process.parent()
            if (
                parent is not None
                and "forkserver" in " ".join(parent.cmdline())
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(condition: Callable[[], Any], what: str, timeout: float = PATIENCE_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


def rank_pids(folder: Path, world: int) -> list[int]:
    """The pids the fault functions wrote (only ranks that got that far)."""
    files = [folder / f"rank{rank}.pid" for rank in range(world)]
    return [int(f.read_text()) for f in files if f.exists()]


def run_fault(
    train_fn: Callable[..., TrialResult],
    folder: Path,
    timeout: float = FAULT_TIMEOUT_S,
    on_eval: Callable[[EvalEvent], None] | None = None,
) -> TrialFailure:
    """Run a 2-rank fault function; returns its TrialFailure after checking no rank is left."""
    folder.mkdir()
    with pytest.raises(TrialFailure) as caught:
        run_isolated(tiny(2, checkpoint=str(folder)), on_eval=on_eval, timeout=timeout, train_fn=train_fn)
    assert alive(rank_pids(folder, 2)) == []
    assert rank_processes() == []
    return caught.value


def hpo(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2 and exactly one stderr line, `error: ...`, with no traceback."""
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), describe(result)
    for fragment in fragments:
        assert fragment in lines[0], describe(result)


# --- N ranks optimize exactly like one ------------------------------------------------------


def trained(config: RunSpec, path: Path) -> dict[str, Any]:
    """The checkpoint (weights, config) of `config` trained through run_isolated."""
    run_isolated(replace(config, train=replace(config.train, checkpoint=str(path))), timeout=PATIENCE_S)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def one_rank_step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One optimizer step of 1 rank on the global batch of 8."""
    return trained(tiny(1), tmp_path_factory.mktemp("one") / "model.pt")


@pytest.mark.parametrize(
    ("n_devices", "micro_batch_size"),
    [(2, None), (2, 2), (1, 2)],
    ids=["2-ranks", "2-ranks-accumulating", "1-rank-accumulating"],
)
def test_one_step_matches_one_rank(
    one_rank_step: dict[str, Any], tmp_path: Path, n_devices: int, micro_batch_size: int | None
) -> None:
    """Same seed, same global batch: the same parameters after a step, however the batch is
    split across ranks (DDP averages gradients) or micro-batches (accumulation, no_sync)."""
    state = trained(tiny(n_devices, micro_batch_size=micro_batch_size), tmp_path / "model.pt")
    expected, weights = one_rank_step["model"], state["model"]
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    assert state["config"]["train"]["n_devices"] == n_devices


def test_the_compared_step_changes_the_weights(one_rank_step: dict[str, Any]) -> None:
    """The comparison above is not vacuous: the step moved the weights away from the init."""
    model_config = GPTConfig(**one_rank_step["config"]["model"])
    torch.manual_seed(one_rank_step["config"]["train"]["seed"])
    initial = GPT(model_config).state_dict()
    weights = one_rank_step["model"]
    assert max((weights[k] - initial[k]).abs().max().item() for k in initial) > 1e-4


# --- the full trainer on 2 ranks -------------------------------------------------------------


@pytest.fixture(scope="module")
def results() -> dict[int, tuple[TrialResult, list[EvalEvent]]]:
    """The full trainer (evaluations, a sample) on 1 and on 2 ranks, same seed and budget."""
    out = {}
    for n in (1, 2):
        config = tiny(n)
        config = replace(
            config,
            train=replace(config.train, evals=2, sample_tokens=8, timing_warmup_steps=1),
            budget=BudgetConfig(steps=4),
        )
        events: list[EvalEvent] = []
        out[n] = (run_isolated(config, on_eval=events.append, timeout=PATIENCE_S), events)
    return out


def test_two_ranks_report_the_same_fields(results: dict[int, tuple[TrialResult, list[EvalEvent]]]) -> None:
    (one, one_events), (two, two_events) = results[1], results[2]
    assert isinstance(two, TrialResult)
    assert asdict(two).keys() == asdict(one).keys() == {f.name for f in fields(TrialResult)}
    for name in asdict(one):
        assert (getattr(one, name) is None) == (getattr(two, name) is None), name
    assert (one.n_devices, two.n_devices) == (1, 2)
    assert (one.steps, one.tokens) == (two.steps, two.tokens) == (4, 4 * 8 * 32)
    assert math.isclose(two.val_accuracy, one.val_accuracy, abs_tol=0.01)
    assert math.isclose(two.val_loss, one.val_loss, rel_tol=1e-3)
    assert math.isclose(two.train_loss, one.train_loss, rel_tol=1e-3)
    assert one.tokens_per_sec > 0 and two.tokens_per_sec > 0
    assert two.achieved_flops == pytest.approx(two.flops_per_token * two.tokens_per_sec)
    assert two.params == one.params and two.flops_per_token == one.flops_per_token
    assert two.peak_memory_bytes > 0 and two.sample and two.device == one.device == "cpu"
    assert len(two.curve) == len(one.curve) == 2
    # Only rank 0 reports evaluations, once each.
    assert [e.step for e in two_events] == [e.step for e in one_events] == [e.step for e in two.curve]


# --- faults: a rank that raises, hangs or dies ----------------------------------------------


def test_a_rank_that_raises_fails_the_trial_with_its_message(tmp_path: Path) -> None:
    failure = run_fault(rank_faults.raise_on_rank_1, tmp_path / "pids")
    assert failure.reason == "crashed"
    assert "rank 1" in failure.message and "boom" in failure.message, failure.message


def test_a_rank_out_of_cpu_memory_fails_the_trial_as_out_of_memory(tmp_path: Path) -> None:
    failure = run_fault(rank_faults.allocate_too_much_on_rank_1, tmp_path / "pids")
    assert failure.reason == "out_of_memory", failure.message
    assert "rank 1" in failure.message and "can't allocate memory" in failure.message, failure.message


def test_the_cause_is_reported_not_the_peers_consequence(tmp_path: Path) -> None:
    """Rank 1 raises while the parent is busy in on_eval (a slow database write, say) and
    rank 0's collective fails because of it: the trial must name rank 1's error."""
    failure = run_fault(
        rank_faults.raise_on_rank_1_while_parent_busy, tmp_path / "pids", on_eval=lambda _event: time.sleep(2)
    )
    assert "rank 1" in failure.message and "boom" in failure.message, failure.message


def test_a_hanging_rank_is_killed_at_the_timeout(tmp_path: Path) -> None:
    failure = run_fault(rank_faults.hang, tmp_path / "pids", timeout=3)
    assert failure.reason == "timeout"
    assert len(rank_pids(tmp_path / "pids", 2)) == 2  # both ranks ran, and both are gone


@pytest.mark.parametrize("fault", [rank_faults.exit_on_rank_1, rank_faults.sigkill_on_rank_1], ids=["exit", "sigkill"])
def test_a_rank_that_dies_gives_crashed(tmp_path: Path, fault: Callable[..., TrialResult]) -> None:
    failure = run_fault(fault, tmp_path / "pids")
    assert failure.reason == "crashed"
    assert "rank 1" in failure.message, failure.message
    expected = "status 3" if fault is rank_faults.exit_on_rank_1 else "SIGKILL"
    assert expected in failure.message, failure.message


# --- killing the parent leaves no training process behind -----------------------------------

LONG_TRAINING = """
    from hpo.trainer.launch import run_isolated
    from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, TrainSettings, RunSpec

    if __name__ == "__main__":  # the forkserver imports this file as __mp_main__
        config = RunSpec(
            model=GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32),
            data=DataConfig(val_tokens=1024),
            train=TrainSettings(batch_size=8, n_devices=2, evals=1, sample_tokens=0, threads=1),
            budget=BudgetConfig(seconds=3600),
        )
        run_isolated(config, timeout=3600)
"""


def test_killing_the_parent_leaves_no_rank_behind(tmp_path: Path) -> None:
    script = tmp_path / "long_training.py"
    script.write_text(textwrap.dedent(LONG_TRAINING))
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "HPO_CACHE_DIR": str(tmp_path / "cache")},
        start_new_session=True,
    )
    tree: list[int] = []
    try:
        ranks = wait_for(lambda: len(rank_processes(parent.pid)) == 2 and rank_processes(parent.pid), "2 ranks")
        time.sleep(1.0)  # let them enter training (the rendezvous, the first steps)
        assert parent.poll() is None, parent.stderr.read() if parent.stderr else ""
        tree = [p.pid for p in psutil.Process(parent.pid).children(recursive=True)]
        assert {r.pid for r in ranks} <= set(tree)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not alive(tree), f"the processes of the killed parent's tree {tree} to exit", timeout=30)
    finally:
        for pid in alive([*tree, parent.pid]):
            os.kill(pid, signal.SIGKILL)
        if parent.stderr:
            parent.stderr.close()


# --- concurrent trials on one host -----------------------------------------------------------


def test_two_concurrent_two_rank_trials_both_finish() -> None:
    """Each trial holds its own rendezvous store (its own port): they never collide. A
    barrier in on_eval makes sure both trials are running at once, not one after the other."""
    together = threading.Barrier(2, timeout=PATIENCE_S)
    results: dict[int, TrialResult] = {}
    errors: list[BaseException] = []

    def trial(index: int) -> None:
        config = tiny(2, evals=2, seed=index)
        config = replace(config, budget=BudgetConfig(steps=4))
        met = False

        def on_eval(event: EvalEvent) -> None:
            nonlocal met
            if not met:
                met = True
                together.wait()

        try:
            results[index] = run_isolated(config, on_eval=on_eval, timeout=PATIENCE_S + 60)
        except BaseException as exc:
            errors.append(exc)
            together.abort()

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [0, 1]
    for result in results.values():
        assert result.n_devices == 2 and result.steps == 4 and len(result.curve) == 2
    assert rank_processes() == []


# --- configurations that cannot run ----------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1])
def test_n_devices_below_one_is_a_config_error(n: int) -> None:
    with pytest.raises(HpoError, match="n_devices"):
        TrainSettings(n_devices=n)
    with pytest.raises(HpoError, match="n_devices"):
        hpo_config(compose(["experiment=smoke", f"train.n_devices={n}"]))


def test_device_ids_must_match_the_device_count() -> None:
    with pytest.raises(TrialFailure) as caught:
        run_isolated(tiny(2), device_ids=[0])
    assert caught.value.reason == "invalid"


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["train.n_devices=64"], ["n_devices=64"]),
        (["train.n_devices=2", "train.batch_size=31"], ["batch_size=31", "n_devices=2"]),
        (["train.n_devices=0"], ["n_devices=0"]),
        (["train.device=cuda"], ["cuda"]),
    ],
    ids=["too-many-devices", "indivisible-batch", "zero-devices", "no-gpu"],
)
def test_hpo_train_refuses_what_cannot_run(tmp_path: Path, overrides: list[str], fragments: list[str]) -> None:
    if "train.device=cuda" in overrides and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_user_error(hpo("train", "experiment=smoke", *overrides, cwd=tmp_path), *fragments)


def test_a_study_records_what_cannot_run_as_infeasible(tmp_path: Path) -> None:
    """A choice that cannot run here (64 devices) is an infeasible trial; one the study can
    still run (1 device) keeps the study legal. (A setting that rules out every trial, such
    as train.device=cuda without a GPU, is an error before the study exists:
    tests/cli/test_nothing_created.py.)"""
    fragment = "n_devices=64"
    url = f"sqlite:///{tmp_path}/hpo.db"
    first = "study.baselines=[{n_devices: 64}]"
    result = hpo(
        "run",
        *tiny_study("cannot", 1, "search_space.n_devices={choices: [1, 64]}", first),
        "--storage",
        url,
        cwd=tmp_path,
    )
    assert result.returncode == 0, describe(result)
    assert "Traceback" not in result.stdout + result.stderr, describe(result)
    (trial,) = optuna.load_study(study_name="cannot", storage=url).get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["failure_reason"] == "infeasible"
    assert fragment in trial.user_attrs["failure_message"]
    assert "devices" not in trial.user_attrs  # refused before it leased anything
