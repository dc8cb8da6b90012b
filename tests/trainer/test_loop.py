"""The trainer: real (tiny) training runs on the builtin corpus, budgets, optimizers, failures."""

from __future__ import annotations

import math
import pickle
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpo.config.training import OPTIMIZERS, BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.errors import DivergedError, HpoError
from hpo.record.outcome import EvalEvent, TrialResult
from hpo.trainer.data import Dataset
from hpo.trainer.loop import _Clock, evaluate, train
from hpo.trainer.model import GPT

pytestmark = pytest.mark.usefixtures("quiet_machine")


def tiny(
    *,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
) -> RunSpec:
    """A small, fast RunSpec; each section's defaults can be overridden."""
    return RunSpec(
        model=GPTConfig(**{"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, **(model or {})}),
        data=DataConfig(**{"val_tokens": 2048, **(data or {})}),
        optim=OptimConfig(**(optim or {})),
        train=TrainSettings(**{"batch_size": 8, "evals": 2, "sample_tokens": 0, **(run or {})}),
        budget=BudgetConfig(**(budget or {"steps": 10})),
    )


# --- one smoke-sized run, looked at from several sides ----------------------------------

SMOKE_TOKENS = 300_000


@pytest.fixture(scope="module")
def smoke(builtin: Dataset) -> tuple[RunSpec, TrialResult, list[EvalEvent]]:
    """The shape of `experiment=smoke` (2 layers, width 64, block 64, batch 32), 300k tokens."""
    config = RunSpec(
        model=GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64),
        train=TrainSettings(batch_size=32, evals=5, sample_tokens=200),
        budget=BudgetConfig(tokens=SMOKE_TOKENS),
    )
    events: list[EvalEvent] = []
    result = train(config, on_eval=events.append, dataset=builtin)
    return config, result, events


def test_learns_more_than_the_most_frequent_character(smoke, builtin: Dataset) -> None:
    config, result, _ = smoke
    _, targets = builtin.validation_set(config.model.block_size, config.data.val_tokens)
    counts = np.bincount(targets.flatten().numpy())
    majority_rate = counts.max() / targets.numel()
    assert 0.05 < majority_rate < 0.5  # the space character, in English text
    assert result.val_accuracy > majority_rate + 0.05
    assert result.val_loss < math.log(builtin.tokenizer.vocab_size) - 1.0


def test_eval_events(smoke) -> None:
    config, result, events = smoke
    assert len(events) == config.train.evals
    steps = [e.step for e in events]
    tokens = [e.tokens for e in events]
    assert steps == sorted(set(steps)) and steps[0] >= 1
    assert tokens == sorted(set(tokens))
    tokens_per_step = config.train.batch_size * config.model.block_size
    assert all(e.tokens == e.step * tokens_per_step for e in events)
    for e in events:
        assert math.isfinite(e.train_loss) and math.isfinite(e.val_loss)
        assert 0.0 <= e.val_accuracy <= 1.0
        assert e.tokens_per_sec > 0
    assert events[-1].val_loss < events[0].val_loss
    last = events[-1]
    assert (last.step, last.tokens) == (result.steps, result.tokens)
    assert (last.val_loss, last.val_accuracy, last.train_loss) == (
        result.val_loss,
        result.val_accuracy,
        result.train_loss,
    )
    assert last.tokens_per_sec == result.tokens_per_sec
    assert result.curve == tuple(events)


def test_throughput_is_the_lower_quartile_timed_step() -> None:
    """The warm-up step is not timed, and steps held up from outside the run (ten times
    slower here, more than half of them) do not move the rate."""
    clock = _Clock(timed_from=1, total_steps=9, seconds=None, world=1, device=torch.device("cpu"))
    for elapsed in (5.0, 0.1, 1.0, 1.0, 0.1, 1.0, 1.0, 1.0, 0.1):
        clock.add_step(100, elapsed, elapsed)
    assert clock.throughput() == pytest.approx(1000.0)


def test_result_fields_are_sane(smoke, builtin: Dataset) -> None:
    config, result, _ = smoke
    model_config = replace(config.model, vocab_size=builtin.tokenizer.vocab_size)
    tokens_per_step = config.train.batch_size * config.model.block_size
    assert result.steps == math.ceil(SMOKE_TOKENS / tokens_per_step)
    assert result.tokens == result.steps * tokens_per_step >= SMOKE_TOKENS
    assert result.params == model_config.num_params()
    assert result.flops_per_token == model_config.flops_per_token()
    assert result.tokens_per_sec > 0
    assert result.achieved_flops == pytest.approx(result.flops_per_token * result.tokens_per_sec)
    assert result.peak_flops is not None and result.peak_flops > 0
    assert result.mfu is not None and 0.0 < result.mfu < 1.5
    assert result.peak_memory_bytes > 0
    assert result.train_time_s > 0 and result.eval_time_s > 0
    assert result.overhead_s >= 0
    assert result.wall_time_s >= result.train_time_s + result.eval_time_s
    assert (result.device, result.n_devices, result.dtype) == ("cpu", 1, "float32")
    assert result.device_name
    assert result.torch_version == torch.__version__
    assert result.data_fingerprint == builtin.fingerprint
    # The sample: the prompt token and 200 generated characters of the corpus' alphabet.
    assert len(result.sample) == 1 + config.train.sample_tokens
    assert set(result.sample) <= set(builtin.tokenizer.vocab)
    assert result.to_dict()["curve"][-1]["step"] == result.steps


# --- budgets ----------------------------------------------------------------------------


def test_budget_by_steps(builtin: Dataset) -> None:
    events: list[EvalEvent] = []
    result = train(tiny(budget={"steps": 7}, run={"evals": 3}), on_eval=events.append, dataset=builtin)
    assert result.steps == 7
    assert result.tokens == 7 * 8 * 32
    assert len(events) == 3 and events[-1].step == 7


def test_budget_by_tokens_rounds_up_to_whole_steps(builtin: Dataset) -> None:
    result = train(tiny(budget={"tokens": 1000}), dataset=builtin)  # 256 tokens a step
    assert (result.steps, result.tokens) == (4, 1024)


def test_budget_by_seconds(builtin: Dataset) -> None:
    events: list[EvalEvent] = []
    result = train(tiny(budget={"seconds": 0.5}, run={"evals": 2}), on_eval=events.append, dataset=builtin)
    # The budget counts training-step time only and stops at the first step past it.
    assert result.train_time_s >= 0.5
    assert result.steps >= 1 and result.tokens == result.steps * 8 * 32
    assert events and events[-1].step == result.steps
    assert math.isfinite(result.val_loss)


# --- optimization -----------------------------------------------------------------------


def test_same_seed_same_run(builtin: Dataset) -> None:
    config = tiny(budget={"steps": 6}, run={"evals": 6})
    first, second = train(config, dataset=builtin), train(config, dataset=builtin)
    assert [(e.train_loss, e.val_loss) for e in first.curve] == [(e.train_loss, e.val_loss) for e in second.curve]


@pytest.mark.parametrize(
    "optim", [{"name": "adamw"}, {"name": "sgd", "lr": 3e-2, "grad_clip": 0.0}], ids=["adamw", "sgd"]
)
def test_gradient_accumulation_matches_one_big_batch(optim: dict[str, Any], builtin: Dataset) -> None:
    """batch_size 8 in micro-batches of 2 is the same optimization as batch_size 8 at once.

    Why this must hold: a step's 8 windows come from the same seeded generator whatever the
    micro-batch size (the step draws its whole batch and splits it), each micro-loss is a
    mean over its tokens divided by the number of micro-batches (so the summed gradient is
    the whole batch's mean gradient), clipping and the optimizer step see that summed
    gradient, the lr schedule depends on steps only, the initial weights on the seed only,
    and dropout is 0. Only the float summation order differs, hence a tolerance; the
    evaluation batch size (the micro-batch) changes rounding only. Adam is nearly blind
    to the gradient's scale and clipping hides it, so plain SGD without clipping is also
    run: it catches micro-losses that are not divided by the number of micro-batches.
    """
    steps = 15
    whole = train(tiny(optim=optim, budget={"steps": steps}, run={"evals": steps}), dataset=builtin)
    accumulated = train(
        tiny(optim=optim, budget={"steps": steps}, run={"evals": steps, "micro_batch_size": 2}), dataset=builtin
    )
    assert len(whole.curve) == len(accumulated.curve) == steps
    for a, b in zip(whole.curve, accumulated.curve, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-4)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-4)
        assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=2e-3)

    # The tolerance is meaningful: another seed moves the trajectory far outside it.
    other = train(tiny(optim=optim, budget={"steps": steps}, run={"evals": steps, "seed": 1}), dataset=builtin)
    assert max(abs(a.train_loss - b.train_loss) for a, b in zip(whole.curve, other.curve, strict=True)) > 1e-2


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains(name: str, builtin: Dataset) -> None:
    lr = 3e-2 if name == "sgd" else 1e-3
    result = train(tiny(optim={"name": name, "lr": lr}, budget={"steps": 30}), dataset=builtin)
    assert result.steps == 30
    assert math.isfinite(result.train_loss)
    assert result.val_loss < math.log(builtin.tokenizer.vocab_size) - 0.3


def test_lr_schedule() -> None:
    optim = OptimConfig(lr=1e-3, warmup_frac=0.1, min_lr_ratio=0.1)
    assert optim.lr_at(0.0) == 0.0
    assert optim.lr_at(0.05) == pytest.approx(5e-4)
    assert optim.lr_at(0.1) == pytest.approx(1e-3)
    assert optim.lr_at(0.55) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert optim.lr_at(1.0) == pytest.approx(1e-4)
    assert optim.lr_at(1.5) == pytest.approx(1e-4)  # a wall-clock budget may overshoot
    values = [optim.lr_at(p / 100) for p in range(10, 101)]
    assert values == sorted(values, reverse=True)


# --- failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_nan_learning_rate_diverges(name: str, builtin: Dataset) -> None:
    with pytest.raises(DivergedError) as info:
        train(tiny(optim={"name": name, "lr": float("nan")}, budget={"steps": 10}), dataset=builtin)
    assert 1 <= info.value.step < 10
    assert math.isnan(info.value.loss)
    assert f"step {info.value.step}" in str(info.value)
    assert isinstance(info.value, HpoError)  # a property of the config: a user error


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_huge_learning_rate_without_clipping_diverges(name: str, builtin: Dataset) -> None:
    """lr=1e6 blows the weights up to overflow within a few steps: the run must stop at once
    with DivergedError (not train on NaNs until the budget ends and report garbage)."""
    config = tiny(optim={"name": name, "lr": 1e6, "grad_clip": 0.0}, budget={"steps": 50})
    events: list[EvalEvent] = []
    with pytest.raises(DivergedError) as info:
        train(replace(config, train=replace(config.train, evals=50)), on_eval=events.append, dataset=builtin)
    assert 1 <= info.value.step < 50
    assert not math.isfinite(info.value.loss)
    assert "optim.lr" in str(info.value)
    # Every evaluation before the divergence saw finite losses; none after it ran.
    assert all(math.isfinite(e.train_loss) for e in events)
    assert len(events) < info.value.step


@pytest.mark.parametrize("sample_tokens", [0, 5])
def test_divergence_in_the_last_step_is_caught(sample_tokens: int, builtin: Dataset) -> None:
    """A NaN update in the very last step leaves no later training loss to see it: the
    final evaluation must, rather than report a NaN loss with a meaningless accuracy (or
    crash while sampling from NaN probabilities)."""
    config = tiny(optim={"lr": float("nan")}, run={"sample_tokens": sample_tokens}, budget={"steps": 1})
    with pytest.raises(DivergedError) as info:
        train(config, dataset=builtin)
    assert info.value.step == 1


def test_diverged_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(DivergedError(7, float("inf"))))
    assert isinstance(error, DivergedError)
    assert (error.step, error.loss) == (7, float("inf"))
    assert "step 7" in str(error)


def test_on_eval_exception_stops_the_run(builtin: Dataset) -> None:
    class Stop(Exception):
        pass

    seen: list[EvalEvent] = []

    def on_eval(event: EvalEvent) -> None:
        seen.append(event)
        if len(seen) == 2:
            raise Stop(event.step)

    with pytest.raises(Stop):
        train(tiny(budget={"steps": 20}, run={"evals": 10}), on_eval=on_eval, dataset=builtin)
    assert [e.step for e in seen] == [2, 4]


def test_validation_set_is_the_same_across_batch_sizes(builtin: Dataset) -> None:
    """Trials with different batch sizes score on exactly the same validation tokens.

    lr=1e-30 leaves every weight bit-identical to its seeded initialization, so each trial's
    final val metrics are those of the same untrained model; they must equal that model's
    metrics on `validation_set(block_size, val_tokens)` computed here directly.
    """
    results = [
        train(tiny(optim={"lr": 1e-30}, run=run, budget={"steps": 2}), dataset=builtin)
        for run in ({"batch_size": 4}, {"batch_size": 16}, {"batch_size": 12, "micro_batch_size": 3})
    ]
    config = tiny()
    torch.manual_seed(config.train.seed)
    model = GPT(replace(config.model, vocab_size=builtin.tokenizer.vocab_size))
    x, y = builtin.validation_set(config.model.block_size, config.data.val_tokens)
    assert y.numel() >= config.data.val_tokens
    val_loss, val_accuracy = evaluate(model, x, y, 5, torch.device("cpu"), nullcontext())
    # The check can tell validation sets apart: more windows give another loss.
    x2, y2 = builtin.validation_set(config.model.block_size, 2 * config.data.val_tokens)
    other_loss, _ = evaluate(model, x2, y2, 5, torch.device("cpu"), nullcontext())
    assert other_loss != pytest.approx(val_loss, rel=1e-4)
    for result in results:
        # Evaluation batches differ, so float rounding may differ: allow one argmax near-tie.
        assert result.val_accuracy == pytest.approx(val_accuracy, abs=1.5 / y.numel())
        assert result.val_loss == pytest.approx(val_loss, rel=1e-5)


def test_trains_on_nanogpt_bins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rng.integers(0, 300, size=20_000).astype(np.uint16).tofile(tmp_path / "train.bin")
    rng.integers(0, 300, size=2_000).astype(np.uint16).tofile(tmp_path / "val.bin")
    config = tiny(data={"source": str(tmp_path), "val_tokens": 512}, run={"sample_tokens": 5})
    result = train(config)
    assert math.isfinite(result.val_loss)
    ids = [int(i) for i in result.sample.split()]
    assert len(ids) == 6 and all(0 <= i < 300 for i in ids)


# --- configurations that must not run ---------------------------------------------------


def test_block_size_longer_than_validation_split(builtin: Dataset) -> None:
    seen: list[EvalEvent] = []
    with pytest.raises(HpoError, match="block_size=100000"):
        train(tiny(model={"block_size": 100_000}), on_eval=seen.append, dataset=builtin)
    assert seen == []


def test_several_devices_need_the_launcher(builtin: Dataset) -> None:
    with pytest.raises(HpoError, match="n_devices=2"):
        train(tiny(run={"n_devices": 2}), dataset=builtin)


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: OptimConfig(lr=0.0), "optim.lr=0.0"),
        (lambda: OptimConfig(lr=-1.0), "optim.lr=-1.0"),
        (lambda: OptimConfig(name="nope"), "nope"),
        (lambda: OptimConfig(beta2=1.0), "beta2"),
        (lambda: OptimConfig(grad_clip=-1.0), "grad_clip"),
        (lambda: OptimConfig(warmup_frac=1.0), "warmup_frac"),
        (lambda: BudgetConfig(), "exactly one"),
        (lambda: BudgetConfig(tokens=10, steps=10), "exactly one"),
        (lambda: BudgetConfig(tokens=0), "budget.tokens=0"),
        (lambda: BudgetConfig(seconds=-1.0), "budget.seconds=-1.0"),
        (lambda: TrainSettings(batch_size=0), "batch_size=0"),
        (lambda: TrainSettings(batch_size=8, micro_batch_size=3), "micro_batch_size=3"),
        (lambda: TrainSettings(evals=0), "evals=0"),
        (lambda: TrainSettings(threads=0), "threads=0"),
    ],
)
def test_invalid_settings_are_user_errors(build, needle: str) -> None:
    with pytest.raises(HpoError, match=needle):
        build()
