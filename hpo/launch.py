"""Run one training in a child process, so a crash, an out-of-memory kill or a hang fails
that trial and not the worker (decision 7 in DESIGN.md).

Children come from a forkserver that has imported torch once: a trial starts in tens of
milliseconds instead of the second and a half a fresh interpreter needs, which matters
when trials last seconds. The parent receives eval events and the result over a pipe,
enforces the per-trial timeout, and kills the child on any exit path. A child whose
parent died (the forkserver exits with the worker) notices within a second and exits.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from hpo.errors import DivergedError, HpoError
from hpo.train import OnEval, TrainConfig, TrialResult, train


class TrialFailure(Exception):
    """A trial that did not produce a result; `reason` is one short word for the record.

    Reasons: diverged, invalid (a configuration the trainer rejected), out_of_memory,
    timeout, crashed (an exception or a signal in the child).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hpo.train"])
    return ctx


def run_isolated(
    config: TrainConfig, on_eval: OnEval | None = None, timeout: float | None = None
) -> TrialResult:
    """Train `config` in a child process; raise TrialFailure if it produced no result.

    An exception raised by `on_eval` (a pruning decision, say) kills the child and
    propagates, as does KeyboardInterrupt: no child outlives this call.
    """
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(config, sender), name="hpo-trial")
    process.start()
    sender.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                raise TrialFailure("timeout", f"no result after the per-trial timeout of {timeout:g} s")
            if not receiver.poll(wait):
                if not process.is_alive() and not receiver.poll(0):
                    raise TrialFailure("crashed", _exit_description(process.exitcode))
                continue
            try:
                kind, payload = receiver.recv()
            except EOFError:
                process.join(5)
                raise TrialFailure("crashed", _exit_description(process.exitcode)) from None
            if kind == "eval":
                if on_eval is not None:
                    on_eval(payload)
            elif kind == "result":
                assert isinstance(payload, TrialResult)
                return payload
            else:
                raise TrialFailure(*payload)
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join()


def _exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if name == "SIGKILL" else ""
        return f"training process killed by {name}{hint}"
    return f"training process exited with status {exitcode} without a result"


def _child_main(config: TrainConfig, conn: Connection) -> None:
    # The worker decides what Ctrl-C means for the trial; the child only stops when told.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    try:
        result = train(config, on_eval=lambda event: conn.send(("eval", event)))
        conn.send(("result", result))
    except DivergedError as exc:
        conn.send(("error", ("diverged", str(exc))))
    except HpoError as exc:
        conn.send(("error", ("invalid", str(exc))))
    except MemoryError:
        conn.send(("error", ("out_of_memory", "out of host memory")))
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            conn.send(("error", ("out_of_memory", str(exc).splitlines()[0])))
        else:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}"
            conn.send(("error", ("crashed", f"{type(exc).__name__}: {exc} (at {where})")))
    finally:
        conn.close()


def _exit_with_parent() -> None:
    """Exit as soon as the parent (the forkserver, which dies with the worker) is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="hpo-parent-watch").start()
