"""Rank functions that fail on purpose, passed to `hpo.trainer.launch.run_isolated` as `train_fn`.

They live in a module of their own (not in a test file) so that the launcher's children,
which receive the function pickled by reference, import only this small module. Each has
the trainer's signature `(config, on_eval) -> TrialResult` and first writes its pid to
`<config.train.checkpoint>/rank<R>.pid`, so a test can check by pid that no rank outlives
the trial. No function here ever returns a result.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hpo.config.training import RunSpec
from hpo.record.outcome import EvalEvent, OnEval, TrialResult

FOREVER_S = 3600.0


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _record_pid(config: RunSpec) -> int:
    rank = _rank()
    if config.train.checkpoint:
        folder = Path(config.train.checkpoint)
        tmp = folder / f"rank{rank}.pid.tmp"
        tmp.write_text(str(os.getpid()))
        tmp.replace(folder / f"rank{rank}.pid")  # atomic: a reader never sees a partial pid
    return rank


def _wait_for_peers() -> None:
    """Block in a collective (a failing peer makes it raise), then sleep."""
    if dist.is_initialized():
        dist.barrier()
    time.sleep(FOREVER_S)


def raise_on_rank_1(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Rank 1 raises; rank 0 waits for it in a barrier."""
    if _record_pid(config) == 1:
        raise RuntimeError("boom on rank 1")
    _wait_for_peers()
    raise AssertionError("unreachable")


def raise_on_rank_1_while_parent_busy(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Rank 0 reports an eval event (the parent's on_eval is slow, like a database write)
    and waits in a barrier; meanwhile rank 1 raises, so rank 0's barrier fails too, as a
    consequence. The launcher must report rank 1's error, the cause."""
    if _record_pid(config) == 1:
        time.sleep(0.5)
        raise RuntimeError("boom on rank 1")
    if on_eval is not None:
        on_eval(EvalEvent(step=1, tokens=1, train_loss=1.0, val_loss=1.0, val_accuracy=0.0, tokens_per_sec=1.0))
    _wait_for_peers()
    raise AssertionError("unreachable")


def hang(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Every rank sleeps, as a deadlocked or stuck run would."""
    _record_pid(config)
    time.sleep(FOREVER_S)
    raise AssertionError("unreachable")


def exit_on_rank_1(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Rank 1 leaves with os._exit(3): no exception, no message, as a native crash would."""
    if _record_pid(config) == 1:
        os._exit(3)
    _wait_for_peers()
    raise AssertionError("unreachable")


def sigkill_on_rank_1(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Rank 1 is SIGKILLed, as the kernel's out-of-memory killer would do."""
    if _record_pid(config) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _wait_for_peers()
    raise AssertionError("unreachable")


def allocate_too_much_on_rank_1(config: RunSpec, on_eval: OnEval | None) -> TrialResult:
    """Rank 1 asks torch's CPU allocator for 4 TiB, which it really refuses (a plain
    RuntimeError, not torch.OutOfMemoryError, on the CPU)."""
    if _record_pid(config) == 1:
        torch.empty(2**42, dtype=torch.uint8)
    _wait_for_peers()
    raise AssertionError("unreachable")
