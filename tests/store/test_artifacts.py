"""The folder of kept models (hpo.store.artifacts): what the workers that died left there."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from hpo.store.artifacts import SCRATCH, ModelFolder, model_name


def test_the_scratch_folder_of_a_dead_worker_goes_when_another_saves_a_checkpoint(tmp_path: Path) -> None:
    """A SIGKILLed worker cannot delete its running trials' checkpoints; the next worker on
    its host does. A live worker's folder and another host's (whose pids mean nothing here) stay."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a pid that ran on this machine and is gone
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    host = platform.node()
    try:
        dead = tmp_path / f"{SCRATCH}{ended.pid}@{host}@abc123"
        live = tmp_path / f"{SCRATCH}{running.pid}@{host}@def456"
        elsewhere = tmp_path / f"{SCRATCH}{ended.pid}@not-{host}@ghi789"
        for folder in (dead, live, elsewhere):
            folder.mkdir()
            (folder / model_name(3)).write_bytes(b"\0" * 4096)
        checkpoint = ModelFolder(tmp_path).checkpoint(0)
        assert not dead.exists()
        assert (live / model_name(3)).exists() and (elsewhere / model_name(3)).exists()
        assert checkpoint.parent.name.startswith(f"{SCRATCH}{os.getpid()}@{host}@")
    finally:
        running.kill()
        running.wait()
