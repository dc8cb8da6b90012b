"""Check, on the machine it runs on, the numbers a GPU study rests on.

Four parts, each printed as a table as it ends and all kept in one JSON file (rewritten
after every part, so a run cut short still leaves what it measured):

  correctness  the same small run in bf16 on the device and in fp32 on the CPU (same seed,
               so the same initial weights and batches): every evaluation's val_loss within
               LOSS_TOLERANCE.
  throughput   tokens/s and MFU of hpo's trainer for three GPT shapes (about 10M, 50M and
               125M parameters at block 1024 on a GPU), eager and with train.compile=true
               (compile time apart), against hpo's peak for the device and against a plain
               matmul measured in the same run; and, from the same eager runs, memory: the
               feasibility estimate against the measured peak.
  oom          a study trial far too large for the device ends FAIL with reason
               out_of_memory, and the same worker then completes the next trial.
  study        a real study (experiment=gpu_1 cut to 4 trials of 20M tokens, pruner=moasha)
               on SQLite, then `hpo show`.

`--device cpu` runs every part on tiny shapes (a couple of minutes on 2 cores), the CPU
standing in for a GPU: bf16 autocast against fp32, hpo's measured fp32 matmul peak, the
growth of the peak resident size, and an address-space limit for the device's memory.
Exit status 1 when a check fails; the goals (MFU_GOAL, MEMORY_GOAL) are reported, not enforced.

    PYTHONPATH=. python scripts/gpu_check.py --out $OUT/gpu_check.json
    python scripts/gpu_check.py --device cpu --parts correctness,oom

docs/gpu.md has the command for a GPU machine without a package index, and what each
figure means.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from hpo.browse.tables import format_table
from hpo.cli.parsing import Parser
from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.errors import HpoError
from hpo.record.attrs import MESSAGE, REASON
from hpo.record.outcome import Reason, TrialResult
from hpo.trainer import hardware
from hpo.trainer.data import Dataset, load_dataset
from hpo.trainer.feasibility import estimate_memory_bytes
from hpo.trainer.loop import train

REPO = Path(__file__).resolve().parents[1]
PARTS = ("correctness", "throughput", "oom", "study")

# Largest |val_loss(device, bf16) - val_loss(CPU, fp32)| at any evaluation of CHECK_RUN, in nats
# (0.6% of its loss); bf16 autocast on the CPU measured at most 0.0006 over six seeds.
LOSS_TOLERANCE = 0.02
# 40 steps from identical weights on identical batches: short enough that bf16 rounding has
# not yet sent the two runs down different paths, long enough to leave the initial loss.
CHECK_RUN = RunSpec(
    model=GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64),
    data=DataConfig(val_tokens=4096),
    optim=OptimConfig(lr=1e-3),
    train=TrainSettings(batch_size=16, evals=4, sample_tokens=0, seed=0),
    budget=BudgetConfig(steps=40),
)
# Goals on a GPU, reported and not enforced: the bf16 MFU of the largest shape (eager or
# compiled) on an H100 or H200, and the memory estimate / the measured peak (at most 10% below
# it, at most 20% above).
MFU_GOAL = 0.45
MEMORY_GOAL = (0.9, 1.2)
# The OOM trial's estimated need, in multiples of the device's memory. The estimate over-states
# on purpose (fp32 activations with attention scores kept), so only a wide margin makes the
# failure certain.
OOM_MARGIN = 64
# --device cpu: the address space the OOM study's processes get, standing in for a GPU's memory.
CPU_MEMORY_LIMIT = 8 * 2**30


@dataclass(frozen=True)
class Shape:
    """One GPT shape of the throughput part, with the batch it starts from (halved to fit)."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int


@dataclass(frozen=True)
class Plan:
    """What the parts run on one kind of device: GPU shapes, or tiny stand-ins on a CPU."""

    shapes: tuple[Shape, ...]
    warmup_steps: int
    matmul: tuple[int, torch.dtype]  # size and dtype of the reference matmul
    study: tuple[str, ...]  # overrides of the study part
    memory_limit: int | None  # address-space limit of the OOM study; None: the device's own memory


PLANS = {
    "cuda": Plan(
        shapes=(
            Shape("10M", 6, 6, 384, 1024, 128),
            Shape("50M", 10, 10, 640, 1024, 128),
            Shape("125M", 18, 12, 768, 1024, 128),
        ),
        warmup_steps=3,
        matmul=(8192, torch.bfloat16),
        study=("experiment=gpu_1", "budget.tokens=20000000"),
        memory_limit=None,
    ),
    "cpu": Plan(
        shapes=(
            Shape("tiny-s", 1, 2, 64, 64, 16),
            Shape("tiny-m", 2, 4, 128, 64, 16),
            Shape("tiny-l", 2, 4, 256, 64, 16),
        ),
        warmup_steps=2,
        matmul=(1024, torch.float32),
        study=("experiment=tiny",),
        memory_limit=CPU_MEMORY_LIMIT,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="gpu_check.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--out", type=Path, help="JSON file (default: $OUT/gpu_check.json, else ./gpu_check.json)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per throughput run")
    try:
        args = parser.parse_args(argv)
        parts = [p for p in args.parts.split(",") if p]
        if not parts or set(parts) - set(PARTS):
            raise HpoError(f"--parts={args.parts} must name some of {', '.join(PARTS)}")
        if args.steps < 1:
            raise HpoError(f"--steps={args.steps} must be at least 1")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise HpoError("--device cuda but no GPU is visible; use --device cpu or auto")
        out = args.out or Path(os.environ.get("OUT", ".")) / "gpu_check.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("{}\n")
    except (HpoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = hardware.resolve_device(args.device)
    report = run_parts(device, parts, args.steps, out)
    print(f"\n{summary(report)}\nwritten to {out}")
    return 0 if all(section.get("ok") for name, section in report.items() if name != "device") else 1


def run_parts(device: torch.device, parts: Sequence[str], steps: int, out: Path) -> dict[str, Any]:
    """Every asked part in order, the JSON rewritten after each. A part that raises is
    recorded as failed and the next one still runs: a device session is too short to lose
    the other figures to one error."""
    plan = PLANS[device.type]
    report: dict[str, Any] = {"device": describe_device(device)}
    dataset = load_dataset(DataConfig())
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        # Each part gives its sections of the report: throughput also gives memory.
        runs: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
            "correctness": lambda: {"correctness": check_correctness(device, dataset)},
            "throughput": lambda: check_throughput(device, dataset, plan, steps),
            "oom": lambda: {"oom": check_oom(device, dataset, plan, Path(workdir))},
            "study": lambda: {"study": check_study(plan, Path(workdir))},
        }
        for part in parts:
            print(f"\n== {part}", flush=True)
            try:
                report.update(runs[part]())
            except Exception as exc:
                traceback.print_exc()
                report[part] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return report


def describe_device(device: torch.device) -> dict[str, Any]:
    memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    return {
        "type": device.type,
        "name": hardware.device_name(device),
        "peak_flops": hardware.peak_flops(device),
        "memory_bytes": memory,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------------
# correctness


def check_correctness(device: torch.device, dataset: Dataset) -> dict[str, Any]:
    """CHECK_RUN in bf16 on the device against fp32 on the CPU; on a CPU, bf16 autocast there."""
    bf16 = train(
        replace(CHECK_RUN, train=replace(CHECK_RUN.train, device=device.type, dtype="bfloat16")), dataset=dataset
    )
    fp32 = train(replace(CHECK_RUN, train=replace(CHECK_RUN.train, device="cpu", dtype="float32")), dataset=dataset)
    points = [
        {"tokens": d.tokens, "device": d.val_loss, "reference": r.val_loss, "diff": abs(d.val_loss - r.val_loss)}
        for d, r in zip(bf16.curve, fp32.curve, strict=True)
    ]
    worst = max(p["diff"] for p in points)
    print(
        format_table(
            ["tokens", f"val_loss {device.type} bf16", "val_loss cpu fp32", "|diff|"],
            [list(p.values()) for p in points],
        )
    )
    print(f"largest difference {worst:.5f} nats; tolerance {LOSS_TOLERANCE}")
    return {
        "config": CHECK_RUN.to_dict(),
        "device_dtype": bf16.dtype,
        "reference": "cpu float32",
        "tolerance": LOSS_TOLERANCE,
        "points": points,
        "max_diff": worst,
        "ok": worst <= LOSS_TOLERANCE,
    }


# --------------------------------------------------------------------------------------------------
# throughput, MFU and memory


def shape_spec(shape: Shape, device: torch.device, warmup: int, steps: int, compile: bool) -> RunSpec:
    model = GPTConfig(n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd, block_size=shape.block_size)
    settings = TrainSettings(
        batch_size=shape.batch_size,
        device=device.type,
        evals=1,
        sample_tokens=0,
        compile=compile,
        timing_warmup_steps=warmup,
    )
    return RunSpec(model=model, train=settings, budget=BudgetConfig(steps=warmup + steps))


def proc_status(field: str) -> int:
    """A size from /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def train_measured(config: RunSpec, dataset: Dataset) -> tuple[TrialResult, int | None]:
    """A run and its peak memory: CUDA's max_memory_allocated (which `train` resets first),
    or on a CPU how far the process's peak resident size rose over the run: freed memory is
    first handed back to the system (glibc's malloc_trim), else the run would reuse it
    unseen, and Linux sets the peak back to the current size when 5 is written to
    /proc/self/clear_refs. None where either is unavailable."""
    if config.train.device == "cuda":
        result = train(config, dataset=dataset)
        return result, result.peak_memory_bytes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = proc_status("VmRSS")
    except (OSError, AttributeError):
        return train(config, dataset=dataset), None
    result = train(config, dataset=dataset)
    return result, proc_status("VmHWM") - before


def fitting_run(config: RunSpec, dataset: Dataset) -> tuple[RunSpec, TrialResult, int | None]:
    """`train_measured` at the largest batch, from the configured one down by halves, that
    fits the device: the batch that fills it."""
    while True:
        try:
            return (config, *train_measured(config, dataset))
        except torch.OutOfMemoryError:
            if config.train.batch_size == 1:
                raise
        torch.cuda.empty_cache()
        config = replace(config, train=replace(config.train, batch_size=config.train.batch_size // 2))


def warmup_seconds(result: TrialResult) -> float:
    return result.train_time_s - result.timed_time_s


def check_throughput(device: torch.device, dataset: Dataset, plan: Plan, steps: int) -> dict[str, dict[str, Any]]:
    """Every shape eager, then compiled at the batch that fitted; the memory section from the eager runs.

    The reference matmul is probed before the runs and after them, and the faster probe
    counts: noise only slows a probe, and a busy machine would otherwise flatter the MFU.
    """
    size, dtype = plan.matmul
    before = hardware.measure_matmul_flops(size, seconds=1.0, device=device, dtype=dtype)
    runs: list[tuple[Shape, RunSpec, TrialResult | Exception, float | None]] = []
    memory = []
    for shape in plan.shapes:
        config, eager, measured = fitting_run(shape_spec(shape, device, plan.warmup_steps, steps, False), dataset)
        runs.append((shape, config, eager, None))
        memory.append(memory_row(shape, config, measured))
        compiled_config = replace(config, train=replace(config.train, compile=True))
        try:
            compiled = train(compiled_config, dataset=dataset)
        except Exception as exc:  # a compiler missing on this machine fails its row, not the part
            runs.append((shape, compiled_config, exc, None))
            continue
        runs.append((shape, compiled_config, compiled, warmup_seconds(compiled) - warmup_seconds(eager)))
    matmul = max(before, hardware.measure_matmul_flops(size, seconds=1.0, device=device, dtype=dtype))
    hpo_peak = hardware.peak_flops(device)
    # MFU against the vendor's peak on a GPU; on a CPU against hpo's own probe of it, taken now:
    # the figure the trainer uses was measured once and cached, perhaps on a busier machine.
    peak = hpo_peak if device.type == "cuda" else matmul
    rows = [throughput_row(*run, peak=peak, matmul=matmul) for run in runs]
    print_throughput(rows, plan, matmul, hpo_peak)
    print_memory(memory, device)
    gpu = device.type == "cuda"
    largest = [r["mfu"] for r in rows if r["shape"] == plan.shapes[-1].name and r.get("mfu") is not None]
    low, high = MEMORY_GOAL
    ratios = [m["ratio"] for m in memory if m["ratio"] is not None]
    throughput = {
        "matmul": {"size": size, "dtype": str(dtype).removeprefix("torch."), "flops": matmul},
        "hpo_peak_flops": hpo_peak,
        "mfu_peak_flops": peak,
        "matmul_to_hpo_peak": matmul / hpo_peak if hpo_peak else None,
        "runs": rows,
        "mfu_goal": {
            "min": MFU_GOAL,
            "shape": plan.shapes[-1].name,
            "met": max(largest) >= MFU_GOAL if gpu and largest else None,
        },
        "ok": all(r.get("mfu") is not None and 0 < r["mfu"] <= 1 for r in rows),
    }
    return {
        "throughput": throughput,
        "memory": {
            "measure": "torch.cuda.max_memory_allocated" if gpu else "growth of the peak resident size (VmHWM)",
            "runs": memory,
            "goal": {"ratio": [low, high], "met": all(low <= r <= high for r in ratios) if gpu and ratios else None},
            "ok": all(m["estimate_bytes"] > 0 for m in memory) and (not gpu or len(ratios) == len(memory)),
        },
    }


def throughput_row(
    shape: Shape,
    config: RunSpec,
    outcome: TrialResult | Exception,
    compile_s: float | None,
    *,
    peak: float | None,
    matmul: float,
) -> dict[str, Any]:
    """One run's figures: MFU against `peak`, and hpo's own (the trainer's, against hpo's
    peak); `compile_s` is a compiled run's warm-up steps' time beyond the eager run's."""
    row = {"shape": shape.name, "batch_size": config.train.batch_size, "compile": config.train.compile}
    if isinstance(outcome, Exception):
        return {**row, "error": f"{type(outcome).__name__}: {outcome}"}
    return {
        **row,
        "n_layer": shape.n_layer,
        "n_embd": shape.n_embd,
        "block_size": shape.block_size,
        "params": outcome.params,
        "dtype": outcome.dtype,
        "tokens_per_sec": outcome.tokens_per_sec,
        "achieved_flops": outcome.achieved_flops,
        "mfu": outcome.achieved_flops / peak if peak else None,
        "hpo_mfu": outcome.mfu,
        "mfu_vs_matmul": outcome.achieved_flops / matmul,
        "compile_s": compile_s,
    }


def memory_row(shape: Shape, config: RunSpec, measured: int | None) -> dict[str, Any]:
    estimate = estimate_memory_bytes(config)
    return {
        "shape": shape.name,
        "batch_size": config.train.batch_size,
        "estimate_bytes": estimate,
        "measured_bytes": measured,
        "ratio": estimate / measured if measured else None,
    }


def print_throughput(rows: list[dict[str, Any]], plan: Plan, matmul: float, hpo_peak: float | None) -> None:
    size, dtype = plan.matmul
    headers = ["shape", "params", "batch", "compile", "tokens/s", "TFLOP/s", "MFU %", "of matmul %", "compile s"]
    table = [
        [
            r["shape"],
            r.get("params"),
            r["batch_size"],
            str(r["compile"]),
            r.get("tokens_per_sec"),
            r["achieved_flops"] / 1e12 if "achieved_flops" in r else None,
            100 * r["mfu"] if r.get("mfu") else None,
            100 * r["mfu_vs_matmul"] if "mfu_vs_matmul" in r else None,
            r.get("compile_s"),
        ]
        for r in rows
    ]
    print(format_table(headers, table))
    name = str(dtype).removeprefix("torch.")
    share = f" = {matmul / hpo_peak:.1%} of hpo's peak, {hpo_peak / 1e12:.4g}" if hpo_peak else ", hpo has no peak"
    print(f"plain {name} matmul {size}x{size}: {matmul / 1e12:.4g} TFLOP/s{share}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']} compiled: {r['error']}")


def print_memory(rows: list[dict[str, Any]], device: torch.device) -> None:
    table = [
        [
            m["shape"],
            m["batch_size"],
            m["estimate_bytes"] / 2**20,
            (m["measured_bytes"] or 0) / 2**20 or None,
            m["ratio"],
        ]
        for m in rows
    ]
    measured = "max allocated MiB" if device.type == "cuda" else "RSS growth MiB"
    print(format_table(["shape", "batch", "estimate MiB", measured, "estimate/measured"], table))


# --------------------------------------------------------------------------------------------------
# out of memory, and a real study: `hpo` commands in processes of their own


@contextlib.contextmanager
def address_space_limit(limit: int | None) -> Iterator[None]:
    """Processes started inside inherit an address-space limit (RLIMIT_AS): on a CPU, a
    fixed memory like a GPU's, so that an allocation beyond it fails at once, as on a GPU,
    instead of swapping or waking the kernel's OOM killer. This process keeps its own."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def hpo(args: Sequence[str], workdir: Path, memory_limit: int | None = None) -> str:
    """`python -m hpo ARGS` from this checkout, run in `workdir`; its stdout. RuntimeError
    if it fails, with its last lines of error output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with address_space_limit(memory_limit):
        process = subprocess.Popen(
            [sys.executable, "-m", "hpo", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    stdout, stderr = process.communicate()
    if process.returncode:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"hpo {args[0]} exited with status {process.returncode}:\n{tail}")
    return stdout


def study_trials(name: str, storage: str, workdir: Path) -> list[dict[str, Any]]:
    """The study's trials as `hpo export --format json` gives them."""
    records: list[dict[str, Any]] = json.loads(hpo(["export", name, "--storage", storage, "--format", "json"], workdir))
    return records


def check_oom(device: torch.device, dataset: Dataset, plan: Plan, workdir: Path) -> dict[str, Any]:
    """A study of two trials through `hpo run`: first a batch whose estimate is OOM_MARGIN times
    the device's memory, then the smallest shape's own batch, run by the same worker."""
    shape = plan.shapes[0]
    memory = plan.memory_limit or torch.cuda.get_device_properties(device).total_memory
    config = shape_spec(shape, device, 0, 1, False)
    config = replace(config, model=replace(config.model, vocab_size=dataset.tokenizer.vocab_size))
    huge = shape.batch_size
    while estimate_memory_bytes(replace(config, train=replace(config.train, batch_size=huge))) < OOM_MARGIN * memory:
        huge *= 2
    name, storage = "gpu-check-oom", f"sqlite:///{workdir}/oom.db"
    overrides = [
        f"train.device={device.type}",
        "train.micro_batch_size=null",
        "train.evals=1",
        "train.sample_tokens=0",
        "resources.memory_limit_gb=null",  # the feasibility check would reject the trial before it ran
        f"budget.tokens={4 * shape.batch_size * shape.block_size}",
        f"study.name={name}",
        "study.n_trials=2",
        f"study.baselines=[{{batch_size: {huge}}}, {{batch_size: {shape.batch_size}}}]",
        "search_space=default",
        f"search_space.n_layer={shape.n_layer}",
        f"search_space.n_head={shape.n_head}",
        f"search_space.head_dim={shape.n_embd // shape.n_head}",
        f"search_space.block_size={shape.block_size}",
        "search_space.n_devices=1",
        "search_space.lr=1e-3",
        f"search_space.batch_size={{choices: [{shape.batch_size}, {huge}]}}",
    ]
    hpo(["run", *overrides, "--storage", storage, "--quiet"], workdir, plan.memory_limit)
    trials = [
        {
            "number": t["number"],
            "state": t["state"],
            "batch_size": t["params"].get("batch_size"),
            "reason": t["user_attrs"].get(REASON),
            "message": t["user_attrs"].get(MESSAGE),
        }
        for t in study_trials(name, storage, workdir)
    ]
    print(
        format_table(
            ["trial", "batch", "state", "reason", "message"],
            [[t["number"], t["batch_size"], t["state"], t["reason"] or "", (t["message"] or "")[:70]] for t in trials],
        )
    )
    mode = (
        "the GPU's own memory"
        if plan.memory_limit is None
        else f"cpu: a real allocation failure under an address-space limit (RLIMIT_AS) of {memory / 2**30:g} GiB"
    )
    expected = [("FAIL", Reason.OUT_OF_MEMORY.value, huge), ("COMPLETE", None, shape.batch_size)]
    return {
        "mode": mode,
        "memory_bytes": memory,
        "oom_batch_size": huge,
        "oom_estimate_bytes": estimate_memory_bytes(replace(config, train=replace(config.train, batch_size=huge))),
        "overrides": overrides,
        "trials": trials,
        "ok": [(t["state"], t["reason"], t["batch_size"]) for t in trials] == expected,
    }


def check_study(plan: Plan, workdir: Path) -> dict[str, Any]:
    """`hpo run` of a real study of 4 trials with MO-ASHA on SQLite, then `hpo show`."""
    name, storage = "gpu-check-study", f"sqlite:///{workdir}/study.db"
    overrides = [*plan.study, f"study.name={name}", "study.n_trials=4", "pruner=moasha"]
    hpo(["run", *overrides, "--storage", storage, "--quiet"], workdir)
    shown = hpo(["show", name, "--storage", storage], workdir)
    print(shown)
    states = Counter(t["state"] for t in study_trials(name, storage, workdir))
    return {
        "overrides": overrides,
        "states": dict(states),
        "show": shown,
        "ok": sum(states.values()) == 4
        and states["COMPLETE"] >= 1
        and not states.keys() - {"COMPLETE", "PRUNED", "FAIL"},
    }


def summary(report: dict[str, Any]) -> str:
    """One line per section and goal: what passed, and the error of a part that raised."""
    lines = [
        f"{name:<12} {'ok' if section.get('ok') else 'FAILED'}  {section.get('error', '')}".rstrip()
        for name, section in report.items()
        if name != "device"
    ]
    if "mfu_goal" in report.get("throughput", {}):
        goal = report["throughput"]["mfu_goal"]
        lines.append(f"goal: MFU >= {goal['min']:.0%} for {goal['shape']}: {goal_text(goal['met'])}")
    if "memory" in report:
        low, high = report["memory"]["goal"]["ratio"]
        lines.append(
            f"goal: memory estimate / measured in [{low}, {high}]: {goal_text(report['memory']['goal']['met'])}"
        )
    return "\n".join(lines)


def goal_text(met: bool | None) -> str:
    return "n/a on cpu" if met is None else "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
