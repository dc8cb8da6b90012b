"""What can run here: device counts, batch splits and the memory estimate, checked before training."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from hpo.config.compose import compose, run_spec
from hpo.config.settings import ResourcesConfig
from hpo.config.training import RunSpec
from hpo.errors import HpoError
from hpo.trainer.feasibility import estimate_memory_bytes, infeasible_reason
from hpo.trainer.hardware import device_pool


@pytest.fixture(scope="module")
def base() -> RunSpec:
    return run_spec(compose(["experiment=smoke"]))


def with_run(config: RunSpec, **changes: object) -> RunSpec:
    return replace(config, train=replace(config.train, **changes))


def with_model(config: RunSpec, **changes: object) -> RunSpec:
    return replace(config, model=replace(config.model, **changes))


def cores() -> int:
    return len(device_pool(ResourcesConfig())[0])


def test_a_fitting_config_is_feasible(base: RunSpec) -> None:
    assert infeasible_reason(base, ResourcesConfig()) is None
    assert infeasible_reason(base, ResourcesConfig(devices=1, memory_limit_gb=8)) is None
    assert infeasible_reason(base, ResourcesConfig(devices=(0,))) is None


def test_more_devices_than_exist(base: RunSpec) -> None:
    reason = infeasible_reason(with_run(base, n_devices=2, batch_size=32), ResourcesConfig(devices=1))
    assert reason is not None
    assert "n_devices=2" in reason and "only 1" in reason
    n = cores() + 1
    reason = infeasible_reason(with_run(base, n_devices=n, batch_size=32 * n), ResourcesConfig())
    assert reason is not None and f"only {n - 1} " in reason


def test_the_pool_is_what_this_machine_has() -> None:
    import torch

    pool, kind = device_pool(ResourcesConfig())
    if torch.cuda.is_available():
        assert (pool, kind) == (list(range(torch.cuda.device_count())), "cuda")
    else:
        assert (pool, kind) == (sorted(os.sched_getaffinity(0)), "cpu")
    assert device_pool(ResourcesConfig(devices=1)) == (pool[:1], kind)
    assert device_pool(ResourcesConfig(devices=(pool[-1],))) == ([pool[-1]], kind)
    with pytest.raises(HpoError, match="lacks"):
        device_pool(ResourcesConfig(devices=len(pool) + 1))


def test_batch_not_divisible_by_devices(base: RunSpec) -> None:
    if cores() < 2:
        pytest.skip("needs two devices")
    reason = infeasible_reason(with_run(base, n_devices=2, batch_size=33), ResourcesConfig(devices=2))
    assert reason is not None
    assert "batch_size=33" in reason and "n_devices=2" in reason
    assert infeasible_reason(with_run(base, n_devices=2, batch_size=32), ResourcesConfig(devices=2)) is None


def test_unavailable_device_kind(base: RunSpec) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    reason = infeasible_reason(with_run(base, device="cuda"), ResourcesConfig())
    assert reason is not None and "no GPU" in reason


def test_memory_above_the_limit(base: RunSpec) -> None:
    need_gb = estimate_memory_bytes(base) / 2**30
    reason = infeasible_reason(base, ResourcesConfig(memory_limit_gb=need_gb / 2))
    assert reason is not None and "exceeds resources.memory_limit_gb" in reason
    assert infeasible_reason(base, ResourcesConfig(memory_limit_gb=need_gb * 2)) is None


def test_estimate_grows_with_batch_and_depth(base: RunSpec) -> None:
    small = estimate_memory_bytes(base)
    assert small > 0
    assert estimate_memory_bytes(with_run(base, batch_size=base.train.batch_size * 2)) > small
    assert estimate_memory_bytes(with_model(base, n_layer=base.model.n_layer * 2)) > small
    assert estimate_memory_bytes(with_model(base, n_embd=base.model.n_embd * 2)) > small


def test_estimate_per_device_and_micro_batch(base: RunSpec) -> None:
    whole = estimate_memory_bytes(with_run(base, batch_size=64))
    # the batch splits across devices, and a micro-batch bounds the activations held at once
    assert estimate_memory_bytes(with_run(base, batch_size=64, n_devices=2)) < whole
    assert estimate_memory_bytes(with_run(base, batch_size=64, micro_batch_size=8)) < whole


def test_sgd_keeps_less_state(base: RunSpec) -> None:
    sgd = replace(base, optim=replace(base.optim, name="sgd"))
    assert estimate_memory_bytes(sgd) < estimate_memory_bytes(base)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"devices": "all"}, "resources.devices"),
        ({"devices": 0}, "resources.devices"),
        ({"devices": ()}, "resources.devices"),
        ({"devices": (0, 0)}, "resources.devices"),
        ({"memory_limit_gb": 0}, "resources.memory_limit_gb"),
        ({"memory_limit_gb": -1.0}, "resources.memory_limit_gb"),
    ],
)
def test_bad_resources(kwargs: dict, fragment: str) -> None:
    with pytest.raises(HpoError, match=fragment.replace(".", r"\.")):
        ResourcesConfig(**kwargs)
