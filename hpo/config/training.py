"""What one training run is given: the model, data, optimizer, train and budget groups.

`RunSpec` holds one of each, keyed as the YAML groups are (`train` is the `train:` group,
`TrainSettings`). Plain frozen values, free of torch: the trainer (hpo.trainer) turns a
`RunSpec` into a `TrialResult`, and everything else only builds, checks and stores them,
so it loads without torch, which alone takes about a second to import. Each dataclass
validates its own fields in `__post_init__`; its defaults are the ones that the YAML
groups of `study_configs/` state (tests/config/test_defaults.py checks that they agree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from hpo.errors import HpoError

PosEncoding = Literal["learned", "sinusoidal", "rope", "none"]
POS_ENCODINGS: tuple[str, ...] = get_args(PosEncoding)


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT. `vocab_size` 0 means "take it from the data's tokenizer"."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    vocab_size: int = 0
    pos_encoding: PosEncoding = "learned"
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            value = getattr(self, name)
            if value < 1:
                raise HpoError(f"model.{name}={value} must be a positive integer")
        if self.vocab_size < 0:
            raise HpoError(f"model.vocab_size={self.vocab_size} must be >= 0 (0: from the data)")
        if self.n_embd % self.n_head:
            raise HpoError(
                f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}; "
                f"choose a width that is a multiple of the head count "
                f"(for example n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))})"
            )
        if self.pos_encoding not in POS_ENCODINGS:
            raise HpoError(
                f"model.pos_encoding={self.pos_encoding!r} is unknown; use one of {', '.join(POS_ENCODINGS)}"
            )
        if self.pos_encoding == "rope" and self.head_dim % 2:
            raise HpoError(
                f"model.pos_encoding=rope needs an even head size, got n_embd/n_head="
                f"{self.head_dim}; change model.n_embd or model.n_head"
            )
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2:
            raise HpoError(f"model.pos_encoding=sinusoidal needs an even n_embd, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise HpoError(f"model.dropout={self.dropout} must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self) -> int:
        """Exact number of trainable parameters, without building the model.

        The output head shares the token embedding's weight, so it adds nothing.
        """
        d, bias = self.n_embd, self.bias
        layer_norm = d * (2 if bias else 1)
        attn = d * 3 * d + d * d + (4 * d if bias else 0)
        mlp = d * 4 * d + 4 * d * d + (5 * d if bias else 0)
        block = 2 * layer_norm + attn + mlp
        wpe = self.block_size * d if self.pos_encoding == "learned" else 0
        return self.vocab_size * d + wpe + self.n_layer * block + layer_norm

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N for the matmuls plus the attention term.

        PaLM's convention (appendix B): N excludes the position table (a lookup, not a
        matmul) but includes the tied embedding (it is the output head's matmul), and
        attention scores and values cost 12 * n_layer * n_embd * block_size, counting the
        whole score matrix as the usual MFU figures do.
        """
        wpe = self.block_size * self.n_embd if self.pos_encoding == "learned" else 0
        matmul_params = self.num_params() - wpe
        return 6 * matmul_params + 12 * self.n_layer * self.n_embd * self.block_size


TokenizerKind = Literal["char", "byte"]
TOKENIZERS: tuple[str, ...] = get_args(TokenizerKind)


@dataclass(frozen=True)
class DataConfig:
    """Where the tokens come from and how they are cut.

    `source` is `builtin` (Python's bundled pydoc text, always present offline), a path
    to a UTF-8 text file, a folder of `.txt` files, a folder with nanoGPT's
    `train.bin`/`val.bin`, or an http(s) URL whose `sha256` must be pinned.
    """

    source: str = "builtin"
    tokenizer: TokenizerKind = "char"
    val_fraction: float = 0.1
    val_tokens: int = 8192
    sha256: str | None = None
    cache_dir: str | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise HpoError(f"data.tokenizer={self.tokenizer!r} is unknown; use one of {', '.join(TOKENIZERS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise HpoError(f"data.val_fraction={self.val_fraction} must be between 0 and 1")
        if self.val_tokens < 1:
            raise HpoError(f"data.val_tokens={self.val_tokens} must be a positive integer")
        if not self.source:
            raise HpoError("data.source is empty; use builtin, a file or folder path, or a URL")


OptimizerName = Literal["adamw", "adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule: linear warm-up, then cosine decay.

    `warmup_frac` is a fraction of the budget, not a step count, so trials with different
    batch sizes (hence step counts) on the same token budget warm up alike.
    """

    name: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    momentum: float = 0.9
    grad_clip: float = 1.0
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise HpoError(f"optim.name={self.name!r} is unknown; use one of {', '.join(OPTIMIZERS)}")
        # A config never holds NaN or infinity (hpo.config.structured.build refuses them);
        # one made in Python with lr=NaN is a diverging run (DivergedError) for the trainer.
        if self.lr <= 0:
            raise HpoError(f"optim.lr={self.lr} must be positive (for example optim.lr=1e-3)")
        if self.weight_decay < 0:
            raise HpoError(f"optim.weight_decay={self.weight_decay} must be >= 0")
        for name in ("beta1", "beta2", "momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise HpoError(f"optim.{name}={getattr(self, name)} must be in [0, 1)")
        if self.grad_clip < 0:
            raise HpoError(f"optim.grad_clip={self.grad_clip} must be >= 0 (0 disables clipping)")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise HpoError(f"optim.warmup_frac={self.warmup_frac} must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise HpoError(f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")

    def lr_at(self, progress: float) -> float:
        """Learning rate at a fraction of the budget in [0, 1]."""
        if progress < self.warmup_frac:
            return self.lr * (progress / self.warmup_frac)
        decay = (progress - self.warmup_frac) / (1.0 - self.warmup_frac)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, decay)))
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)


@dataclass(frozen=True)
class BudgetConfig:
    """How long a run trains: exactly one of tokens (the fair default), steps or seconds."""

    tokens: int | None = None
    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in asdict(self).items() if v is not None}
        if len(given) != 1:
            raise HpoError(
                f"set exactly one of budget.tokens, budget.steps, budget.seconds (got {given or 'none'}); "
                "for example budget=steps budget.steps=500 budget.tokens=null (presets set budget.tokens)"
            )
        ((key, value),) = given.items()
        if value <= 0:
            raise HpoError(f"budget.{key}={value} must be positive")

    def total_steps(self, tokens_per_step: int) -> int | None:
        """Optimizer steps the budget allows, or None for a wall-clock budget."""
        if self.steps is not None:
            return self.steps
        if self.tokens is not None:
            return max(1, -(-self.tokens // tokens_per_step))
        return None


@dataclass(frozen=True)
class TrainSettings:
    """The `train:` group: how the run is executed (batch, devices, seeds, evaluation, outputs).

    `batch_size` is the global number of sequences per optimizer step; when it exceeds
    `micro_batch_size` the step accumulates gradients over several micro-batches, so the
    optimization is the same whatever fits in memory. Evaluation happens `evals` times,
    evenly over the budget, and also at the first step reaching each of `eval_tokens`
    (the rungs where a pruner decides). With `save_state` the run keeps its whole state in
    that file, rewritten at every evaluation; `resume_from` goes on from such a file, taking
    exactly the steps the stopped run would have taken.
    """

    batch_size: int = 32
    micro_batch_size: int | None = None
    n_devices: int = 1
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    seed: int = 0
    evals: int = 10
    eval_tokens: tuple[int, ...] = ()
    # None: 1 on CPU, where only the first step is slow (measured, 1 thread: 168 ms, then
    # 112, 105, 102, 120 ms); 3 on GPUs, which also initialize CUDA and autotune kernels.
    timing_warmup_steps: int | None = None
    threads: int | None = None
    compile: bool = False
    checkpoint: str | None = None
    sample_tokens: int = 100
    save_state: str | None = None
    resume_from: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise HpoError(f"train.batch_size={self.batch_size} must be a positive integer")
        if self.micro_batch_size is not None:
            if self.micro_batch_size < 1:
                raise HpoError(f"train.micro_batch_size={self.micro_batch_size} must be positive")
            if self.batch_size % self.micro_batch_size:
                raise HpoError(
                    f"train.batch_size={self.batch_size} is not a multiple of "
                    f"train.micro_batch_size={self.micro_batch_size}; make it one"
                )
        if self.n_devices < 1:
            raise HpoError(f"train.n_devices={self.n_devices} must be at least 1")
        if self.evals < 1:
            raise HpoError(f"train.evals={self.evals} must be at least 1")
        if any(t < 1 for t in self.eval_tokens):
            raise HpoError(f"train.eval_tokens={list(self.eval_tokens)} must be positive token counts")
        if self.timing_warmup_steps is not None and self.timing_warmup_steps < 0:
            raise HpoError(f"train.timing_warmup_steps={self.timing_warmup_steps} must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise HpoError(f"train.threads={self.threads} must be positive (or null: all cores)")
        if self.sample_tokens < 0:
            raise HpoError(f"train.sample_tokens={self.sample_tokens} must be >= 0")


RUNG_STATE = ".rung-"


def rung_state(save_state: str, rung: int) -> str:
    """Where a run that keeps its state in `save_state` keeps its state at a rung (one of
    `train.eval_tokens`), for a pruner that pauses runs there (hpo.trainer.checkpoint)."""
    return f"{save_state}{RUNG_STATE}{rung}"


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs; a pure value, so a study can store it whole."""

    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    budget: BudgetConfig = field(default_factory=lambda: BudgetConfig(tokens=1_000_000))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
