"""Which device a run uses and what that device could do at best (its peak FLOP/s).

MFU is only meaningful against the peak of the machine that ran: GPUs use a table of
vendor dense peaks; CPUs have no such table worth trusting, so a short fp32 matmul probe
measures it once per machine, thread count and torch version, and caches the figure.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from hpo.config.settings import ResourcesConfig
from hpo.errors import HpoError
from hpo.trainer.data import default_cache_dir

# Dense (no sparsity) peak FLOP/s by GPU name fragment, for bf16 tensor-core math; the
# first fragment contained in torch.cuda.get_device_name() wins, so specific names first.
GPU_PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),
    ("T4", 65e12),
)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when a GPU is visible, else the CPU.

    A CUDA device carries its index: the current device, which the launcher sets to the
    rank's own GPU.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise HpoError(f"train.device={name!r} is unknown; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise HpoError("train.device=cuda but no GPU is visible; use train.device=cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def device_pool(resources: ResourcesConfig) -> tuple[list[int], str]:
    """The device ids trials may lease on this machine, and their kind (cuda or cpu)."""
    gpus = torch.cuda.device_count()
    kind = "cuda" if gpus else "cpu"
    found = list(range(gpus)) if gpus else sorted(os.sched_getaffinity(0))
    if resources.devices == "auto":
        return found, kind
    devices = resources.devices
    wanted = list(range(devices)) if isinstance(devices, int) else [int(d) for d in devices]
    missing = [d for d in wanted if d not in found] if isinstance(devices, tuple) else []
    if missing or len(wanted) > len(found):
        shown = list(devices) if isinstance(devices, tuple) else devices  # as the user writes it
        raise HpoError(
            f"resources.devices={shown} asks for {kind} devices this machine lacks "
            f"(it has {kind} {found}); use resources.devices=auto"
        )
    return (found[: len(wanted)] if isinstance(devices, int) else wanted), kind


def host_hardware(device: str) -> str:
    """What a trial's throughput is measured on, on this host, for `train.device`: the GPU
    model (the models, if the host mixes them), or the CPU model and the one core each rank
    is pinned to (hpo.trainer.launch). The one place that names a host's hardware."""
    if device != "cpu" and torch.cuda.is_available():
        return " + ".join(sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}))
    return f"{cpu_model()}, 1 core per rank"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of the device for the dtype training uses there, None if unknown."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peak for key, peak in GPU_PEAK_BF16 if key in name), None)
    return cpu_peak_flops()


def cpu_peak_flops(cache_dir: Path | None = None) -> float:
    """fp32 matmul FLOP/s on this CPU at the current thread count, measured once and cached."""
    path = (cache_dir or default_cache_dir()) / "cpu_peak_flops.json"
    key = f"{cpu_model()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    cached[key] = measure_matmul_flops()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time
    return float(cached[key])


def measure_matmul_flops(
    size: int = 1024, seconds: float = 0.3, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> float:
    """Best observed matmul FLOP/s over short repeated bursts (noise only slows): fp32 on
    the CPU unless told otherwise; a CUDA device is synchronized before each reading."""
    device = device or torch.device("cpu")
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(2):
        a @ b
    sync()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - start))
    return best
