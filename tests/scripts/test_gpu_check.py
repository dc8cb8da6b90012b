"""scripts/gpu_check.py, run as on a GPU machine but with `--device cpu`: every part, real runs.

The same script checks a GPU (docs/gpu.md); here the CPU stands in for it on tiny shapes,
which exercises every code path the GPU run takes except the device itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def gpu_check(*args: str, tmp_path: Path, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    # One torch thread: on a shared 2-core machine two threads spin against other jobs and a run
    # gets 10-30x slower, which would make the MFU figures noise. A private cache keeps the CPU
    # peak probe out of $HOME; PYTHONPATH as docs/gpu.md runs it.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HPO_CACHE_DIR": str(tmp_path / "hpo-cache"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_every_part_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = gpu_check("--device", "cpu", "--out", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu"
    for part in ("correctness", "throughput", "memory", "oom", "study"):
        assert report[part]["ok"], (part, report[part])

    correctness = report["correctness"]
    assert correctness["device_dtype"] == "bfloat16" and correctness["reference"] == "cpu float32"
    assert len(correctness["points"]) == 4
    assert correctness["max_diff"] <= correctness["tolerance"]

    runs = report["throughput"]["runs"]
    assert [(r["shape"], r["compile"]) for r in runs] == [
        (shape, compiled) for shape in ("tiny-s", "tiny-m", "tiny-l") for compiled in (False, True)
    ]
    for run in runs:
        assert run["tokens_per_sec"] > 0 and 0 < run["mfu"] <= 1, run
    assert all(r["compile_s"] is None for r in runs if not r["compile"])
    assert all(isinstance(r["compile_s"], float) for r in runs if r["compile"])
    assert report["throughput"]["matmul"]["flops"] > 0

    for row in report["memory"]["runs"]:
        assert row["estimate_bytes"] > 0 and row["measured_bytes"] > 0, row
    assert report["memory"]["goal"]["met"] is None  # a GPU's goal

    oom, normal = report["oom"]["trials"]
    assert (oom["state"], oom["reason"]) == ("FAIL", "out_of_memory"), oom
    assert "DefaultCPUAllocator" in oom["message"]
    assert normal["state"] == "COMPLETE", normal  # the same worker went on
    assert report["oom"]["oom_estimate_bytes"] >= 64 * report["oom"]["memory_bytes"]

    study = report["study"]
    assert sum(study["states"].values()) == 4 and study["states"].get("COMPLETE", 0) >= 1
    assert "Pareto front" in study["show"]
    assert "study" in proc.stdout and "written to" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--device", "cuda"], "no GPU is visible"),
        (["--device", "tpu"], "invalid choice"),
        (["--parts", "correctness,nope"], "--parts"),
        (["--steps", "0"], "--steps"),
    ],
)
def test_user_errors_are_one_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = gpu_check(*args, "--out", str(tmp_path / "x.json"), tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], proc.stderr
