"""Using what a study found: `hpo train --from-trial` and `hpo retrain --front`.

One real study on the smoke preset (cut to 3 trials of 60k tokens, two of them fixed
baselines, a small fast model and a bigger slower one, so that the front holds both) is
trained once for the module; the tests train its trials again.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path

import optuna
import pytest
from study_helpers import TINY, assert_user_error, hpo, hpo_ok, load, trials

from hpo.browse.ranking import spearman
from hpo.record import attrs
from hpo.trainer.checkpoint import load_checkpoint

SMALL = "{n_layer: 1, n_head: 2, head_dim: 16, lr: 0.004, batch_size: 16, n_devices: 1}"
BIG = "{n_layer: 2, n_head: 4, head_dim: 16, lr: 0.004, batch_size: 16, n_devices: 1}"
SMOKE = (
    "experiment=smoke",
    "budget.tokens=60000",
    "train.threads=1",
    "study.n_trials=3",
    f"study.baselines=[{SMALL},{BIG}]",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a database holding the finished study `smoke`."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reuse')}/hpo.db"
    hpo_ok("run", *SMOKE, "--storage", url, "--quiet")
    return url


def _table(stdout: str) -> dict[str, list[str]]:
    """`hpo train`'s metric table: metric -> its columns."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1:]
    return rows


def test_from_trial_reproduces_the_trials_accuracy(smoke: str) -> None:
    stored = {t.number: t for t in trials(smoke, "smoke")}
    for number in (0, 1):
        result = hpo_ok("train", "--from-trial", f"smoke:{number}", "--storage", smoke, "--quiet")
        row = _table(result.stdout)["val_accuracy"]
        # Same config, seed and one pinned thread: the same steps, bit for bit.
        assert row[0] == row[1] == f"{stored[number].user_attrs['val_accuracy']:.4f}", result.stdout
        assert _table(result.stdout)["steps"][0] == str(stored[number].user_attrs["steps"])


def test_from_trial_applies_overrides_on_top(smoke: str, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    trial = trials(smoke, "smoke")[1]
    result = hpo_ok(
        "train",
        "--from-trial",
        "smoke:1",
        "--storage",
        smoke,
        "--quiet",
        "budget.tokens=30000",
        "--checkpoint",
        str(model),
    )
    assert int(_table(result.stdout)["tokens"][0].replace(",", "")) < trial.user_attrs["tokens"]
    _, config, _ = load_checkpoint(model)
    stored = trial.user_attrs[attrs.CONFIG]
    assert config.budget.tokens == 30000
    assert config.train.seed == stored["train"]["seed"] == trial.user_attrs[attrs.SEED]
    assert (config.model.n_layer, config.model.n_head, config.optim.lr) == (
        stored["model"]["n_layer"],
        stored["model"]["n_head"],
        stored["optim"]["lr"],
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--from-trial", "smoke:7"], ["no trial 7", "0-2"]),
        (["--from-trial", "smoke"], ["STUDY:N"]),
        (["--from-trial", "nope:0"], ["'nope' does not exist"]),
        (["--from-trial", "smoke:0", "budget=steps"], ["config group", "budget.tokens"]),
        (["--from-trial", "smoke:0", "model.n_layr=3"], ["model.n_layer"]),
    ],
)
def test_from_trial_bad_cases_are_one_line_errors(smoke: str, args: list[str], fragments: list[str]) -> None:
    assert_user_error(hpo("train", *args, "--storage", smoke), *fragments)


def test_from_trial_refuses_a_trial_that_did_not_complete(smoke: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copy(smoke.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    study = load(url, "smoke")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    assert_user_error(hpo("train", "--from-trial", "smoke:3", "--storage", url), "did not complete", "hpo show smoke")


def test_from_trial_refuses_changed_data(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(inspect.getsource(json.decoder) * 4)
    url = f"sqlite:///{tmp_path}/hpo.db"
    hpo_ok("run", *TINY, f"data.source={corpus}", "study.name=data", "study.n_trials=1", "--storage", url, "--quiet")
    corpus.write_text(corpus.read_text() + "more text")
    assert_user_error(hpo("train", "--from-trial", "data:0", "--storage", url), "fingerprint", "restore the data")


def test_retrain_front_links_each_trial_and_shows_the_ranking(smoke: str) -> None:
    source = load(smoke, "smoke")
    front = {t.number: t for t in source.best_trials}
    assert len(front) >= 2, "the baselines were chosen so that the front holds both"
    result = hpo_ok("retrain", "smoke", "--front", "budget.tokens=90000", "--storage", smoke, "--quiet")
    assert result.stdout == ""
    retrain = load(smoke, "smoke-retrain")
    assert retrain.user_attrs[attrs.RETRAIN_OF] == "smoke"
    done = retrain.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == len(front)
    for trial in done:
        source_record = attrs.read_source(trial)
        assert source_record is not None and source_record.study == "smoke"
        origin = front[source_record.trial]
        assert trial.params == origin.params
        assert trial.user_attrs[attrs.SEED] == origin.user_attrs[attrs.SEED] == source_record.seed
        assert trial.user_attrs[attrs.CONFIG]["budget"]["tokens"] == 90000
        assert source_record.values["val_accuracy"] == origin.values[0]
    shown = hpo_ok("show", "smoke-retrain", "--storage", smoke).stdout
    assert "retrain of smoke" in shown
    line = next(x for x in shown.splitlines() if x.startswith("rank correlation of val_accuracy"))
    sources = [attrs.read_source(t) for t in done]
    expected = spearman([s.values["val_accuracy"] for s in sources if s], [t.values[0] for t in done])
    assert line.endswith(f"{expected:+.2f}"), (line, expected)
    # Run again, it continues the same study: nothing is queued twice.
    hpo_ok("retrain", "smoke", "--front", "budget.tokens=90000", "--storage", smoke, "--quiet")
    assert len(load(smoke, "smoke-retrain").get_trials()) == len(front)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("pruner.name=moasha", "pruner"),
        ("data.val_tokens=2048", "data.*"),
        ("study.objectives=[val_accuracy]", "study.objectives"),
    ],
)
def test_retrain_refuses_what_would_break_the_comparison(smoke: str, override: str, fragment: str) -> None:
    result = hpo("retrain", "smoke", "--front", override, "--storage", smoke, "study.name=other")
    assert_user_error(result, fragment)
    assert "other" not in optuna.get_all_study_names(smoke)


def test_spearman_against_known_answers() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6*2/(3*8)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties share ranks (scipy's value)
    assert math.isnan(spearman([1], [2])) and math.isnan(spearman([1, 1], [1, 2]))
