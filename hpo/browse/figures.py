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
from hpo.search.pareto import feasible_complete, hypervolume_history, pareto_trials
from hpo.store.curves import Curves

X_METRIC, Y_METRIC = "tokens_per_sec", "val_accuracy"
# The attributes a point is drawn from, for readers of light trials (hpo.store.optuna_internals).
POINT_KEYS = (X_METRIC, Y_METRIC, "n_devices")
X_TITLE = "tokens_per_sec (training throughput, tokens/s)"
Y_TITLE = "val_accuracy (next-token accuracy)"
# Fixed ids: saving a figure again overwrites it instead of adding one more.
GRAPH_IDS = ("hypervolume", "pareto-front", "learning-curves")
# The study-level learning-curve figure shows the Pareto trials and this many recent ones.
RECENT_CURVES = 8
# The dashboard's Pareto figure draws at most this many trials: the front, the latest, and
# an even sample of the others. Every point is JSON in the database, rewritten after each
# trial: all of 10,000 trials would be megabytes per trial (optuna-dashboard's own Pareto
# front plot shows every trial).
MAX_POINTS = 500
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


def front_numbers(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> set[int]:
    """Numbers of the trials on the Pareto front (feasible ones only), of `trials` if given."""
    return {t.number for t in pareto_trials(study, trials)}


def points(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, front: set[int] | None = None
) -> list[Point]:
    """Every feasible completed trial (of `trials` if given) as a point, in trial order;
    `front` (their front's numbers) if the caller has it already."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    names = study.metric_names or []
    front = front_numbers(study, trials) if front is None else front
    out = []
    for trial in feasible_complete(trials):
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


def shown_points(pts: Sequence[Point], latest: int | None = None, limit: int = MAX_POINTS) -> list[Point]:
    """At most `limit` of the points, in trial order: the front's, trial `latest`'s, and an
    even sample of the others (by trial number, so early and late trials are both there)."""
    if len(pts) <= limit:
        return list(pts)
    kept = [p for p in pts if p.on_front or p.number == latest]
    others = [p for p in pts if not (p.on_front or p.number == latest)]
    room = max(0, limit - len(kept))
    sample = [others[i * len(others) // room] for i in range(room)] if room else []
    return sorted(kept + sample, key=lambda p: p.number)


def pareto_figure(
    study: optuna.Study,
    trials: Sequence[FrozenTrial] | None = None,
    latest: int | None = None,
    front: set[int] | None = None,
) -> go.Figure:
    """Throughput against accuracy, one colour per device count, the front drawn and ringed;
    a study of more than MAX_POINTS trials shows that many of them (`shown_points`)."""
    every = points(study, trials, front)
    pts = shown_points(every, latest)
    title = "Pareto front, coloured by device count"
    if len(pts) < len(every):
        title += f" ({len(pts):,} of {len(every):,} trials: the front and an even sample)"
    figure = go.Figure(layout={**_LAYOUT, "title": {"text": title}})
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


def hypervolume_figure(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> go.Figure:
    """The hypervolume of the front after each completed trial, in order of completion; past
    MAX_POINTS completed trials, at the trials that raised it (the same staircase)."""
    history = hypervolume_history(study.get_trials(deepcopy=False) if trials is None else trials)
    names = study.metric_names or [f"value_{i}" for i in range(len(study.directions))]
    if len(names) == 1:
        title, y_title = f"Best {names[0]} so far", names[0]
    else:
        title = "Hypervolume history"
        y_title = f"hypervolume ({' x '.join(names)} above 0)"
    steps = list(enumerate(history, start=1))
    if len(steps) > MAX_POINTS:  # the same staircase, from the trials that raised it and the last
        raised = [step for i, step in enumerate(steps) if i == 0 or step[1][1] != steps[i - 1][1][1]]
        title += f" ({len(raised):,} of {len(steps):,} trials raised it)"
        steps = raised + ([steps[-1]] if raised[-1] is not steps[-1] else [])
    figure = go.Figure(layout={**_LAYOUT, "title": {"text": title}, "showlegend": False})
    history = [entry for _, entry in steps]
    figure.add_trace(
        go.Scatter(
            x=[count for count, _ in steps],
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


def curve_trials(
    study: optuna.Study,
    latest: int | None = None,
    recent: int = RECENT_CURVES,
    trials: Sequence[FrozenTrial] | None = None,
    front: set[int] | None = None,
) -> list[int]:
    """The trials worth a learning curve: the Pareto front, the `recent` last finished
    ones and `latest` (the trial that just finished), in trial order."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    finished = sorted((t for t in trials if t.state.is_finished()), key=lambda t: (t.datetime_complete, t.number))
    front = front_numbers(study, trials) if front is None else front
    chosen = front | {t.number for t in finished[max(0, len(finished) - recent) :]}
    if latest is not None:
        chosen.add(latest)
    return sorted(chosen)


def study_curves(
    study: optuna.Study,
    stored: Mapping[int, Sequence[EvalEvent]],
    numbers: Iterable[int],
    trials: Sequence[FrozenTrial] | None = None,
) -> dict[int, list[EvalEvent]]:
    """Curves of `numbers`: from the curve table, else from the trial's `curve` attribute."""
    by_number = {t.number: t for t in (study.get_trials(deepcopy=False) if trials is None else trials)}
    out: dict[int, list[EvalEvent]] = {}
    for number in numbers:
        events = list(stored.get(number, ()))
        if not events and number in by_number:
            events = read_curve(by_number[number])
        if events:
            out[number] = events
    return out


def learning_curves_figure(
    study: optuna.Study,
    curves: Mapping[int, Sequence[EvalEvent]],
    trials: Sequence[FrozenTrial] | None = None,
    front: set[int] | None = None,
) -> go.Figure:
    """Validation loss and accuracy against tokens seen, one line per trial in `curves`."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    front = front_numbers(study, trials) if front is None else front
    states = {t.number: t.state for t in trials}
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
    study: optuna.Study, stored_curves: Curves | Mapping[int, Sequence[EvalEvent]], latest: int | None = None
) -> dict[str, go.Figure]:
    """The study-level figures of the dashboard, by their fixed graph-object id: drawn from
    one read of the study's trials (Optuna's cache, in a worker), with the learning curves
    of the trials they show only, so that their cost does not grow with the study's curves."""
    trials = study.get_trials(deepcopy=False)
    front = front_numbers(study, trials)
    numbers = curve_trials(study, latest, trials=trials, front=front)
    if not isinstance(stored_curves, Mapping):
        stored_curves = {n: stored_curves.curve(study.study_name, n) for n in numbers}
    curves = study_curves(study, stored_curves, numbers, trials)
    figures = (
        hypervolume_figure(study, trials),
        pareto_figure(study, trials, latest, front),
        learning_curves_figure(study, curves, trials, front),
    )
    return dict(zip(GRAPH_IDS, figures, strict=True))
