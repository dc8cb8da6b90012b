"""What can run here: device counts and a memory estimate, checked before any training.

A configuration that cannot run (more devices than exist, a batch that does not split
across them, a model that would not fit) is rejected with a reason and recorded as
infeasible, so samplers learn to avoid it instead of wasting a trial on a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from hpo.errors import HpoError
from hpo.trainspec import TrainConfig


@dataclass(frozen=True)
class ResourcesConfig:
    """Which devices trials may use: `auto` (all visible GPUs, else every CPU core, one
    rank per core), a count (the first N of those) or an explicit list of device ids.

    `memory_limit_gb` caps the estimated peak memory of one device (host memory on CPU).
    """

    devices: str | int | tuple[int, ...] = "auto"
    memory_limit_gb: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.devices, str) and self.devices != "auto":
            raise HpoError(f"resources.devices={self.devices!r} must be auto, a count or a list of ids")
        if isinstance(self.devices, int) and self.devices < 1:
            raise HpoError(f"resources.devices={self.devices} must be auto or a positive count")
        if isinstance(self.devices, tuple) and (not self.devices or len(set(self.devices)) != len(self.devices)):
            raise HpoError(f"resources.devices={list(self.devices)} must list distinct device ids")
        if self.memory_limit_gb is not None and self.memory_limit_gb <= 0:
            raise HpoError(f"resources.memory_limit_gb={self.memory_limit_gb} must be positive")

    def pool(self) -> tuple[list[int], str]:
        """The device ids trials may lease on this machine, and their kind (cuda or cpu)."""
        import torch

        gpus = torch.cuda.device_count()
        kind = "cuda" if gpus else "cpu"
        found = list(range(gpus)) if gpus else sorted(os.sched_getaffinity(0))
        if self.devices == "auto":
            return found, kind
        wanted = list(range(self.devices)) if isinstance(self.devices, int) else [int(d) for d in self.devices]
        missing = [d for d in wanted if d not in found] if isinstance(self.devices, tuple) else []
        if missing or len(wanted) > len(found):
            raise HpoError(
                f"resources.devices={self.devices} asks for {kind} devices this machine lacks "
                f"(it has {kind} {found}); use resources.devices=auto"
            )
        return (found[: len(wanted)] if isinstance(self.devices, int) else wanted), kind


def estimate_memory_bytes(config: TrainConfig) -> int:
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


def infeasible_reason(config: TrainConfig, resources: ResourcesConfig) -> str | None:
    """Why `config` cannot run on these resources, or None when it can."""
    from hpo import hardware  # torch: only where a config meets the machine

    try:
        hardware.resolve_device(config.train.device)
    except HpoError as exc:
        return str(exc)
    pool, kind = resources.pool()
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
