"""The plotly figures of a study (hpo.browse.figures), on real studies and on made-up fronts."""

from __future__ import annotations

import random

import optuna
import pytest
from browse_helpers import MIXED, STUDY, browse_study, mixed_study
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from study_helpers import load

from hpo.browse.figures import (
    GRAPH_IDS,
    MAX_POINTS,
    curve_trials,
    hypervolume_figure,
    learning_curves_figure,
    pareto_figure,
    points,
    shown_points,
    study_curves,
    study_figures,
)
from hpo.search.pareto import hypervolume_history
from hpo.store.curves import CurveStore

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def browse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return browse_study(tmp_path_factory)


@pytest.fixture(scope="module")
def mixed_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return mixed_study(tmp_path_factory)


def _made_up(points_: list[tuple[float, float, int]], objectives: int = 2) -> optuna.Study:
    """An in-memory study of trials completed in order at (tokens/s, accuracy, devices)."""
    names = ["val_accuracy", "tokens_per_sec"][:objectives]
    study = optuna.create_study(directions=["maximize"] * objectives)
    study.set_metric_names(names)
    for speed, accuracy, devices in points_:
        attrs = {"tokens_per_sec": speed, "val_accuracy": accuracy, "n_devices": devices}
        study.add_trial(
            optuna.trial.create_trial(
                values=[accuracy, speed][:objectives],
                params={"n_devices": devices},
                distributions={"n_devices": CategoricalDistribution([1, 2, 4])},
                user_attrs=attrs,
                state=TrialState.COMPLETE,
            )
        )
    return study


def test_hypervolume_figure_is_the_history(browse_url: str) -> None:
    study = load(browse_url, STUDY)
    figure = hypervolume_figure(study)
    (trace,) = figure.data
    history = hypervolume_history(study.get_trials())
    assert list(trace.y) == [v for _, v in history]
    assert list(trace.x) == [1, 2, 3]
    assert figure.layout.title.text == "Hypervolume history"
    assert list(trace.y) == sorted(trace.y)  # a front only grows


def test_pareto_figure_rings_exactly_the_front(mixed_url: str) -> None:
    study = load(mixed_url, MIXED)
    front = {t.number for t in study.best_trials}
    pts = points(study)
    assert {p.number for p in pts} == {2, 3}  # the diverged and the infeasible trials are not points
    assert {p.number for p in pts if p.on_front} == front
    figure = pareto_figure(study)
    devices = [t for t in figure.data if t.mode == "markers"]
    assert [t.name for t in devices] == ["1 device", "2 devices"]
    assert devices[0].marker.color != devices[1].marker.color
    ringed = set()
    for trace in devices:
        group = [p for p in pts if p.n_devices == int(trace.name.split()[0])]
        ringed |= {p.number for p, width in zip(group, trace.marker.line.width, strict=True) if width > 0}
    assert ringed == front


def test_pareto_figure_colours_made_up_device_counts() -> None:
    study = _made_up([(100.0, 0.5, 1), (200.0, 0.4, 2), (300.0, 0.3, 4), (150.0, 0.2, 2)])
    figure = pareto_figure(study)
    markers = {t.name: t for t in figure.data if t.mode == "markers"}
    assert list(markers) == ["1 device", "2 devices", "4 devices"]
    assert len({t.marker.color for t in markers.values()}) == 3
    assert list(markers["2 devices"].marker.size) == [13, 8]  # (200, 0.4) is on the front, (150, 0.2) is not
    (line,) = [t for t in figure.data if t.name == "Pareto front"]
    assert list(line.x) == [100.0, 200.0, 300.0] and list(line.y) == [0.5, 0.4, 0.3]


def test_a_big_study_shows_its_front_its_latest_and_a_sample() -> None:
    """Past MAX_POINTS trials the Pareto figure keeps the front and the latest trial and samples
    the rest evenly; the hypervolume keeps the trials that raised it: the same staircase."""
    rng = random.Random(0)
    made = [(rng.uniform(1e4, 1e5), rng.uniform(0.1, 0.5), 1) for _ in range(MAX_POINTS + 300)]
    study = _made_up(made)
    pts = points(study)
    shown = shown_points(pts, latest=MAX_POINTS + 299)
    assert len(shown) == MAX_POINTS
    assert {p.number for p in pts if p.on_front} | {MAX_POINTS + 299} <= {p.number for p in shown}
    assert [p.number for p in shown] == sorted(p.number for p in shown)
    assert f"of {MAX_POINTS + 300:,} trials" in pareto_figure(study, latest=MAX_POINTS + 299).layout.title.text
    history = hypervolume_history(study.get_trials())
    (trace,) = hypervolume_figure(study).data
    assert len(trace.x) < 100 and trace.x[-1] == len(history)
    for count, volume in zip(trace.x, trace.y, strict=True):  # each step of the staircase is the history's
        assert history[count - 1][1] == volume
    assert [history[i][1] for i in range(len(history))] == [
        max(v for c, v in zip(trace.x, trace.y, strict=True) if c <= i + 1) for i in range(len(history))
    ]


def test_single_objective_study_gets_a_best_value_history() -> None:
    study = _made_up([(100.0, 0.5, 1), (200.0, 0.6, 1)], objectives=1)
    figure = hypervolume_figure(study)
    assert figure.layout.title.text == "Best val_accuracy so far"
    assert list(figure.data[0].y) == [0.5, 0.6]
    assert {p.number for p in points(study) if p.on_front} == {1}


def test_learning_curves_come_from_the_curve_store(mixed_url: str) -> None:
    study = load(mixed_url, MIXED)
    stored = CurveStore(optuna.storages.RDBStorage(mixed_url).engine).curves(MIXED)
    assert curve_trials(study, latest=0) == [0, 1, 2, 3]
    assert curve_trials(study, recent=0) == sorted(t.number for t in study.best_trials)
    curves = study_curves(study, stored, [2, 3])
    figure = learning_curves_figure(study, curves)
    by_name: dict[str, list] = {}
    for trace in figure.data:
        by_name.setdefault(trace.name, []).append(trace)
    assert sorted(by_name) == ["trial 2", "trial 3"]
    for number in (2, 3):
        loss, accuracy = by_name[f"trial {number}"]
        assert list(loss.x) == [e.tokens for e in stored[number]]
        assert list(loss.y) == [e.val_loss for e in stored[number]]
        assert list(accuracy.y) == [e.val_accuracy for e in stored[number]]
        assert loss.showlegend and not accuracy.showlegend


def test_figures_are_small_plain_json(browse_url: str) -> None:
    study = load(browse_url, STUDY)
    stored = CurveStore(optuna.storages.RDBStorage(browse_url).engine).curves(STUDY)
    figures = study_figures(study, stored, latest=2)
    assert list(figures) == list(GRAPH_IDS)
    for figure in figures.values():
        text = figure.to_json()
        assert "bdata" not in text  # plain lists: any plotly.js reads them
        assert len(text) < 20_000  # stored in 2 kB chunks: keep it a handful
