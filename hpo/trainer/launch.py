"""Run one training on N ranks in child processes (torch.distributed), so a crash, an
out-of-memory kill or a hang fails that trial and not the worker.

Children come from a forkserver that has imported torch once: a trial starts in tens of
milliseconds instead of the second and a half a fresh interpreter needs, which matters
when trials last seconds. The parent receives eval events and the result over a pipe,
enforces the per-trial timeout, and kills the child on any exit path. A child whose
parent died (the worker, killed) notices at once and exits.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from hpo.config.training import RunSpec
from hpo.errors import DivergedError, HpoError
from hpo.record.outcome import OnEval, Reason, TrialResult
from hpo.trainer import forkserver, hardware
from hpo.trainer.loop import train


class TrialFailure(Exception):
    """A trial that did not produce a result, with the trainer's Reason for the record:
    diverged, invalid (a configuration the trainer rejected), out_of_memory, timeout or
    crashed (an exception or a signal in a rank).
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# Seconds to wait, after a rank's failure, for its peers' failures (to tell cause from consequence).
FAILURE_SETTLE_S = 0.5


def run_isolated(
    config: RunSpec,
    on_eval: OnEval | None = None,
    timeout: float | None = None,
    device_ids: Sequence[int] | None = None,
    train_fn: Callable[[RunSpec, OnEval | None], TrialResult] = train,
    on_started: Callable[[], None] | None = None,
) -> TrialResult:
    """Train `config` on `config.train.n_devices` ranks in child processes.

    One rank per device: NCCL and one GPU each on CUDA machines, gloo and N CPU processes
    elsewhere. `device_ids` are the leased devices (GPU indices, or CPU cores to which
    each rank is pinned with one thread); without them ranks use GPUs 0..N-1, or split
    the CPU's threads so that N x threads never exceeds the cores. The rendezvous store
    is created here, on a port the kernel picks and this process holds, so concurrent
    trials on one host never collide. `train_fn` runs on every rank (the trainer; tests
    pass functions that fail on purpose, to exercise the fault paths). `on_started` runs
    here once every rank is started: the caller's bookkeeping then overlaps the training.

    Raises TrialFailure when any rank fails (with that rank's message), when a rank dies,
    or at the timeout. An exception raised by `on_eval` (a pruning decision, say) kills
    the ranks and propagates, as does KeyboardInterrupt: no rank outlives this call.
    """
    world = config.train.n_devices
    cuda = hardware.resolve_device(config.train.device).type == "cuda"
    pin = device_ids is not None and not cuda
    config = _split_threads(config, cores_per_rank=1 if pin else None)
    ids = list(device_ids) if device_ids is not None else list(range(world))
    if len(ids) != world:
        raise TrialFailure(Reason.INVALID, f"{len(ids)} device ids given for n_devices={world}")
    store = None
    if world > 1:
        from torch.distributed import TCPStore

        store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    ctx = forkserver.context()
    receivers: dict[int, Connection] = {}
    processes = []
    for rank in range(world):
        receiver, sender = ctx.Pipe(duplex=False)
        port = store.port if store is not None else 0
        process = ctx.Process(
            target=_rank_main, args=(train_fn, config, rank, port, ids[rank], pin, sender), name=f"hpo-rank-{rank}"
        )
        process.start()
        sender.close()
        receivers[rank] = receiver
        processes.append(process)

    def where(rank: int) -> str:
        return f"rank {rank}: " if world > 1 else ""

    deadline = None if timeout is None else time.monotonic() + timeout
    finals: dict[int, TrialResult | None] = {}
    # One rank's failure makes its peers fail too (a collective loses its peer), and when
    # this loop was busy (in on_eval) both reports are waiting: collect the failures that
    # follow the first for a moment, and report the cause, not a consequence.
    failures: dict[int, tuple[float, TrialFailure]] = {}  # rank -> (when it failed, failure)
    settle = math.inf
    try:
        if on_started is not None:
            on_started()
        while len(finals) < world:
            now = time.monotonic()
            if failures and (not receivers or now >= min(settle, deadline or math.inf)):
                raise _cause(failures)
            if deadline is not None and now >= deadline:
                raise TrialFailure(Reason.TIMEOUT, f"no result after the per-trial timeout of {timeout:g} s")
            until = min(settle, deadline or math.inf)
            by_conn = {conn: rank for rank, conn in receivers.items()}
            for ready in wait(list(by_conn), timeout=None if until == math.inf else until - now):
                rank = by_conn[ready]  # type: ignore[index]
                try:
                    kind, payload = _receive(receivers[rank], processes[rank], where(rank))
                except TrialFailure as crash:  # a rank that died without a word caused the rest
                    kind, payload = "failure", (-math.inf, crash)
                if kind == "eval":
                    if on_eval is not None and not failures:
                        on_eval(payload)
                elif kind in ("error", "failure"):
                    if kind == "error":
                        reason, text, when = payload
                        payload = (when, TrialFailure(reason, where(rank) + text))
                    failures[rank] = payload
                    del receivers[rank]
                    settle = min(settle, time.monotonic() + FAILURE_SETTLE_S)
                else:
                    finals[rank] = payload
                    del receivers[rank]
        result = finals[0]
        assert isinstance(result, TrialResult)
        return result
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join()
        for conn in receivers.values():
            conn.close()
        del store


def _cause(failures: dict[int, tuple[float, TrialFailure]]) -> TrialFailure:
    """The failure that came first: a silent death, else the earliest error (then lowest rank)."""
    _, (_, failure) = min(failures.items(), key=lambda item: (item[1][0], item[0]))
    return failure


def _receive(conn: Connection, process: Any, where: str) -> tuple[str, Any]:
    """The next message of a rank; a closed pipe without a final message is a crash."""
    try:
        message: tuple[str, Any] = conn.recv()
        return message
    except EOFError:
        process.join(5)
        raise TrialFailure(Reason.CRASHED, where + _exit_description(process.exitcode)) from None


def _split_threads(config: RunSpec, cores_per_rank: int | None) -> RunSpec:
    """CPU ranks share the cores: N ranks x threads never exceeds the threads asked for.

    A rank pinned to its leased core gets that one core, unless train.threads says more.
    """
    run = config.train
    if hardware.resolve_device(run.device).type == "cuda" or (run.threads is not None and cores_per_rank):
        return config
    if cores_per_rank is not None:
        return replace(config, train=replace(run, threads=cores_per_rank))
    if run.n_devices == 1:
        return config
    total = run.threads or os.cpu_count() or 1
    return replace(config, train=replace(run, threads=max(1, total // run.n_devices)))


def _exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"training process killed by {name}{hint}"
    return f"training process exited with status {exitcode} without a result"


def _rank_main(
    train_fn: Callable[[RunSpec, OnEval | None], TrialResult],
    config: RunSpec,
    rank: int,
    port: int,
    device_id: int,
    pin: bool,
    conn: Connection,
) -> None:
    # The worker decides what Ctrl-C means for the trial; ranks only stop when killed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    world = config.train.n_devices
    try:
        cuda = hardware.resolve_device(config.train.device).type == "cuda"
        if cuda:
            torch.cuda.set_device(device_id)
        elif pin:
            os.sched_setaffinity(0, {device_id})
        if world > 1:
            store = torch.distributed.TCPStore("127.0.0.1", port, is_master=False)
            backend = "nccl" if cuda else "gloo"
            torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world)
        send = (lambda event: conn.send(("eval", event))) if rank == 0 else None
        result = train_fn(config, send)
        message: tuple[str, Any] = ("result", result if rank == 0 else None)  # rank 0 speaks for all
    except Exception as exc:
        message = ("error", (*_classify(exc), time.time()))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    try:
        conn.send(message)
    except OSError:
        os._exit(1)  # the parent is gone (a broken pipe): there is no one left to tell
    conn.close()


def _classify(exc: Exception) -> tuple[Reason, str]:
    """A rank's exception as (reason, message) for the trial's record."""
    if isinstance(exc, DivergedError):
        return Reason.DIVERGED, str(exc)
    if isinstance(exc, HpoError):
        return Reason.INVALID, str(exc)
    if isinstance(exc, MemoryError):
        return Reason.OUT_OF_MEMORY, "out of host memory"
    # torch's CPU allocator reports a failed allocation as a plain RuntimeError, not OutOfMemoryError.
    if isinstance(exc, torch.OutOfMemoryError) or (isinstance(exc, RuntimeError) and "DefaultCPUAllocator" in str(exc)):
        return Reason.OUT_OF_MEMORY, str(exc).splitlines()[0]
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return Reason.CRASHED, f"{type(exc).__name__}: {exc} (at {os.path.basename(frame.filename)}:{frame.lineno})"


def _exit_with_parent() -> None:
    """Exit as soon as the process that started this rank (the worker) is gone.

    Watching the OS parent (the forkserver) is not enough: every rank holds a copy of the
    forkserver's keep-alive pipe, so the forkserver outlives a killed worker as long as
    the ranks do. multiprocessing's parent sentinel closes when the worker itself dies.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="hpo-parent-watch").start()
