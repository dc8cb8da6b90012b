"""Trial notes and study figures for optuna-dashboard (hpo.browse.notes), on real studies.

The worker publishes them after every finished trial: these tests read back what a
real `hpo run` wrote, as optuna-dashboard reads it, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import asdict

import optuna
import pytest
from browse_helpers import MIXED, STUDY, browse_study, figures_of, graph_keys, mixed_study, note_of
from optuna.trial import TrialState
from study_helpers import hpo_ok, load, tiny

from hpo.browse.figures import GRAPH_IDS
from hpo.browse.notes import save_figures, save_trial_note, trial_note
from hpo.browse.publisher import Publisher
from hpo.config.compose import compose, hpo_config
from hpo.record.outcome import EvalEvent
from hpo.search.pareto import hypervolume_history
from hpo.store.curves import CurveStore
from hpo.store.storage import open_storage
from hpo.study.lifecycle import create_or_continue
from hpo.study.worker import run_worker
from hpo.trainer.data import load_dataset

pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize"),
]


@pytest.fixture(scope="module")
def browse(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    return load(browse_study(tmp_path_factory), STUDY)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    return load(mixed_study(tmp_path_factory), MIXED)


def test_note_of_a_completed_trial_holds_its_whole_record(browse: optuna.Study) -> None:
    for trial in browse.trials:
        assert trial.state == TrialState.COMPLETE
        note = note_of(browse, trial)
        assert note == trial_note(trial, browse.metric_names)  # what the worker saved
        assert note.startswith(f"## Trial {trial.number}: complete")
        for name in ("val_accuracy", "tokens_per_sec"):
            assert f"**{name}**" in note
        for param, value in trial.params.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            assert f"| {param} | {shown} |" in note
        for fragment in (
            "Resolved training config",
            "- **model**: n_layer=1",
            "| parameters | ",
            "| FLOPs per token | ",
            "FLOP/s",
            "| MFU | ",
            "| peak memory | ",
            " MiB |",
            "| overhead (outside training steps) | ",
            "% of wall time",
            f"{trial.user_attrs['n_devices']} x {trial.user_attrs['device_name']}",
            "device ids 0",
            "### Learning curve",
            f"| {trial.user_attrs['tokens']:,} |",
            f"```text\n{trial.user_attrs['sample']}\n```",
            f"torch {trial.user_attrs['torch_version']}",
        ):
            assert fragment in note, f"{fragment!r} missing from\n{note}"
        assert "failed" not in note


def test_notes_of_trials_that_did_not_complete_say_why(mixed: optuna.Study) -> None:
    diverged, infeasible, two_devices, _ = mixed.trials
    assert diverged.state == TrialState.FAIL and infeasible.state == TrialState.PRUNED
    note = note_of(mixed, diverged)
    assert note.startswith("## Trial 0: failed (diverged)")
    assert f"> **diverged**: {diverged.user_attrs['failure_message']}" in note
    assert "- **optim**: name=adamw, lr=1e+04" in note  # the configuration that failed
    note = note_of(mixed, infeasible)
    assert note.startswith("## Trial 1: pruned (infeasible)")
    assert "n_devices=64" in note and "64 devices requested, none leased" in note
    assert "### Metrics" not in note  # it never trained
    note = note_of(mixed, two_devices)
    assert two_devices.state == TrialState.COMPLETE
    assert f"2 x {two_devices.user_attrs['device_name']}" in note and "device ids 0, 1" in note


def test_a_note_survives_markdown_in_its_values() -> None:
    trial = optuna.trial.create_trial(
        state=TrialState.FAIL,
        params={"name": "a|b"},
        distributions={"name": optuna.distributions.CategoricalDistribution(["a|b"])},
        user_attrs={"failure_reason": "crashed", "failure_message": "boom", "sample": "x ``` y\nz"},
    )
    note = trial_note(trial, ["val_accuracy"])
    assert "| name | a\\|b |" in note  # the pipe does not split the table row
    assert "````text\nx ``` y\nz\n````" in note  # the sample's fence cannot close the block


def test_a_pruned_trial_note_takes_its_curve_from_the_curve_table() -> None:
    trial = optuna.trial.create_trial(
        state=TrialState.PRUNED,
        user_attrs={
            "failure_reason": "pruned",
            "failure_message": "rung 10,240 tokens:\nnot in the top 1/3",
            "rung": {"rung_tokens": 10_000, **asdict(EvalEvent(10, 10240, 3.5, 3.4, 0.21, 50_000.0))},
        },
    )
    curve = [EvalEvent(10, 10240, 3.5, 3.4, 0.21, 50_000.0)]
    note = trial_note(trial, ["val_accuracy", "tokens_per_sec"], curve)
    assert "> **pruned**: rung 10,240 tokens:\n> not in the top 1/3" in note  # one quote, both lines
    assert "rung of 10,000 tokens, with val_loss 3.4000, val_accuracy 0.2100 and 50,000 tokens/s." in note
    assert "### Learning curve" in note and "| 10,240 | 3.5000 | 3.4000 | 0.2100 | 50,000 |" in note


def test_study_figures_have_fixed_ids_and_follow_the_trials(browse: optuna.Study) -> None:
    figures = figures_of(browse)
    assert sorted(figures) == sorted(GRAPH_IDS)
    history = hypervolume_history(browse.get_trials())
    (volume,) = figures["hypervolume"]["data"]
    assert volume["y"] == pytest.approx([v for _, v in history])  # refreshed after the last trial
    assert len(history) == 3
    curve_names = {t["name"] for t in figures["learning-curves"]["data"]}
    assert curve_names == {f"trial {t.number}" for t in browse.trials}


def test_publishing_again_overwrites_instead_of_accumulating(
    tmp_path_factory: pytest.TempPathFactory, browse: optuna.Study
) -> None:
    url = browse_study(tmp_path_factory)
    storage = open_storage(url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    before, figures = graph_keys(study), figures_of(study)
    last = study.trials[-1]
    note = note_of(study, last)
    for _ in range(2):
        save_trial_note(study, last, CurveStore(storage.engine))
        save_figures(study, CurveStore(storage.engine).curves(study.study_name), latest=last.number)
    assert graph_keys(study) == before
    assert figures_of(study) == figures
    assert note_of(study, last) == note


def test_run_publishes_notes_and_figures_on_each_backend(storage_url: str) -> None:
    name = "published"
    hpo_ok("run", *tiny(name, 2), "--storage", storage_url, "--quiet")
    study = load(storage_url, name)
    for trial in study.trials:
        assert note_of(study, trial).startswith(f"## Trial {trial.number}: ")
    figures = figures_of(study)
    assert sorted(figures) == sorted(GRAPH_IDS)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(figures["hypervolume"]["data"][0]["y"]) == len(complete)


def test_a_figure_failure_is_a_warning_and_the_study_goes_on(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("figure store unavailable")

    monkeypatch.setattr("hpo.browse.notes.save_trial_note", broken)
    monkeypatch.setattr("hpo.browse.notes.save_figures", broken)
    config = hpo_config(compose(tiny("unpublished", 2)))
    storage = open_storage(sqlite_url, config.storage)
    study = create_or_continue(config, storage, load_dataset(config.data).fingerprint)
    with Publisher(study, storage) as publish:
        assert run_worker(study, storage, config, on_trial=publish) == 2
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    err = capfd.readouterr().err
    for number in (0, 1):
        assert f"warning: dashboard note of trial {number} not saved: RuntimeError: figure store unavailable" in err
    assert "warning: dashboard figures after trial 1 not saved: RuntimeError: figure store unavailable" in err
    assert graph_keys(study) == []


def test_notes_tell_a_paused_trial_and_the_trial_that_continues_it() -> None:
    rung = {"rung_tokens": 10_000, **asdict(EvalEvent(10, 10240, 3.5, 3.4, 0.21, 50_000.0))}
    paused = optuna.trial.create_trial(
        state=TrialState.PRUNED,
        user_attrs={"failure_reason": "paused", "failure_message": "rung 10,000 tokens: paused", "rung": rung},
    )
    assert "Paused at the rung of 10,000 tokens" in trial_note(paused, ["val_accuracy", "tokens_per_sec"])
    promotion = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=[0.3, 60_000.0],
        user_attrs={"continues": {"trial": 4, "tokens": 10240, "seed": 7}},
    )
    note = trial_note(promotion, ["val_accuracy", "tokens_per_sec"])
    assert "Continues trial 4, paused at 10,240 tokens: it resumed that run there, with its seed." in note
