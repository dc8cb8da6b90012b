"""The search space: YAML parameter specs, validated, and applied to a RunSpec.

A spec is either a fixed value or a distribution:

    n_layer: {low: 1, high: 6}                 # integer range (both bounds integers)
    lr: {low: 1.0e-4, high: 1.0e-2, log: true} # float range
    n_head: {choices: [2, 4, 8]}               # categorical
    n_devices: 1                               # fixed: not searched, still recorded

Width is derived, never searched alone with the head count: `head_dim` gives
`n_embd = n_head * head_dim`, so every sampled shape divides evenly. Names are short
(they are the dashboard's parameter names) and map to config keys in PARAM_TARGETS.
hpo.search.samplers suggests a point of the space through Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hpo.config.structured import build
from hpo.config.training import RunSpec
from hpo.errors import HpoError

PARAM_TARGETS: dict[str, str] = {
    "n_layer": "model.n_layer",
    "n_head": "model.n_head",
    "n_embd": "model.n_embd",
    "head_dim": "model.n_embd",  # n_embd = n_head * head_dim
    "block_size": "model.block_size",
    "pos_encoding": "model.pos_encoding",
    "dropout": "model.dropout",
    "bias": "model.bias",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "warmup_frac": "optim.warmup_frac",
    "beta2": "optim.beta2",
    "grad_clip": "optim.grad_clip",
    "batch_size": "train.batch_size",
    "micro_batch_size": "train.micro_batch_size",
    "n_devices": "train.n_devices",
}

Kind = Literal["int", "float", "categorical", "fixed"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None


def _parse_param(name: str, spec: Any) -> Param:
    key = f"search_space.{name}"
    if name not in PARAM_TARGETS:
        raise HpoError(f"{key} is not a known parameter; use one of {', '.join(PARAM_TARGETS)}")
    if not isinstance(spec, Mapping):
        return Param(name, "fixed", value=spec)
    unknown = set(spec) - {"low", "high", "log", "step", "choices"}
    if unknown:
        raise HpoError(f"{key} has unknown field {sorted(unknown)[0]!r}; use low/high/log/step or choices")
    if "choices" in spec:
        choices = tuple(spec["choices"] or ())
        if not choices:
            raise HpoError(f"{key}.choices is empty; list at least one value")
        return Param(name, "categorical", choices=choices)
    if "low" not in spec or "high" not in spec:
        raise HpoError(f"{key} needs low and high (or choices, or a fixed value)")
    low, high = spec["low"], spec["high"]
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HpoError(f"{key}.{bound}={value!r} must be a finite number")
    kind: Kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    log = bool(spec.get("log", False))
    if low > high or (kind == "float" and low == high):
        raise HpoError(
            f"{key} has an empty or inverted range low={low} high={high}; make low < high "
            f"(or fix the value: search_space.{name}={low})"
        )
    if log and low <= 0:
        raise HpoError(f"{key} is log-scaled, so low={low} must be positive")
    step = spec.get("step")
    if step is not None and log:
        raise HpoError(f"{key} cannot have both log and step")
    return Param(name, kind, low=low, high=high, log=log, step=step)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        params = tuple(_parse_param(name, value) for name, value in spec.items())
        names = {p.name for p in params}
        if {"head_dim", "n_embd"} <= names:
            raise HpoError("search_space sets both head_dim and n_embd; keep one (head_dim derives the width)")
        if not any(p.kind != "fixed" for p in params):
            raise HpoError("search_space has no searched parameter; give at least one a range or choices")
        return cls(params)

    def check_point(self, values: Mapping[str, Any], key: str) -> None:
        """HpoError unless `values` (a baseline) is a point of this space: Optuna would
        silently drop a name it never suggests, or crash on a value outside the choices."""
        params = {p.name: p for p in self.params}
        for name, value in values.items():
            param = params.get(name)
            if param is None:
                raise HpoError(f"{key}.{name} is not in the search space; use {', '.join(params)}")
            if param.kind == "fixed":
                ok = value == param.value
            elif param.kind == "categorical":
                ok = value in param.choices
            else:
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                ok = number and param.low <= value <= param.high
            if not ok:
                raise HpoError(f"{key}.{name}={value!r} is outside search_space.{name}")

    def apply(self, base: RunSpec, values: Mapping[str, Any]) -> RunSpec:
        """`base` with the sampled values, re-validated; HpoError if they make it invalid."""
        merged = base.to_dict()
        for name, value in values.items():
            section, key = PARAM_TARGETS[name].split(".")
            if name == "head_dim":
                value = values.get("n_head", base.model.n_head) * value
            merged[section][key] = value
        return build(RunSpec, merged)
