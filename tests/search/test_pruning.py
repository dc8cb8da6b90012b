"""MO-ASHA ranking on hand-made rungs, rung schedules, and pruning in real studies."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.browse.results import show_text, tokens_trained
from hpo.config.search import PrunerConfig
from hpo.config.settings import HpoConfig, StudySettings
from hpo.config.training import BudgetConfig, rung_state
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent
from hpo.search.pruning import (
    crowding_distance,
    dominates,
    keeps,
    nondominated_fronts,
    optuna_pruner,
    promotable,
    ranking,
    rung_values,
)
from hpo.store.curves import CurveStore


def test_dominates_needs_strictly_better_somewhere() -> None:
    assert dominates((0.5, 10.0), (0.4, 10.0))
    assert not dominates((0.5, 10.0), (0.5, 10.0))
    assert not dominates((0.5, 5.0), (0.4, 10.0))


def test_fronts_separate_dominated_points() -> None:
    points = {"a": (0.9, 1.0), "b": (0.5, 5.0), "c": (0.4, 4.0), "d": (0.1, 0.1)}
    assert nondominated_fronts(points) == [["a", "b"], ["c"], ["d"]]


def test_crowding_keeps_extremes_infinite() -> None:
    points = {"a": (0.0, 3.0), "b": (1.0, 2.0), "c": (1.1, 1.9), "d": (3.0, 0.0)}
    crowd = crowding_distance(points, ["a", "b", "c", "d"])
    assert math.isinf(crowd["a"]) and math.isinf(crowd["d"])
    assert 0 < crowd["c"] < math.inf and 0 < crowd["b"] < math.inf


def test_dominated_trials_stop_and_nondominated_continue() -> None:
    points = {0: (0.60, 100.0), 1: (0.30, 400.0), 2: (0.20, 50.0), 3: (0.25, 80.0), 4: (0.10, 20.0), 5: (0.5, 90.0)}
    # 6 trials, eta 3: the top 2 continue, and those are the two of the first front.
    assert keeps(points, 0, eta=3, min_trials=3)
    assert keeps(points, 1, eta=3, min_trials=3)
    for dominated in (2, 3, 4, 5):
        assert not keeps(points, dominated, eta=3, min_trials=3)


def test_ties_within_a_front_go_to_the_least_crowded() -> None:
    # All on one front; two slots: the extremes (infinite crowding distance) win.
    points = {0: (0.1, 9.0), 1: (0.45, 5.1), 2: (0.5, 5.0), 3: (0.9, 1.0), 4: (0.3, 7.0), 5: (0.7, 3.0)}
    assert ranking(points)[:2] in ([0, 3], [3, 0])
    assert not keeps(points, 2, eta=3, min_trials=3, keep_front=False)


def test_keep_front_lets_every_nondominated_trial_continue() -> None:
    # Four of six on the first front: the strict rule keeps two, keep_front all four.
    points = {0: (0.1, 9.0), 1: (0.5, 5.0), 2: (0.9, 1.0), 3: (0.3, 7.0), 4: (0.2, 4.0), 5: (0.4, 0.5)}
    strict = [k for k in points if keeps(points, k, eta=3, min_trials=3, keep_front=False)]
    assert len(strict) == 2 and set(strict) <= {0, 1, 2, 3}
    assert [k for k in points if keeps(points, k, eta=3, min_trials=3)] == [0, 1, 2, 3]


def test_identical_points_keep_a_deterministic_top() -> None:
    points = dict.fromkeys(range(6), (0.5, 10.0))
    kept = [k for k in points if keeps(points, k, eta=3, min_trials=3, keep_front=False)]
    assert len(kept) == 2
    # with keep_front, no trial is beaten by another, so none stops
    assert all(keeps(points, k, eta=3, min_trials=3) for k in points)


def test_small_rungs_never_stop() -> None:
    points = {0: (0.9, 900.0), 1: (0.1, 1.0)}
    assert keeps(points, 1, eta=3, min_trials=3)
    assert keeps({7: (0.0, 0.0)}, 7, eta=2, min_trials=1)


def test_promotion_takes_a_rungs_top_floor_n_over_eta() -> None:
    assert promotable({0: (0.1, 1.0)}, eta=3) == []  # no leniency: fewer than eta promote none
    assert promotable({0: (0.1, 1.0), 1: (0.2, 2.0)}, eta=3) == []
    rung = {0: (0.1, 1.0), 1: (0.3, 3.0), 2: (0.2, 2.0), 3: (0.05, 0.5), 4: (0.0, 0.0), 5: (0.25, 0.1)}
    assert promotable(rung, eta=3) == [1, 2]  # the two best by non-dominated sorting, best first
    assert promotable(rung, eta=2) == [1, 2, 5]  # 5 is on the second front, at one end


def test_rungs_judge_accuracy_by_the_validation_loss() -> None:
    objectives = ("val_accuracy", "tokens_per_sec")
    # Trial 1 is ahead on accuracy, trial 0 on the loss, which ranks final accuracies better.
    events = {
        0: EvalEvent(step=10, tokens=2000, train_loss=2.1, val_loss=2.0, val_accuracy=0.30, tokens_per_sec=1000.0),
        1: EvalEvent(step=10, tokens=2000, train_loss=2.6, val_loss=2.5, val_accuracy=0.31, tokens_per_sec=1000.0),
    }
    by_loss = PrunerConfig(name="moasha")
    assert by_loss.rung_fields(objectives) == ["val_loss", "tokens_per_sec"]
    assert rung_values(by_loss, events[0], objectives) == (-2.0, 1000.0)
    assert rung_values(by_loss, events[0], ("tokens_per_sec",)) == (1000.0,)
    by_accuracy = PrunerConfig(name="moasha", rung_metric="val_accuracy")
    assert rung_values(by_accuracy, events[0], objectives) == (0.30, 1000.0)
    for pruner, stopped in ((by_loss, 1), (by_accuracy, 0)):
        points = {n: rung_values(pruner, e, objectives) for n, e in events.items()}
        assert not keeps(points, stopped, eta=2, min_trials=2)
        assert keeps(points, 1 - stopped, eta=2, min_trials=2)


def test_rungs_grow_by_eta_below_the_budget() -> None:
    assert PrunerConfig(name="moasha", eta=3).rungs(270_000) == [30_000, 90_000]
    # divided down from the budget: no rung a few tokens short of it (22_222 * 9 = 199_998)
    assert PrunerConfig(name="moasha", eta=3).rungs(200_000) == [22_222, 66_666]
    # a rung's kept trials go on to eta times its tokens, which must fit in the budget
    assert PrunerConfig(name="moasha", eta=2, min_tokens=1000).rungs(10_000) == [1000, 2000, 4000]
    assert PrunerConfig(name="moasha", eta=2, min_tokens=1000).rungs(8_000) == [1000, 2000, 4000]
    assert PrunerConfig(name="moasha", min_tokens=66_666).rungs(200_000) == [66_666]  # not 199_998 too
    assert PrunerConfig(name="moasha", min_tokens=22_222).rungs(200_000) == [22_222, 66_666]
    assert PrunerConfig(name="moasha", min_tokens=50_000).rungs(10_000) == []


def test_bad_pruner_settings_name_the_fix() -> None:
    with pytest.raises(HpoError, match=r"pruner\.eta=1"):
        PrunerConfig(name="moasha", eta=1)
    with pytest.raises(HpoError, match=r"pruner\.rung_metric='accuracy' is unknown; use one of val_loss, val_accuracy"):
        PrunerConfig(name="moasha", rung_metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(HpoError, match=r"pruner\.pause=true needs pruner=moasha \(got pruner=median\)"):
        PrunerConfig(name="median", pause=True)
    with pytest.raises(HpoError, match="single objective"):
        HpoConfig(search_space={"n_layer": {"low": 1, "high": 2}}, pruner=PrunerConfig(name="median"))
    with pytest.raises(HpoError, match="budget=tokens"):
        HpoConfig(
            budget=BudgetConfig(steps=10),
            search_space={"n_layer": {"low": 1, "high": 2}},
            pruner=PrunerConfig(name="moasha"),
        )
    with pytest.raises(HpoError, match=r"pruner\.min_tokens=100000 leaves no rung: .* 300000 tokens, beyond .* 66666"):
        HpoConfig(
            budget=BudgetConfig(tokens=200_000),
            search_space={"n_layer": {"low": 1, "high": 2}},
            pruner=PrunerConfig(name="moasha", min_tokens=100_000),
        )
    with pytest.raises(HpoError, match=r"pruner\.min_tokens=300000 is not below budget\.tokens=200000"):
        HpoConfig(
            budget=BudgetConfig(tokens=200_000),
            search_space={"n_layer": {"low": 1, "high": 2}},
            pruner=PrunerConfig(name="moasha", min_tokens=300_000),
        )
    single = HpoConfig(
        search_space={"n_layer": {"low": 1, "high": 2}},
        study=StudySettings(objectives=("val_accuracy",)),
        pruner=PrunerConfig(name="median"),
    )
    assert isinstance(optuna_pruner(single.pruner), optuna.pruners.MedianPruner)


def test_curve_store_answers_rung_queries(sqlite_url: str) -> None:
    store = CurveStore(optuna.storages.RDBStorage(sqlite_url).engine)
    for trial, accuracy in ((0, 0.3), (1, 0.4)):
        for step, tokens in ((1, 500), (2, 1000), (3, 1500)):
            store.record("s", trial, EvalEvent(step, tokens, 2.0, 2.0, accuracy * step, 1000.0 + trial))
    store.record("other", 0, EvalEvent(1, 5000, 1.0, 1.0, 0.9, 1.0))
    at = store.at_rung("s", 900)
    assert sorted(at) == [0, 1] and at[0].tokens == 1000 and at[1].val_accuracy == pytest.approx(0.8)
    assert [e.step for e in store.curve("s", 1)] == [1, 2, 3]
    store.forget("s")
    assert store.curves("s") == {} and store.curves("other")


TINY = [
    "experiment=smoke",
    "train.evals=3",
    "train.sample_tokens=8",
    "data.val_tokens=1024",
    "search_space.n_layer=1",
    "search_space.head_dim=16",
    "search_space.n_devices=1",
    "search_space.batch_size=16",
    "budget.tokens=36000",
    "pruner=moasha",
    "pruner.min_tokens=4000",
]


@pytest.mark.timeout(600)
def test_moasha_study_prunes_and_keeps_the_front(storage_url: str) -> None:
    """Real study, 2 workers: some trials pruned, each with its rung; the front is complete trials."""
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", "--quiet", "--n-workers", "2", "--storage", storage_url,
         *TINY, "study.name=pruned", "study.n_trials=10"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="pruned", storage=storage_url)
    trials = study.get_trials()
    assert len(trials) == 10
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    for trial in pruned:
        assert trial.user_attrs["failure_reason"] == "pruned"
        assert trial.user_attrs["failure_message"].endswith("by val_loss and tokens_per_sec")
        rung = trial.user_attrs["rung"]
        assert rung["rung_tokens"] in (4000, 12000) and rung["tokens"] >= rung["rung_tokens"]
        assert rung["tokens_per_sec"] > 0
        assert rung["budget_tokens"] == trial.user_attrs["config"]["budget"]["tokens"]  # for what stopping saved
    assert {t.number for t in study.best_trials} <= {t.number for t in complete}
    saved = sum(t.user_attrs["config"]["budget"]["tokens"] - t.user_attrs["rung"]["tokens"] for t in pruned)
    assert f"stopping {len(pruned)} of them early saved {saved:,} more" in show_text(study)
    curves = CurveStore(optuna.storages.RDBStorage(storage_url).engine).curves("pruned")
    assert set(curves) == {t.number for t in trials}  # pruned trials keep their curves too
    for trial in pruned:
        assert curves[trial.number][-1].tokens == trial.user_attrs["rung"]["tokens"]


@pytest.mark.timeout(600)
def test_pausing_study_promotes_paused_trials_from_their_rung(storage_url: str, tmp_path: Path) -> None:
    """Real study, 2 workers: trials pause at rungs, the best resume from there as new trials."""
    sqlite = storage_url.startswith("sqlite")
    folder = Path(storage_url.removeprefix("sqlite:///") + "-states") if sqlite else tmp_path / "shared"
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", "--quiet", "--n-workers", "2", "--storage", storage_url, *TINY,
         "pruner.pause=true", "pruner.eta=2", "pruner.min_tokens=8000", "study.name=paused", "study.n_trials=14",
         *([] if sqlite else [f"storage.states={folder}"])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="paused", storage=storage_url)
    trials = {t.number: t for t in study.get_trials()}
    assert len(trials) == 14
    paused = [t for t in trials.values() if t.user_attrs.get("failure_reason") == "paused"]
    promotions = [t for t in trials.values() if "continues" in t.user_attrs]
    assert paused and promotions and all(t.state == TrialState.PRUNED for t in paused)
    assert not [t for t in trials.values() if t.user_attrs.get("failure_reason") == "pruned"]  # none stopped
    continued = [t.user_attrs["continues"]["trial"] for t in promotions]
    assert len(set(continued)) == len(continued)  # no paused trial resumed twice
    curves = CurveStore(optuna.storages.RDBStorage(storage_url).engine).curves("paused")
    for promotion in promotions:
        origin = trials[promotion.user_attrs["continues"]["trial"]]
        resumed_at = origin.user_attrs["rung"]["tokens"]
        assert promotion.user_attrs["continues"]["tokens"] == resumed_at
        assert promotion.params == origin.params and promotion.user_attrs["seed"] == origin.user_attrs["seed"]
        assert curves[promotion.number][: len(curves[origin.number])] == curves[origin.number]
        if promotion.state == TrialState.COMPLETE:  # resumed at the very evaluation it paused at
            assert promotion.user_attrs["resumed_at_tokens"] == resumed_at
            assert tokens_trained(promotion) == promotion.user_attrs["tokens"] - resumed_at
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert complete and {t.number for t in study.best_trials} <= {t.number for t in complete}
    # the states left are those of the paused trials that no promotion took up, at their rungs
    waiting = [t for t in paused if t.number not in continued]
    assert {int(path.name.split("-")[1]) for path in folder.iterdir()} == {t.number for t in waiting}
    for trial in waiting:
        own = trial.system_attrs["hpo:state"][0][1]
        assert (folder / rung_state(own, trial.user_attrs["rung"]["rung_tokens"])).is_file()


@pytest.mark.postgres
def test_pausing_needs_a_shared_state_folder_on_postgres(postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", "--quiet", "--storage", postgres_url, *TINY, "pruner.pause=true",
         "study.name=nowhere"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: pruner.pause=true keeps paused runs' states in storage.states")
    assert len(result.stderr.splitlines()) == 1
    assert "nowhere" not in optuna.get_all_study_names(postgres_url)  # refused before the study existed


@pytest.mark.timeout(600)
def test_single_objective_study_uses_optunas_pruner(sqlite_url: str) -> None:
    tiny = [o for o in TINY if not o.startswith("pruner")]
    result = subprocess.run(
        [sys.executable, "-m", "hpo", "run", "--quiet", "--storage", sqlite_url, *tiny, "study.name=single",
         "study.n_trials=5", "study.objectives=[val_accuracy]", "pruner=successive_halving",
         "pruner.min_tokens=2000", "train.evals=6"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="single", storage=sqlite_url)
    assert study.metric_names == ["val_accuracy"]
    trials = study.get_trials()
    assert len(trials) == 5
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(len(t.values) == 1 for t in complete)
    # trial.report stored the curve as Optuna intermediate values, keyed by tokens.
    assert all(t.intermediate_values for t in trials if t.state != TrialState.FAIL)
