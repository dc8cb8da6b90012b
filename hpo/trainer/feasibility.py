"""What can run here: device counts and a memory estimate, checked before any training.

A configuration that cannot run (more devices than exist, a batch that does not split
across them, a model that would not fit) is rejected with a reason and recorded as
infeasible, so samplers learn to avoid it instead of wasting a trial on a crash.
"""

from __future__ import annotations

from dataclasses import replace

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
