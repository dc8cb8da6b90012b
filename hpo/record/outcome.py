"""How a run ends: its learning-curve points and final result, or the reason it has none.

Plain frozen values, free of torch and Optuna, like the configs they answer: the trainer
makes them, the study layer stores them as trial attributes and the browsing commands
read them back, without importing the trainer. `METRICS` is the one description of the
result's measurements (labels, units, formats) that `hpo train`, the dashboard notes and
the report all use; `Reason` is every reason a trial can end without completing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Reason(str, Enum):
    """Why a trial did not complete: its `failure_reason` attribute (hpo.record.attrs).

    A `str` enum, so it compares equal to the plain strings that stored trials hold.
    """

    # The trainer's (hpo.trainer.launch): the run produced no result.
    DIVERGED = "diverged"  # the loss became NaN or infinite
    INVALID = "invalid"  # a configuration the trainer rejected
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"  # past study.trial_timeout
    CRASHED = "crashed"  # an exception or a signal in a rank
    DISK_FULL = "disk_full"  # no space left where the run saves its state or model
    # The study's (hpo.study): the trial was stopped, or never trained.
    INFEASIBLE = "infeasible"  # cannot run on these resources: told PRUNED with a violated constraint
    PRUNED = "pruned"  # a rung (or Optuna's pruner) stopped it
    PAUSED = "paused"  # a rung paused it, for a later promotion (pruner.pause)
    INTERRUPTED = "interrupted"  # Ctrl-C: queued again, like a dead worker's trial
    SURPLUS = "surplus"  # a claim that a worker behind the gRPC proxy gave back: it never ran
    WORKER_LOST = "worker_lost"  # its worker fell silent (killed, frozen, cut off): failed as stale, retried

    def __str__(self) -> str:
        return self.value


# Reasons of trials that free their slot of the study's target for another trial.
LOST_REASONS: frozenset[Reason] = frozenset({Reason.INTERRUPTED, Reason.SURPLUS})


@dataclass(frozen=True)
class EvalEvent:
    """One point of the learning curve; what `on_eval` receives and pruning decides on."""

    step: int
    tokens: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    tokens_per_sec: float


@dataclass(frozen=True)
class TrialResult:
    """The measured outcome of one run, with what is needed to trust the numbers."""

    val_accuracy: float
    val_loss: float
    train_loss: float
    tokens_per_sec: float
    params: int
    flops_per_token: int
    achieved_flops: float
    peak_flops: float | None
    mfu: float | None
    peak_memory_bytes: int
    steps: int
    tokens: int
    wall_time_s: float
    train_time_s: float
    timed_time_s: float
    eval_time_s: float
    overhead_s: float
    device: str
    device_name: str
    n_devices: int
    dtype: str
    torch_version: str
    data_fingerprint: str
    curve: tuple[EvalEvent, ...]
    sample: str
    resumed_at_tokens: int = 0  # where a resumed run took over (hpo.trainer.checkpoint); its throughput spans both

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


OnEval = Callable[[EvalEvent], None]


@dataclass(frozen=True)
class Metric:
    """One measurement of a TrialResult, as people read it.

    `name` is the result's field and the trial's user attribute; a value is shown times
    `scale`, in `unit`, formatted by `spec`. A table with numeric columns shows it under
    `heading` (the unit in the heading); a note shows `label` and `text(value)`. A metric
    that is `hidden_at_zero` is left out where it is 0 (most runs did not resume).
    """

    name: str
    label: str
    unit: str = ""
    scale: float = 1.0
    spec: str = ",.4g"
    hidden_at_zero: bool = False

    @property
    def heading(self) -> str:
        return f"{self.label} {self.unit}" if self.unit else self.label

    def shown(self, value: float) -> float:
        """The value in the metric's unit (a number, for tables that format their own);
        a count stays an integer."""
        return value if self.scale == 1 else value * self.scale

    def text(self, value: float) -> str:
        """The value in the metric's unit, formatted, with the unit."""
        number = f"{self.shown(value):{self.spec}}"
        return f"{number} {self.unit}" if self.unit else number


# The scalar measurements of a TrialResult, in the order every view lists them. The
# objectives keep their names as labels: they are the study's metric names too.
METRICS: tuple[Metric, ...] = (
    Metric("val_accuracy", "val_accuracy", spec=".4f"),
    Metric("val_loss", "val_loss", spec=".4f"),
    Metric("train_loss", "train_loss", spec=".4f"),
    Metric("tokens_per_sec", "tokens/s", spec=",.0f"),
    Metric("params", "parameters", spec=",d"),
    Metric("flops_per_token", "FLOPs per token", spec=",d"),
    Metric("achieved_flops", "achieved", "GFLOP/s", 1e-9),
    Metric("peak_flops", "device peak", "GFLOP/s", 1e-9),
    Metric("mfu", "MFU", "%", 100.0, ".2f"),
    Metric("peak_memory_bytes", "peak memory", "MiB", 2**-20, ",.1f"),
    Metric("steps", "steps", spec=",d"),
    Metric("tokens", "tokens", spec=",d"),
    Metric("resumed_at_tokens", "resumed at tokens", spec=",d", hidden_at_zero=True),
    Metric("wall_time_s", "wall time", "s", spec=",.2f"),
    Metric("train_time_s", "training steps", "s", spec=",.2f"),
    Metric("timed_time_s", "timed steps (for tokens/s)", "s", spec=",.2f"),
    Metric("eval_time_s", "evaluation", "s", spec=",.2f"),
    Metric("overhead_s", "overhead (outside training steps)", "s", spec=",.2f"),
)
METRIC_BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


def shown_metrics(values: Mapping[str, Any]) -> list[tuple[Metric, Any]]:
    """The metrics that `values` (a TrialResult's fields, or a trial's attributes) holds,
    in METRICS order, with their values: those absent or None, and zeros hidden at zero,
    left out."""
    out = []
    for metric in METRICS:
        value = values.get(metric.name)
        if value is not None and not (metric.hidden_at_zero and not value):
            out.append((metric, value))
    return out
