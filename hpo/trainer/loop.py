"""Train one GPT configuration and measure how well it learned and how fast it trained.

`train(config, on_eval) -> TrialResult` is a plain function with no Optuna in it: the
study layer maps trial parameters to a `RunSpec` and the result to objective values
(plain values in hpo.config.training and hpo.record.outcome, which load without torch).

Throughput is measured the way a careful benchmark would: only training steps count,
the first `timing_warmup_steps` (allocator warm-up, lazy init, autotuning) and every
evaluation are excluded, and on CUDA the clock is read only after a synchronize. The rate
is that of the lower-quartile timed step: every step does the same work, and what slows a
step from outside the run (another process, the host) never speeds one up, so the fast
end of the step times is where the configuration's own cost shows; the mean, and even
the median, move with however much of a short run the host disturbed (docs/early-stopping.md,
Throughput). A run resumed from a saved state (hpo.trainer.checkpoint) times its steps after a
warm-up of its own, and its throughput counts the timed steps of both parts.
"""

from __future__ import annotations

import contextlib
import copy
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from hpo.config.training import OptimConfig, RunSpec, TrainSettings
from hpo.errors import DivergedError, HpoError
from hpo.record.outcome import EvalEvent, OnEval, TrialResult
from hpo.trainer import hardware
from hpo.trainer.checkpoint import TrainState, load_state, save_checkpoint, save_state
from hpo.trainer.data import Dataset, load_dataset
from hpo.trainer.model import GPT


def train(config: RunSpec, on_eval: OnEval | None = None, dataset: Dataset | None = None) -> TrialResult:
    """Train `config` to its budget and return the measured result.

    `on_eval` is called after every evaluation; raising from it stops the run (that is
    how a pruner stops a trial). `dataset` skips loading when the caller already has it.
    Raises HpoError for an unusable configuration before any training step, and
    DivergedError as soon as the loss is NaN or infinite.
    """
    wall_start = time.perf_counter()
    run = config.train
    rank, world = _rank_and_world()
    if run.n_devices != world:
        raise HpoError(
            f"train.n_devices={run.n_devices} needs that many processes; "
            "run it through hpo.trainer.launch.run_isolated (as `hpo train` and studies do)"
        )
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    device = hardware.resolve_device(run.device)
    dtype = _training_dtype(run.dtype, device)
    dataset = dataset or load_dataset(config.data)
    model_config = replace(config.model, vocab_size=config.model.vocab_size or dataset.tokenizer.vocab_size)
    val_x, val_y = dataset.validation_set(model_config.block_size, config.data.val_tokens)
    if run.batch_size % world:
        raise HpoError(f"train.batch_size={run.batch_size} does not split evenly across n_devices={world}")
    per_rank = run.batch_size // world
    micro = min(run.micro_batch_size or per_rank, per_rank)
    if per_rank % micro:
        raise HpoError(
            f"train.micro_batch_size={micro} does not divide the per-device batch {per_rank}; "
            "choose a divisor of batch_size / n_devices"
        )
    accum = per_rank // micro
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    tokens_per_step = run.batch_size * model_config.block_size  # global: all ranks together
    total_steps = config.budget.total_steps(tokens_per_step)

    torch.manual_seed(run.seed)  # same initial weights on every rank (DDP also broadcasts them)
    generator = torch.Generator().manual_seed(run.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    model = GPT(model_config).to(device)
    optimizer = build_optimizer(model, config.optim, device)
    resumed = load_state(run.resume_from, config) if run.resume_from else None
    if resumed is not None:
        resumed.restore(model, optimizer, generator, device)  # before DDP wraps the model
    stepper = _Stepper(model, optimizer, micro, accum, world, dtype, run.compile, device)
    resumed_steps = int(resumed.clock["steps"]) if resumed else 0
    warmup_steps = run.timing_warmup_steps
    if warmup_steps is None:
        warmup_steps = 1 if device.type == "cpu" else 3
    if total_steps is not None:
        warmup_steps = min(warmup_steps, (total_steps - resumed_steps) // 2)
    clock = _Clock(resumed_steps + warmup_steps, total_steps, config.budget.seconds, world, device)

    loss_sum, loss_count = 0.0, 0
    next_eval, curve, wall_before = 1, [], 0.0
    train_loss = val_loss = val_accuracy = float("nan")
    if resumed is not None:
        clock.restore(resumed.clock)
        curve = [EvalEvent(**event) for event in resumed.curve]
        train_loss, val_loss, val_accuracy = curve[-1].train_loss, curve[-1].val_loss, curve[-1].val_accuracy
        next_eval = math.floor(clock.progress() * run.evals) + 1  # as the stopped run computed it
        wall_before = resumed.wall_time_s
    extra_evals = sorted(t for t in run.eval_tokens if t > clock.tokens)
    model.train()
    while clock.progress() < 1.0:
        # The rate at the end of this step's share of the budget: warm-up never starts at 0.
        stepper.set_lr(config.optim.lr_at(clock.progress(steps_ahead=1)))
        start = time.perf_counter()
        x, y = dataset.train_batch(run.batch_size, model_config.block_size, generator, rows)
        step_loss = stepper.step(x, y, config.optim.grad_clip)
        if world > 1:
            # One small all-reduce a step: every rank sees the same loss (so all stop together
            # on a divergence) and the same elapsed time (so seconds budgets end together).
            shared = torch.stack([step_loss, torch.tensor(time.perf_counter() - start, device=device)])
            torch.distributed.all_reduce(shared)
            loss_value, mean_elapsed = (shared / world).tolist()
        else:
            loss_value = step_loss.item()  # also synchronizes CUDA before the clock
        elapsed = time.perf_counter() - start
        clock.add_step(tokens_per_step, elapsed, mean_elapsed if world > 1 else elapsed)
        if not math.isfinite(loss_value):
            raise DivergedError(clock.steps, loss_value)
        loss_sum, loss_count = loss_sum + loss_value, loss_count + 1

        rungs = [t for t in extra_evals if clock.tokens >= t]  # reached at this step
        extra_evals = extra_evals[len(rungs) :]
        if rungs or clock.progress() >= next_eval / run.evals or clock.progress() >= 1.0:
            # This step's update may have made the weights NaN after its loss was taken (the
            # last step's, never seen otherwise); every rank holds the same weights.
            if not torch.stack([p.isfinite().all() for p in model.parameters()]).all():
                raise DivergedError(clock.steps, float("nan"))
            tokens_per_sec = clock.throughput()
            eval_start = time.perf_counter()
            if rank == 0:  # the fixed validation set is scored once, on rank 0
                val_loss, val_accuracy = evaluate(model, val_x, val_y, micro, device, stepper.autocast)
            train_loss = loss_sum / loss_count
            loss_sum, loss_count = 0.0, 0
            event = EvalEvent(clock.steps, clock.tokens, train_loss, val_loss, val_accuracy, tokens_per_sec)
            curve.append(event)
            next_eval = math.floor(clock.progress() * run.evals) + 1
            if run.save_state and rank == 0:  # before on_eval: whoever stops the run finds it saved
                now = time.perf_counter()
                counters = {**clock.counters(), "eval_time": clock.eval_time + now - eval_start}
                wall = wall_before + now - wall_start
                state = TrainState.capture(config, model, optimizer, generator, device, counters, curve, wall)
                save_state(run.save_state, state, rungs)
            if world > 1:
                torch.distributed.barrier()  # the other ranks wait here, outside their step clocks
            clock.eval_time += time.perf_counter() - eval_start
            if on_eval is not None and rank == 0:
                on_eval(event)
            model.train()

    tokens_per_sec = clock.throughput()
    peak_memory = _peak_memory(device)
    if world > 1:
        peak_memory = int(_all_reduce_max(float(peak_memory), device))
    sample = _sample(model, dataset, run, device) if run.sample_tokens and rank == 0 else ""
    if run.checkpoint and rank == 0:
        save_checkpoint(run.checkpoint, model, config, dataset.tokenizer)
    flops_per_token = model_config.flops_per_token()
    achieved = flops_per_token * tokens_per_sec
    # The run's peak is every device's: achieved FLOP/s counts all ranks' tokens.
    device_peak = hardware.peak_flops(device) if dtype == torch.bfloat16 or device.type == "cpu" else None
    peak = device_peak * world if device_peak else None
    wall = wall_before + time.perf_counter() - wall_start
    return TrialResult(
        val_accuracy=val_accuracy,
        val_loss=val_loss,
        train_loss=train_loss,
        tokens_per_sec=tokens_per_sec,
        params=model_config.num_params(),
        flops_per_token=flops_per_token,
        achieved_flops=achieved,
        peak_flops=peak,
        mfu=achieved / peak if peak else None,
        peak_memory_bytes=peak_memory,
        steps=clock.steps,
        tokens=clock.tokens,
        wall_time_s=wall,
        train_time_s=clock.step_time,
        timed_time_s=sum(clock.step_times),
        eval_time_s=clock.eval_time,
        overhead_s=wall - clock.step_time,
        device=device.type,
        device_name=hardware.device_name(device),
        n_devices=run.n_devices,
        dtype=str(dtype).removeprefix("torch."),
        torch_version=torch.__version__,
        data_fingerprint=dataset.fingerprint,
        curve=tuple(curve),
        sample=sample,
        resumed_at_tokens=int(resumed.clock["tokens"]) if resumed else 0,
    )


_COUNTERS = ("steps", "tokens", "step_time", "timed_tokens", "eval_time", "budget_time", "step_times")


def step_rate(tokens_per_step: float, step_times: Sequence[float]) -> float:
    """Tokens per second at the lower-quartile step time (the module docstring says why)."""
    return tokens_per_step / sorted(step_times)[len(step_times) // 4]


@dataclass
class _Clock:
    """Where a run stands and where its time went: every step, the timed steps (those after
    the warm-up steps, which throughput is measured on) and evaluation.

    `budget_time` advances by the ranks' mean step time, the same on every rank, so that a
    seconds budget ends on the same step everywhere.
    """

    timed_from: int  # steps up to this one are warm-up, not timed
    total_steps: int | None  # None: a seconds budget
    seconds: float | None
    world: int
    device: torch.device
    steps: int = 0
    tokens: int = 0
    step_time: float = 0.0
    timed_tokens: int = 0
    eval_time: float = 0.0
    budget_time: float = 0.0
    step_times: list[float] = field(default_factory=list)  # each timed step's seconds

    def add_step(self, tokens: int, elapsed: float, mean_elapsed: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.step_time += elapsed
        self.budget_time += mean_elapsed
        if self.steps > self.timed_from:
            self.timed_tokens += tokens
            self.step_times.append(elapsed)

    def counters(self) -> dict[str, Any]:
        """Where the run stands, for a saved state."""
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if f.name in _COUNTERS}

    def restore(self, counters: dict[str, Any]) -> None:
        for name in _COUNTERS:
            setattr(self, name, type(getattr(self, name))(counters[name]))

    def progress(self, steps_ahead: int = 0) -> float:
        """The share of the budget spent (after `steps_ahead` more steps, for a steps budget)."""
        if self.total_steps is not None:
            return (self.steps + steps_ahead) / self.total_steps
        assert self.seconds is not None
        return self.budget_time / self.seconds

    def throughput(self) -> float:
        """Global tokens per second at the lower-quartile timed step, the slowest rank's (a
        collective when world > 1); over all steps while none is timed yet."""
        if not self.step_times:
            return self.tokens / max(self.step_time, 1e-9)
        rate = step_rate(self.timed_tokens / len(self.step_times), self.step_times)
        return -_all_reduce_max(-rate, self.device) if self.world > 1 else rate  # the slowest rank's


class _Stepper:
    """Optimizer steps over micro-batches: accumulation, DDP's gradient sync, autocast, clipping."""

    def __init__(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        micro: int,
        accum: int,
        world: int,
        dtype: torch.dtype,
        compile: bool,
        device: torch.device,
    ) -> None:
        self.model, self.optimizer, self.micro, self.accum, self.device = model, optimizer, micro, accum, device
        self.ddp: nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.forward: nn.Module = torch.compile(self.ddp) if compile else self.ddp  # type: ignore[assignment]
        self.autocast: contextlib.AbstractContextManager[Any] = (
            torch.autocast(device.type, dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
        )

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor, grad_clip: float) -> torch.Tensor:
        """One optimizer step on this rank's rows; the mean loss, left on the device."""
        step_loss = torch.zeros((), device=self.device)
        for i in range(self.accum):
            xb = x[i * self.micro : (i + 1) * self.micro].to(self.device, non_blocking=True)
            yb = y[i * self.micro : (i + 1) * self.micro].to(self.device, non_blocking=True)
            # Gradients are all-reduced once per step, on the last micro-batch.
            sync = self.ddp is self.model or i == self.accum - 1
            with self.autocast, contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[operator]
                _, loss = self.forward(xb, yb)
                assert loss is not None
                (loss / self.accum).backward()
            step_loss += loss.detach()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return step_loss / self.accum


def build_optimizer(model: nn.Module, config: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """The configured optimizer; weight decay only on matrices (not gains, biases)."""
    # torch's Adam rejects a NaN lr at construction; a NaN lr must instead diverge as a
    # run (DivergedError), and `train` sets every step's lr from the schedule anyway.
    lr = 0.0 if math.isnan(config.lr) else config.lr
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum)
    cls = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    # Fused kernels exist for CPU and CUDA in the torch versions hpo supports: one kernel
    # per step instead of a loop over parameters.
    fused = device.type in ("cpu", "cuda")
    return cls(groups, lr=lr, betas=(config.beta1, config.beta2), fused=fused)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager[Any],
) -> tuple[float, float]:
    """Mean cross-entropy and next-token accuracy over the fixed validation windows."""
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        with autocast:
            logits, _ = model(xb)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), yb.reshape(-1), reduction="sum")
        correct += (logits.argmax(-1) == yb).sum()
    n = y.numel()
    return loss_sum.item() / n, correct.item() / n


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size; (0, 1) outside a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _all_reduce_max(value: float, device: torch.device) -> float:
    buffer = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.MAX)
    return float(buffer.item())


def _training_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast on GPUs that have it; fp32 on CPUs, where bf16 matmul is far slower."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux: the peak resident size of this (trial) process.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _sample(model: GPT, dataset: Dataset, run: TrainSettings, device: torch.device) -> str:
    """A short generation from the trained model, seeded, prompted by a validation token."""
    model.eval()
    prompt = torch.tensor([[int(dataset.val[0])]], device=device)
    generator = torch.Generator(device=device).manual_seed(run.seed)
    out = model.generate(prompt, run.sample_tokens, generator=generator)
    return dataset.tokenizer.decode(out[0].tolist())
