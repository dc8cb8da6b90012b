"""The forkserver that every rank of every trial is forked from.

It imports torch, the trainer, torch._dynamo (which every optimizer's constructor imports
lazily: a second and more on a CPU) and the builtin corpus once, so that no trial pays
for them. `start` launches it ahead of need: the study commands call it once their flags
and config are checked (a mistake must not cost a second of another process's CPU), and
its imports then run beside the command's own start-up (torch, data fingerprint,
database) instead of delaying the first trial by seconds. This module
imports nothing heavy, so that calling it first costs nothing.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from typing import Any

PRELOAD = ["hpo.trainer.loop", "torch._dynamo", "pydoc_data.topics"]


def context() -> Any:
    """The multiprocessing context whose processes come from the forkserver."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start() -> None:
    """Start the forkserver now (it preloads in the background); idempotent."""
    context()
    multiprocessing.forkserver.ensure_running()
