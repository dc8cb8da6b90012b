"""What can run here: device counts and a memory estimate, checked before any training.

A configuration that cannot run (more devices than exist, a batch that does not split
across them, a model that would not fit) is rejected with a reason and recorded as
infeasible, so samplers learn to avoid it instead of wasting a trial on a crash.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

from hpo.config.search_space import PARAM_TARGETS, Param, SearchSpace
from hpo.config.settings import ResourcesConfig
from hpo.config.training import RunSpec
from hpo.errors import HpoError
from hpo.trainer import hardware


def estimate_memory_bytes(config: RunSpec) -> int:
    """Peak training memory of one device: weights, gradients, optimizer state, activations.

    Activations follow Korthikanti et al. 2022 (34*d + 5*heads*T values per token and layer
    without recomputation), at 4 bytes, plus the logits and their gradient. A deliberate
    over-estimate: a rejected configuration that would have fit costs less than a crash.
    """
    model = replace(config.model, vocab_size=config.model.vocab_size or 256)
    vocab, n = model.vocab_size, model.num_params()
    state_bytes = (16 if config.optim.name != "sgd" else 12) * n
    per_device = config.train.batch_size // config.train.n_devices
    micro = min(per_device, config.train.micro_batch_size or per_device)
    tokens = micro * model.block_size
    activations = 4 * tokens * model.n_layer * (34 * model.n_embd + 5 * model.n_head * model.block_size)
    logits = 3 * 4 * tokens * vocab
    return int(state_bytes + activations + logits)


def infeasible_reason(config: RunSpec, resources: ResourcesConfig) -> str | None:
    """Why `config` cannot run on these resources, or None when it can."""
    try:
        hardware.resolve_device(config.train.device)
    except HpoError as exc:
        return str(exc)
    pool, kind = hardware.device_pool(resources)
    n = config.train.n_devices
    if n > len(pool):
        return f"n_devices={n} but only {len(pool)} {kind} device(s) are available (resources.devices)"
    if config.train.batch_size % n:
        return f"batch_size={config.train.batch_size} does not split evenly across n_devices={n}"
    if resources.memory_limit_gb is not None:
        need = estimate_memory_bytes(config) / 2**30
        if need > resources.memory_limit_gb:
            limit = resources.memory_limit_gb
            return f"estimated peak memory {need:.2f} GiB exceeds resources.memory_limit_gb={limit:g}"
    return None


# The training keys that infeasible_reason reads (the model's, for the memory estimate).
_DEVICE_KEYS = ("train.device", "train.n_devices", "train.batch_size", "train.micro_batch_size", "optim.name")
# Keys whose feasibility is not monotonic in the value (a batch splits across 2 devices,
# not 3): their ranges are tried value by value, up to this many values.
_EVERY_VALUE = ("train.n_devices", "train.batch_size", "train.micro_batch_size")
_MOST_VALUES = 64
_MOST_POINTS = 1024


def shared_infeasible_reason(space: SearchSpace, base: RunSpec, resources: ResourcesConfig) -> str | None:
    """Why no trial of a study of `space` over `base` can run on these resources (a device
    this machine lacks, a fixed setting that rules out every searched value), or None
    when some trial can: a searched value that rules out only some trials is the
    trials' business (told infeasible, so that samplers learn to avoid it).

    Sound, not complete: a searched parameter that this cannot enumerate (a conditional
    one, a long integer range of a device key, a space of over _MOST_POINTS points) is
    taken to leave some trial feasible. Memory grows with every model size, so a range of
    those is tried at its two ends."""
    try:
        hardware.device_pool(resources)  # resources are fixed for every trial
    except HpoError as exc:
        return str(exc)
    try:
        shared = space.apply(base, {p.name: p.value for p in space.params if p.kind == "fixed"})
    except HpoError:
        return None  # an invalid config, which the config's own checks name
    searched = [p for p in space.params if p.kind != "fixed" and _matters(p)]
    candidates = [_candidates(p) for p in searched]
    if any(values is None for values in candidates):
        return None
    options = [values for values in candidates if values is not None]
    if math.prod(len(values) for values in options) > _MOST_POINTS:
        return None
    first = None
    for point in itertools.product(*options):
        try:
            spec = space.apply(shared, {p.name: value for p, value in zip(searched, point, strict=True)})
        except HpoError:
            continue  # not a point any trial takes
        reason = infeasible_reason(spec, resources)
        if reason is None:
            return None
        first = first or reason
    return first


def _target(param: Param) -> str:
    return PARAM_TARGETS.get(param.name, param.name)


def _matters(param: Param) -> bool:
    """Whether a parameter's value can change infeasible_reason's answer."""
    target = _target(param)
    return target in _DEVICE_KEYS or target.startswith("model.")


def _candidates(param: Param) -> tuple[Any, ...] | None:
    """The values of `param` to try, or None if they cannot be enumerated here."""
    if param.kind == "categorical":
        return param.choices
    if param.kind in ("int", "float") and param.low is not None and param.high is not None:
        if param.kind == "int" and _target(param) in _EVERY_VALUE:
            step = int(param.step or 1)
            values = range(int(param.low), int(param.high) + 1, step)
            return tuple(values) if len(values) <= _MOST_VALUES else None
        if param.kind == "int":
            return (int(param.low), int(param.high))
        return (param.low, param.high)
    return None  # conditional: its branches depend on the parent's value
