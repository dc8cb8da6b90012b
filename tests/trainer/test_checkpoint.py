"""Checkpoints and run states: saved by real runs, readable without pickle; a checkpoint loads
the same model, a state resumes the same run."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent, TrialResult
from hpo.trainer.checkpoint import STATE_FORMAT, load_checkpoint, save_checkpoint
from hpo.trainer.data import Dataset
from hpo.trainer.launch import run_isolated
from hpo.trainer.loop import evaluate, step_rate, train
from hpo.trainer.model import GPT

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("quiet_machine")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, builtin: Dataset) -> tuple[Path, RunSpec, TrialResult]:
    path = tmp_path_factory.mktemp("ckpt") / "sub" / "model.pt"  # the folder does not exist yet
    config = RunSpec(
        model=GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, pos_encoding="rope", bias=True),
        data=DataConfig(val_tokens=2048),
        optim=OptimConfig(lr=3e-3),
        train=TrainSettings(batch_size=8, evals=2, sample_tokens=40, checkpoint=str(path)),
        budget=BudgetConfig(steps=30),
    )
    return path, config, train(config, dataset=builtin)


def test_checkpoint_is_readable_without_pickle(trained) -> None:
    path, _, _ = trained
    state = torch.load(path, weights_only=True)
    assert set(state) == {"format", "model", "config", "tokenizer"}
    assert all(isinstance(v, torch.Tensor) for v in state["model"].values())
    assert state["config"]["model"]["pos_encoding"] == "rope"


def test_loaded_model_is_the_trained_model(trained, builtin: Dataset) -> None:
    path, config, result = trained
    model, loaded_config, tokenizer = load_checkpoint(path)
    assert not model.training
    assert tokenizer == builtin.tokenizer
    assert loaded_config == replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))

    # Its logits on the fixed validation batches give the trained model's final metrics...
    x, y = builtin.validation_set(config.model.block_size, config.data.val_tokens)
    val_loss, val_accuracy = evaluate(model, x, y, config.train.batch_size, torch.device("cpu"), nullcontext())
    assert val_accuracy == result.val_accuracy
    assert val_loss == pytest.approx(result.val_loss, rel=1e-6)
    assert val_loss < 3.6  # trained, not the ln(vocab) ~ 4.6 of a fresh model

    # ...and, sampled the same way, it writes the very same sample, token by token.
    prompt = torch.tensor([[int(builtin.val[0])]])
    generator = torch.Generator().manual_seed(config.train.seed)
    out = model.generate(prompt, config.train.sample_tokens, generator=generator)
    assert tokenizer.decode(out[0].tolist()) == result.sample


def test_save_and_load_round_trip(tmp_path: Path, builtin: Dataset) -> None:
    config = RunSpec(model=GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, pos_encoding="learned"))
    torch.manual_seed(3)
    model = GPT(replace(config.model, vocab_size=builtin.tokenizer.vocab_size)).eval()
    save_checkpoint(tmp_path / "m.pt", model, config, builtin.tokenizer)
    loaded, _, _ = load_checkpoint(tmp_path / "m.pt")
    idx = torch.randint(builtin.tokenizer.vocab_size, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])
    assert loaded.lm_head.weight is loaded.wte.weight  # tying survives the round trip


@pytest.mark.parametrize("how", ["override", "flag"])
def test_cli_train_saves_a_checkpoint(how: str, tmp_path: Path) -> None:
    path = tmp_path / "cli.pt"
    option = f"train.checkpoint={path}" if how == "override" else f"--checkpoint={path}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HPO_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "hpo", "train", "--quiet", "experiment=smoke", "budget.tokens=8000", option],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(path) in proc.stdout
    state = torch.load(path, weights_only=True)
    assert state["config"]["budget"]["tokens"] == 8000
    model, config, _ = load_checkpoint(path)
    assert (config.model.n_layer, config.model.n_embd) == (model.config.n_layer, model.config.n_embd) == (2, 64)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(HpoError, match=re.escape("nothing.pt")):
        load_checkpoint(tmp_path / "nothing.pt")


def test_garbage_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(HpoError, match=re.escape("garbage.pt")):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(HpoError, match=re.escape("garbage.pt")):
        load_checkpoint(path)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_with_code_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": _Payload(marker), "tokenizer": {}}, path)
    assert not marker.exists()
    with pytest.raises(HpoError, match=re.escape("evil.pt")):
        load_checkpoint(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload is real
    assert marker.exists()


def test_torch_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(HpoError, match=re.escape("other.pt")):
        load_checkpoint(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(HpoError, match=re.escape("other.pt")):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(tmp_path: Path, builtin: Dataset) -> None:
    config = RunSpec(model=GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    model = GPT(replace(config.model, vocab_size=builtin.tokenizer.vocab_size))
    wider = replace(config, model=replace(config.model, n_embd=32))
    path = tmp_path / "mismatch.pt"
    save_checkpoint(path, model, config, builtin.tokenizer)
    state = torch.load(path, weights_only=True)
    state["config"] = replace(wider, model=replace(wider.model, vocab_size=model.config.vocab_size)).to_dict()
    torch.save(state, path)
    with pytest.raises(HpoError, match=re.escape("mismatch.pt")):
        load_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# Run states: a stopped run resumed takes the steps it would have taken


class _Stop(Exception):
    pass


def _stop_after(step: int):
    def on_eval(event: EvalEvent) -> None:
        if event.step >= step:
            raise _Stop

    return on_eval


def _resumable(n_devices: int = 1) -> RunSpec:
    """Dropout draws from torch's RNG, AdamW keeps moments, a rung is ahead: all must resume."""
    return RunSpec(
        model=GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, dropout=0.1),
        data=DataConfig(val_tokens=2048),
        optim=OptimConfig(name="adamw", lr=3e-3, warmup_frac=0.2),
        train=TrainSettings(
            batch_size=8, n_devices=n_devices, evals=4, eval_tokens=(7_000,), threads=1, sample_tokens=30
        ),
        budget=BudgetConfig(steps=40),
    )


def _with(config: RunSpec, **run: object) -> RunSpec:
    return replace(config, train=replace(config.train, **run))


def _learning(result: TrialResult) -> list[tuple[int, int, float, float, float]]:
    """The curve without its throughput, which no two runs share."""
    return [(e.step, e.tokens, e.train_loss, e.val_loss, e.val_accuracy) for e in result.curve]


def test_a_resumed_run_takes_the_same_steps(tmp_path: Path, builtin: Dataset) -> None:
    config = _resumable()
    whole = train(config, dataset=builtin)
    state = tmp_path / "run.pt"
    with pytest.raises(_Stop):
        train(_with(config, save_state=str(state)), on_eval=_stop_after(20), dataset=builtin)
    stopped_at = torch.load(state, weights_only=True)["clock"]
    assert stopped_at["steps"] == 20 and stopped_at["tokens"] == 20 * 8 * 32

    resumed = train(_with(config, save_state=str(state), resume_from=str(state)), dataset=builtin)
    assert resumed.resumed_at_tokens == 20 * 8 * 32
    assert (resumed.steps, resumed.tokens) == (whole.steps, whole.tokens) == (40, 40 * 8 * 32)
    assert _learning(resumed) == _learning(whole)  # the rung at 7,000 tokens included: [..., 7168, ...]
    assert (resumed.val_loss, resumed.val_accuracy, resumed.sample) == (
        whole.val_loss,
        whole.val_accuracy,
        whole.sample,
    )
    assert resumed.timed_time_s < resumed.train_time_s
    # the saved file follows the run to its last evaluation, and reads without pickle
    clock = torch.load(state, weights_only=True)["clock"]
    assert clock["steps"] == 40
    # throughput: over the timed steps of both parts, each after its own warm-up step
    assert len(clock["step_times"]) == 19 + 19
    assert resumed.tokens_per_sec == step_rate(8 * 32, clock["step_times"])


def test_a_run_resumes_on_two_ranks(tmp_path: Path) -> None:
    config = _resumable(n_devices=2)
    whole = run_isolated(config, timeout=300)
    state = tmp_path / "ranks.pt"
    with pytest.raises(_Stop):  # the launcher kills both ranks, as a pruner's decision does
        run_isolated(_with(config, save_state=str(state)), on_eval=_stop_after(10), timeout=300)
    resumed = run_isolated(_with(config, resume_from=str(state)), timeout=300)
    assert resumed.resumed_at_tokens >= 10 * 8 * 32  # the ranks may have saved a later evaluation
    assert _learning(resumed) == _learning(whole)
    assert resumed.sample == whole.sample


def test_a_state_resumes_only_its_own_run(tmp_path: Path, builtin: Dataset) -> None:
    config = replace(_resumable(), budget=BudgetConfig(steps=10))
    state = tmp_path / "run.pt"
    train(_with(config, save_state=str(state)), dataset=builtin)
    other = replace(config, optim=replace(config.optim, lr=1e-3))
    with pytest.raises(HpoError, match=re.escape("was saved by a run with another optim.lr")):
        train(_with(other, resume_from=str(state)), dataset=builtin)
    # where it runs is no part of the run: another thread count resumes it
    train(_with(config, resume_from=str(state), threads=2), dataset=builtin)


def test_missing_or_foreign_state_is_a_user_error(tmp_path: Path, builtin: Dataset) -> None:
    config = replace(_resumable(), budget=BudgetConfig(steps=4))
    with pytest.raises(HpoError, match=r"train.resume_from='.*nothing.pt' does not exist"):
        train(_with(config, resume_from=str(tmp_path / "nothing.pt")), dataset=builtin)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(HpoError, match="is not an hpo run state"):
        train(_with(config, resume_from=str(garbage)), dataset=builtin)
    model = tmp_path / "model.pt"
    train(_with(config, checkpoint=str(model)), dataset=builtin)
    with pytest.raises(HpoError, match="is not an hpo run state"):  # a checkpoint is not a state
        train(_with(config, resume_from=str(model)), dataset=builtin)
    torch.save({"format": STATE_FORMAT, "model": {}}, garbage)  # the right format, but a part missing
    with pytest.raises(HpoError, match="is not an hpo run state"):
        train(_with(config, resume_from=str(garbage)), dataset=builtin)


def test_files_from_before_the_scaled_sinusoidal_table_are_refused_only_for_that_table(
    tmp_path: Path, builtin: Dataset
) -> None:
    """A sinusoidal model's weights were trained against the table it was built with, which
    is rebuilt on load: one saved with the old, 35x larger table is refused, by name."""
    for pos_encoding in ("sinusoidal", "learned"):
        config = _resumable()
        config = replace(config, model=replace(config.model, pos_encoding=pos_encoding), budget=BudgetConfig(steps=4))
        model, state = tmp_path / f"{pos_encoding}.pt", tmp_path / f"{pos_encoding}-run.pt"
        train(_with(config, checkpoint=str(model), save_state=str(state)), dataset=builtin)
        old = torch.load(model, weights_only=True)
        del old["format"]  # as saved before the table was scaled
        torch.save(old, model)
        old = torch.load(state, weights_only=True)
        old["format"] = 2
        torch.save(old, state)
        if pos_encoding == "sinusoidal":
            with pytest.raises(HpoError, match="unscaled sinusoidal position table"):
                load_checkpoint(model)
            with pytest.raises(HpoError, match="unscaled sinusoidal position table"):
                train(_with(config, resume_from=str(state)), dataset=builtin)
        else:  # nothing else changed: such files go on working
            load_checkpoint(model)
            train(_with(config, resume_from=str(state)), dataset=builtin)
