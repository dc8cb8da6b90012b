"""Save a trained model with everything needed to use it again, loadable without pickle.

The file holds only tensors and plain Python values, so `torch.load(path,
weights_only=True)` reads it: a checkpoint from someone else cannot run code.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from hpo.data import Tokenizer
from hpo.errors import HpoError
from hpo.model import GPT
from hpo.structured import build
from hpo.trainspec import TrainConfig


def save_checkpoint(path: str | Path, model: GPT, config: TrainConfig, tokenizer: Tokenizer) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": model.state_dict(),
            "config": replace(config, model=model.config).to_dict(),
            "tokenizer": tokenizer.to_dict(),
        },
        path,
    )


def load_checkpoint(path: str | Path) -> tuple[GPT, TrainConfig, Tokenizer]:
    """The model (on CPU, in eval mode), its training config and its tokenizer."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HpoError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise HpoError(f"{str(path)!r} is not an hpo checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not {"model", "config", "tokenizer"} <= state.keys():
        raise HpoError(f"{str(path)!r} is not an hpo checkpoint (it lacks model, config or tokenizer)")
    config = build(TrainConfig, state["config"])
    model = GPT(config.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        first = str(exc).splitlines()[0]
        raise HpoError(f"{str(path)!r}: the weights do not fit the model config ({first})") from None
    model.eval()
    return model, config, build(Tokenizer, state["tokenizer"])
