"""Plotly figures of a study for optuna-dashboard: hypervolume, Pareto front, learning curves.

optuna-dashboard draws its own Pareto front and history, but knows neither hpo's device
count nor a hypervolume, and cannot show hpo's learning curves (multi-objective studies
have no intermediate values). These figures are stored in the study under fixed ids
(`study_figures`), so each refresh replaces the last one.

The points come from each trial's user attributes, not from its objective values, so a
study that optimizes one objective still gets both axes. Figures hold plain lists (no
numpy arrays, which plotly would encode as binary) and an empty template: the JSON stays
small, and it is stored in the database in 2 kB chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from hpo.config.search_space import plain_params
from hpo.record.attrs import read_curve
from hpo.record.outcome import EvalEvent
from hpo.search.pareto import feasible_complete, hypervolume_history

X_METRIC, Y_METRIC = "tokens_per_sec", "val_accuracy"
X_TITLE = "tokens_per_sec (training throughput, tokens/s)"
Y_TITLE = "val_accuracy (next-token accuracy)"
# Fixed ids: saving a figure again overwrites it instead of adding one more.
GRAPH_IDS = ("hypervolume", "pareto-front", "learning-curves")
# The study-level learning-curve figure shows the Pareto trials and this many recent ones.
RECENT_CURVES = 8
# One colour per device count (1, 2, 4, 8, ...), the same in the dashboard and the report.
DEVICE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_LAYOUT: dict[str, Any] = {
    "template": "none",
    "font": {"family": "Arial, sans-serif", "size": 12},
    "margin": {"l": 70, "r": 20, "t": 50, "b": 60},
    "hovermode": "closest",
    "legend": {"orientation": "h", "y": -0.2},
}


@dataclass(frozen=True)
class Point:
    """One feasible, completed trial in the accuracy/throughput plane."""

    number: int
    tokens_per_sec: float
    val_accuracy: float
    n_devices: int
    on_front: bool
    params: Mapping[str, Any]


def device_colour(n_devices: int, all_counts: Sequence[int]) -> str:
    return DEVICE_COLOURS[sorted(set(all_counts)).index(n_devices) % len(DEVICE_COLOURS)]


def _metric(trial: FrozenTrial, name: str, names: Sequence[str]) -> float | None:
    value = trial.user_attrs.get(name)
    if value is None and name in names and trial.values is not None:
        value = trial.values[list(names).index(name)]
    return None if value is None else float(value)


def front_numbers(study: optuna.Study) -> set[int]:
    """Numbers of the trials on the Pareto front (feasible ones only)."""
    return {t.number for t in study.best_trials} if feasible_complete(study.get_trials(deepcopy=False)) else set()


def points(study: optuna.Study) -> list[Point]:
    """Every feasible completed trial as a point, in trial order."""
    names = study.metric_names or []
    front = front_numbers(study)
    out = []
    for trial in feasible_complete(study.get_trials(deepcopy=False)):
        x, y = _metric(trial, X_METRIC, names), _metric(trial, Y_METRIC, names)
        if x is None or y is None:
            continue
        params = plain_params(trial.params)
        n_devices = int(trial.user_attrs.get("n_devices", params.get("n_devices", 1)))
        out.append(Point(trial.number, x, y, n_devices, trial.number in front, params))
    return out


def front_line(front: Iterable[Point]) -> tuple[list[float], list[float]]:
    """The staircase that bounds the dominated region, by rising throughput."""
    ordered = sorted(front, key=lambda p: (p.tokens_per_sec, -p.val_accuracy))
    return [p.tokens_per_sec for p in ordered], [p.val_accuracy for p in ordered]


def _hover(point: Point) -> str:
    params = "<br>".join(f"{k} = {_short(v)}" for k, v in point.params.items())
    front = " (Pareto front)" if point.on_front else ""
    return (
        f"trial {point.number}{front}<br>val_accuracy {point.val_accuracy:.4f}<br>"
        f"tokens/s {point.tokens_per_sec:,.0f}<br>devices {point.n_devices}<br>{params}"
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def pareto_figure(study: optuna.Study) -> go.Figure:
    """Throughput against accuracy, one colour per device count, the front drawn and ringed."""
    pts = points(study)
    figure = go.Figure(layout={**_LAYOUT, "title": {"text": "Pareto front, coloured by device count"}})
    counts = [p.n_devices for p in pts]
    for n in sorted(set(counts)):
        group = [p for p in pts if p.n_devices == n]
        figure.add_trace(
            go.Scatter(
                x=[p.tokens_per_sec for p in group],
                y=[p.val_accuracy for p in group],
                mode="markers",
                name=f"{n} device{'s' if n > 1 else ''}",
                marker={
                    "color": device_colour(n, counts),
                    "size": [13 if p.on_front else 8 for p in group],
                    "opacity": [1.0 if p.on_front else 0.55 for p in group],
                    "line": {"color": "black", "width": [2 if p.on_front else 0 for p in group]},
                },
                text=[_hover(p) for p in group],
                hoverinfo="text",
            )
        )
    xs, ys = front_line(p for p in pts if p.on_front)
    if xs:
        figure.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line={"color": "black", "dash": "dot", "shape": "vh"}, name="Pareto front"
            )
        )
    figure.update_xaxes(title_text=X_TITLE)
    figure.update_yaxes(title_text=Y_TITLE)
    return figure


def hypervolume_figure(study: optuna.Study) -> go.Figure:
    """The hypervolume of the front after each completed trial, in order of completion."""
    history = hypervolume_history(study)
    names = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    if len(names) == 1:
        title, y_title = f"Best {names[0]} so far", names[0]
    else:
        title = "Hypervolume history"
        y_title = f"hypervolume ({' x '.join(names)} above 0)"
    figure = go.Figure(layout={**_LAYOUT, "title": {"text": title}, "showlegend": False})
    figure.add_trace(
        go.Scatter(
            x=list(range(1, len(history) + 1)),
            y=[volume for _, volume in history],
            mode="lines+markers",
            line={"shape": "hv", "color": "#1f77b4"},
            text=[f"after trial {number}: {volume:.6g}" for number, volume in history],
            hoverinfo="text",
            name="hypervolume",
        )
    )
    figure.update_xaxes(title_text="completed trials")
    figure.update_yaxes(title_text=y_title)
    return figure


def curve_trials(study: optuna.Study, latest: int | None = None, recent: int = RECENT_CURVES) -> list[int]:
    """The trials worth a learning curve: the Pareto front, the `recent` last finished
    ones and `latest` (the trial that just finished), in trial order."""
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
        key=lambda t: (t.datetime_complete, t.number),
    )
    chosen = front_numbers(study) | {t.number for t in finished[max(0, len(finished) - recent) :]}
    if latest is not None:
        chosen.add(latest)
    return sorted(chosen)


def study_curves(
    study: optuna.Study, stored: Mapping[int, Sequence[EvalEvent]], numbers: Iterable[int]
) -> dict[int, list[EvalEvent]]:
    """Curves of `numbers`: from the curve table, else from the trial's `curve` attribute."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    out: dict[int, list[EvalEvent]] = {}
    for number in numbers:
        events = list(stored.get(number, ()))
        if not events and number in by_number:
            events = read_curve(by_number[number])
        if events:
            out[number] = events
    return out


def learning_curves_figure(study: optuna.Study, curves: Mapping[int, Sequence[EvalEvent]]) -> go.Figure:
    """Validation loss and accuracy against tokens seen, one line per trial in `curves`."""
    front = front_numbers(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    figure.update_layout(
        **_LAYOUT, title={"text": "Learning curves (Pareto trials solid, others dotted)"}, showlegend=True
    )
    for i, (number, events) in enumerate(sorted(curves.items())):
        colour = DEVICE_COLOURS[i % len(DEVICE_COLOURS)]
        state = states.get(number, TrialState.COMPLETE)
        label = f"trial {number}" + ("" if state == TrialState.COMPLETE else f" ({state.name.lower()})")
        line = {"color": colour, "dash": "solid" if number in front else "dot"}
        tokens = [e.tokens for e in events]
        for row, metric in ((1, "val_loss"), (2, "val_accuracy")):
            figure.add_trace(
                go.Scatter(
                    x=tokens,
                    y=[getattr(e, metric) for e in events],
                    mode="lines+markers",
                    line=line,
                    name=label,
                    legendgroup=str(number),
                    showlegend=row == 1,
                    hovertemplate=f"{label}<br>%{{x:,}} tokens<br>{metric} %{{y:.4f}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    figure.update_yaxes(title_text="val_loss", row=1, col=1)
    figure.update_yaxes(title_text="val_accuracy", row=2, col=1)
    figure.update_xaxes(title_text="tokens seen", row=2, col=1)
    return figure


def study_figures(
    study: optuna.Study, stored_curves: Mapping[int, Sequence[EvalEvent]], latest: int | None = None
) -> dict[str, go.Figure]:
    """The study-level figures of the dashboard, by their fixed graph-object id."""
    curves = study_curves(study, stored_curves, curve_trials(study, latest))
    return dict(
        zip(
            GRAPH_IDS,
            (hypervolume_figure(study), pareto_figure(study), learning_curves_figure(study, curves)),
            strict=True,
        )
    )
