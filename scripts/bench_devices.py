"""Benchmark data-parallel scaling: tokens/s of one shape on 1 and 2 devices, in one run.

CPU: each rank is a process pinned to its own core with one thread, launched exactly as a
study launches trials (`hpo.trainer.launch.run_isolated` with leased `device_ids` [0], then
[0, 1]; gloo all-reduce). Reported beside them, in the same run:

- a single process with 2 threads, unpinned: the alternative use of the same two cores;
- an fp32 matmul peak measured at 1 thread (at the start and the end; the best is kept),
  the reference for MFU per device: MFU = achieved FLOP/s / (devices x 1-thread peak);
- scaling efficiency = tokens/s(2) / (2 x tokens/s(1)).

With CUDA, the same shape on 1, 2, 4 and 8 GPUs (as many as exist), one rank per GPU
over NCCL, bf16 autocast, MFU against the vendor's dense bf16 peak (hpo.trainer.hardware).
The global batch is fixed (`batch_size` is split across devices, as in a study), so this
is strong scaling: more devices, the same optimization.

    python scripts/bench_devices.py                 # CPU: 1 vs 2 cores, ~2 minutes
    python scripts/bench_devices.py --steps 60 --repeats 3
    python scripts/bench_devices.py --gpu-batch 256 # on a GPU machine

Throughput on a shared machine only ever gets slower than the hardware allows, so each
configuration runs `--repeats` times, interleaved, and the best run is kept.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.record.outcome import TrialResult
from hpo.trainer import hardware
from hpo.trainer.launch import run_isolated

SHAPE = (4, 4, 128, 128, 32)  # n_layer, n_head, n_embd, block_size, global batch


@dataclass(frozen=True)
class Setup:
    label: str
    n_devices: int
    device: str
    device_ids: tuple[int, ...] | None
    threads: int | None
    batch_size: int


def config_for(setup: Setup, steps: int, warmup: int) -> RunSpec:
    n_layer, n_head, n_embd, block, _ = SHAPE
    return RunSpec(
        model=GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block),
        data=DataConfig(val_tokens=2048),
        optim=OptimConfig(lr=1e-3, warmup_frac=0.0),
        train=TrainSettings(
            batch_size=setup.batch_size,
            n_devices=setup.n_devices,
            device=setup.device,
            threads=setup.threads,
            evals=1,
            timing_warmup_steps=warmup,
            sample_tokens=0,
        ),
        budget=BudgetConfig(steps=steps + warmup),
    )


def matmul_peak_1_thread(seconds: float) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return hardware.measure_matmul_flops(seconds=seconds)
    finally:
        torch.set_num_threads(threads)


def measure(setups: Sequence[Setup], steps: int, warmup: int, repeats: int) -> dict[str, TrialResult]:
    """The best (fastest) of `repeats` runs of each setup, the setups interleaved."""
    best: dict[str, TrialResult] = {}
    for _ in range(repeats):
        for setup in setups:
            result = run_isolated(config_for(setup, steps, warmup), timeout=900, device_ids=setup.device_ids)
            if setup.label not in best or result.tokens_per_sec > best[setup.label].tokens_per_sec:
                best[setup.label] = result
    return best


def cpu(args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        print(f"only {len(cores)} core(s) available: nothing to scale across", file=sys.stderr)
        return
    batch = SHAPE[4]
    setups = [
        Setup("1 rank  x 1 thread, core [0]", 1, "cpu", (cores[0],), None, batch),
        Setup("2 ranks x 1 thread, cores [0,1]", 2, "cpu", (cores[0], cores[1]), None, batch),
        Setup("1 process x 2 threads (reference)", 1, "cpu", None, 2, batch),
    ]
    peak_start = matmul_peak_1_thread(args.peak_seconds)
    results = measure(setups, args.steps, args.warmup, args.repeats)
    peak_end = matmul_peak_1_thread(args.peak_seconds)
    peak = max(peak_start, peak_end)
    print(
        f"fp32 matmul peak at 1 thread: {peak / 1e9:.1f} GFLOP/s "
        f"(start of run {peak_start / 1e9:.1f}, end {peak_end / 1e9:.1f})"
    )
    print(f"{'configuration':<36}{'tokens/s':>11}{'GFLOP/s':>10}{'MFU/device':>12}{'val_acc':>9}")
    for setup in setups:
        r = results[setup.label]
        devices = setup.threads or setup.n_devices  # cores used: the MFU reference is per core
        mfu = r.achieved_flops / (devices * peak)
        gflops = r.achieved_flops / 1e9
        print(f"{setup.label:<36}{r.tokens_per_sec:>11,.0f}{gflops:>10.1f}{mfu:>12.1%}{r.val_accuracy:>9.4f}")
    one, two, threads = (results[s.label].tokens_per_sec for s in setups)
    print(f"scaling efficiency tokens/s(2 ranks) / (2 x tokens/s(1 rank)): {two / (2 * one):.2f}")
    print(f"2 ranks vs 1 process with 2 threads: {two / threads:.2f}x")


def gpu(args: argparse.Namespace) -> None:
    count = torch.cuda.device_count()
    counts = [n for n in (1, 2, 4, 8) if n <= count]
    setups = [
        Setup(f"{n} GPU{'s' if n > 1 else ' '} (NCCL, bf16)", n, "cuda", tuple(range(n)), None, args.gpu_batch)
        for n in counts
    ]
    results = measure(setups, args.steps, args.warmup, args.repeats)
    name = torch.cuda.get_device_name(0)
    print(f"\n{count} x {name}, global batch {args.gpu_batch}")
    print(f"{'configuration':<28}{'tokens/s':>13}{'TFLOP/s':>10}{'MFU':>8}{'efficiency':>12}")
    base = results[setups[0].label].tokens_per_sec
    for setup in setups:
        r = results[setup.label]
        mfu = f"{r.mfu:.1%}" if r.mfu is not None else "n/a"
        efficiency = r.tokens_per_sec / (setup.n_devices * base)
        print(f"{setup.label:<28}{r.tokens_per_sec:>13,.0f}{r.achieved_flops / 1e12:>10.2f}{mfu:>8}{efficiency:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration; the best counts")
    parser.add_argument("--peak-seconds", type=float, default=1.0, help="length of each matmul peak probe")
    parser.add_argument("--gpu-batch", type=int, default=256, help="global batch on GPUs (divisible by 8)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU measurements")
    args = parser.parse_args()
    started = time.perf_counter()
    n_layer, n_head, n_embd, block, batch = SHAPE
    print(f"shape: n_layer {n_layer}, n_head {n_head}, n_embd {n_embd}, block {block}, global batch {batch}")
    print(f"torch {torch.__version__}, {hardware.cpu_model()}, {len(os.sched_getaffinity(0))} usable cores")
    print(f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.repeats}\n")
    if not args.no_cpu:
        cpu(args)
    if torch.cuda.is_available():
        gpu(args)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
