"""What a run writes to disk: a trained model to use again, and a run's state to resume it.

A checkpoint (`save_checkpoint`) is the trained model with its config and tokenizer. A
state (`save_state`) is everything a run needs to go on exactly where it stopped: the
weights, the optimizer's moments, the data order's generator, the RNG, the clock and the
learning curve so far, so that a run resumed from it takes the same steps as one that
never stopped. Both files hold only tensors and plain Python values, so
`torch.load(path, weights_only=True)` reads them: a file from someone else cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from hpo.config.structured import build, differences
from hpo.config.training import RunSpec, rung_state
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent
from hpo.trainer.data import Tokenizer
from hpo.trainer.model import GPT

# Models of a format before 2 used a sinusoidal position table 35x larger (hpo.trainer.model).
# Their weights were trained against it, and the table is rebuilt on load, not stored.
MODEL_FORMAT = 2


def save_checkpoint(path: str | Path, model: GPT, config: RunSpec, tokenizer: Tokenizer) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": MODEL_FORMAT,
            "model": model.state_dict(),
            "config": replace(config, model=model.config).to_dict(),
            "tokenizer": tokenizer.to_dict(),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> tuple[GPT, RunSpec, Tokenizer]:
    """The model (on CPU, in eval mode), its training config and its tokenizer."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HpoError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise HpoError(f"{str(path)!r} is not an hpo checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not {"model", "config", "tokenizer"} <= state.keys():
        raise HpoError(f"{str(path)!r} is not an hpo checkpoint (it lacks model, config or tokenizer)")
    config = build(RunSpec, state["config"])
    _check_model_format(state.get("format", 1), config, path)
    model = GPT(config.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        first = str(exc).splitlines()[0]
        raise HpoError(f"{str(path)!r}: the weights do not fit the model config ({first})") from None
    model.eval()
    return model, config, build(Tokenizer, state["tokenizer"])


# 3: the model's sinusoidal table is scaled (MODEL_FORMAT 2); 2: the clock keeps every timed
# step's seconds, which hpo.trainer.loop's throughput reads. A state of format 2 resumes
# unless its model has the old sinusoidal table.
STATE_FORMAT = 3
# TrainSettings fields that say where and how a run executes, not what it computes: a state
# resumes under other values of these (another device, thread count or output path).
PLACEMENT = frozenset(
    {"device", "threads", "compile", "timing_warmup_steps", "checkpoint", "sample_tokens", "save_state", "resume_from"}
)


@dataclass
class TrainState:
    """A run right after an evaluation: what `train` resumes from. What comes next (the
    next evaluation, the rungs ahead) follows from the config and the clock."""

    config: dict[str, Any]  # the RunSpec's dict: a state resumes only the run that made it
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    data_rng: torch.Tensor  # the generator that draws every rank's training batches
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    clock: dict[str, Any]  # hpo.trainer.loop's counters: steps, tokens, where the time went, the timed steps
    curve: list[dict[str, Any]]  # EvalEvent fields
    wall_time_s: float

    @classmethod
    def capture(
        cls,
        config: RunSpec,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        device: torch.device,
        clock: dict[str, Any],
        curve: Sequence[EvalEvent],
        wall_time_s: float,
    ) -> TrainState:
        """The run as it stands; `restore` puts it back."""
        return cls(
            config=run_identity(config),
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            data_rng=generator.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            clock=clock,
            curve=[asdict(event) for event in curve],
            wall_time_s=wall_time_s,
        )

    def restore(
        self, model: GPT, optimizer: torch.optim.Optimizer, generator: torch.Generator, device: torch.device
    ) -> None:
        """Put the weights, the optimizer's moments and the generators back (before DDP wraps
        the model); the caller restores its clock and curve."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        generator.set_state(self.data_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.cuda_rng, device)


_STATE_FIELDS = {f.name for f in fields(TrainState)}


def run_identity(config: RunSpec) -> dict[str, Any]:
    """What a run computes: its config less the fields that only place it (PLACEMENT)."""
    data = config.to_dict()
    data["train"] = {k: v for k, v in data["train"].items() if k not in PLACEMENT}
    return data


def save_state(path: str | Path, state: TrainState, rungs: Sequence[int] = ()) -> None:
    """Write `state` to `path` atomically: a run killed while saving leaves the last state whole.

    At rungs, the same file also becomes `rung_state(path, rung)` for each rung reached
    (a hard link, which later saves leave alone): a pruner that pauses the run there
    resumes it from exactly that point, even when the run went on to save later states
    before it was stopped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"format": STATE_FORMAT, **vars(state)}, partial)
    os.replace(partial, path)
    for rung in rungs:
        os.link(path, partial)
        os.replace(partial, rung_state(str(path), rung))


def load_state(path: str | Path, config: RunSpec) -> TrainState:
    """The state at `path`, checked to belong to a run of `config` (up to PLACEMENT)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HpoError(
            f"train.resume_from={str(path)!r} does not exist; give the file that train.save_state wrote"
        ) from None
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise HpoError(f"train.resume_from={str(path)!r} is not an hpo run state ({type(exc).__name__})") from None
    fmt = data.pop("format", None) if isinstance(data, dict) else None
    if fmt not in (2, STATE_FORMAT) or data.keys() != _STATE_FIELDS:
        raise HpoError(f"train.resume_from={str(path)!r} is not an hpo run state of format {STATE_FORMAT}")
    _check_model_format(1 if fmt == 2 else MODEL_FORMAT, config, path)
    state = TrainState(**data)
    differing = differences(state.config, run_identity(config))
    if differing:
        raise HpoError(
            f"train.resume_from={str(path)!r} was saved by a run with another {differing[0]}; "
            "resume with the config that saved it"
        )
    return state


def _check_model_format(fmt: int, config: RunSpec, path: str | Path) -> None:
    """HpoError for weights trained against the unscaled sinusoidal table: they would be
    read against the scaled one and predict nothing like the model that was saved."""
    if fmt < MODEL_FORMAT and config.model.pos_encoding == "sinusoidal":
        raise HpoError(
            f"{str(path)!r} holds a model trained with the earlier, unscaled sinusoidal position table, "
            "which hpo no longer builds; train it again"
        )
