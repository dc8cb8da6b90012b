"""`hpo report`: a study as a folder of PNG images and one HTML page that shows them.

For people who would rather look than read, and for places the dashboard cannot go (a
mail, a wiki, an archive): the page needs no server, no script and no network, only the
images beside it, referenced by relative paths, so the folder can be moved whole.

Images are drawn with matplotlib's Agg renderer on `Figure` objects (no pyplot state) at
exactly IMAGE_SIZE pixels.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpo import __version__
from hpo.browse.figures import POINT_KEYS, X_TITLE, Y_TITLE, device_colour, front_line, points, study_curves
from hpo.browse.results import OUTCOME_KEYS, hardware_groups, objective_names, outcome_lines
from hpo.browse.tables import format_value
from hpo.config.search_space import plain_params
from hpo.errors import HpoError
from hpo.record.attrs import DATA_FINGERPRINT, HARDWARE, RETRY_HISTORY, mixed_hardware, target
from hpo.record.outcome import METRIC_BY_NAME, EvalEvent
from hpo.search.pareto import feasible_complete, hypervolume_history, pareto_trials
from hpo.store.curves import Curves
from hpo.store.optuna_internals import light_trials, whole_trials

IMAGE_SIZE = (1000, 600)  # width, height in pixels of every PNG
DPI = 100
# Fewer completed trials than this cannot rank parameters (PED-ANOVA compares the best
# trials with the rest, so it needs some of each).
MIN_IMPORTANCE_TRIALS = 2
# The importances of a bigger study come from an even sample of this many trials.
IMPORTANCE_TRIALS = 1000
# What the Pareto table shows of each trial besides its values and parameters.
PARETO_METRICS = ("params", "mfu", "peak_memory_bytes", "wall_time_s")


@dataclass(frozen=True)
class Report:
    index: Path
    images: list[Path]


def _figure() -> Figure:
    return Figure(figsize=(IMAGE_SIZE[0] / DPI, IMAGE_SIZE[1] / DPI), dpi=DPI)


def _save(figure: Figure, path: Path) -> Path:
    # No bbox_inches="tight": it would crop the image to another size than IMAGE_SIZE.
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _message(figure: Figure, title: str, text: str) -> None:
    """An image that says why there is nothing to draw, rather than no image."""
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=13, transform=axes.transAxes)


def pareto_image(study: optuna.Study, trials: Sequence[FrozenTrial], path: Path) -> Path:
    figure = _figure()
    pts = points(study, trials)
    if not pts:
        _message(figure, "Pareto front", "no completed trials yet")
        return _save(figure, path)
    axes = figure.add_subplot()
    counts = [p.n_devices for p in pts]
    for n in sorted(set(counts)):
        group = [p for p in pts if p.n_devices == n]
        axes.scatter(
            [p.tokens_per_sec for p in group],
            [p.val_accuracy for p in group],
            s=[90 if p.on_front else 35 for p in group],
            c=device_colour(n, counts),
            alpha=0.9,
            edgecolors="black",
            linewidths=[1.5 if p.on_front else 0.0 for p in group],
            label=f"{n} device{'s' if n > 1 else ''}",
            zorder=3,
        )
    xs, ys = front_line(p for p in pts if p.on_front)
    axes.step(xs, ys, where="pre", color="black", linestyle=":", label="Pareto front", zorder=2)
    for p in pts:
        if p.on_front:
            axes.annotate(f"#{p.number}", (p.tokens_per_sec, p.val_accuracy), textcoords="offset points", xytext=(6, 6))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel(X_TITLE)
    axes.set_ylabel(Y_TITLE)
    axes.set_title("Pareto front, coloured by device count (front ringed)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    return _save(figure, path)


def hypervolume_image(study: optuna.Study, trials: Sequence[FrozenTrial], path: Path) -> Path:
    figure = _figure()
    history = hypervolume_history(trials)
    names = objective_names(study)
    title = "Hypervolume history" if len(names) > 1 else f"Best {names[0]} so far"
    if not history:
        _message(figure, title, "no completed trials yet")
        return _save(figure, path)
    axes = figure.add_subplot()
    axes.step(range(1, len(history) + 1), [v for _, v in history], where="post", marker="o", color="#1f77b4")
    axes.set_xlabel("completed trials")
    axes.set_ylabel(f"hypervolume ({' x '.join(names)} above 0)" if len(names) > 1 else names[0])
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def importance_sample(study: optuna.Study, trials: Sequence[FrozenTrial]) -> optuna.Study:
    """An in-memory study of the feasible complete trials (of `trials`, light ones will do),
    read whole: all of them, or an even sample of IMPORTANCE_TRIALS by trial number. PED-ANOVA
    on a sample ranks parameters as on them all, and reading 10,000 trials whole takes 11 s."""
    done = feasible_complete(trials)
    if len(done) > IMPORTANCE_TRIALS:
        done = [done[i * len(done) // IMPORTANCE_TRIALS] for i in range(IMPORTANCE_TRIALS)]
    sample = optuna.create_study(study_name=study.study_name, directions=study.directions)
    if study.metric_names:
        sample.set_metric_names(study.metric_names)
    sample.add_trials(sorted(whole_trials(study, [t._trial_id for t in done]), key=lambda t: t.number))
    return sample


def importances(study: optuna.Study, index: int) -> dict[str, float] | str:
    """Parameter importances for objective `index`, or why there are none."""
    done = feasible_complete(study.get_trials(deepcopy=False))
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return f"needs at least {MIN_IMPORTANCE_TRIALS} completed trials; the study has {len(done)}"
    if not any(t.params for t in done):
        return "the study searches no parameters"
    # PED-ANOVA, Optuna's default evaluator, ranks what it takes to reach LOW targets.
    sign = -1.0 if study.directions[index] == StudyDirection.MAXIMIZE else 1.0
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[index])
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return f"importances could not be computed: {exc}"
    # Too few trials to separate the best from the rest: Optuna says so and returns equal shares.
    equal = any("importances will be equal" in str(w.message).lower() for w in caught)
    if equal or not values or not all(math.isfinite(v) for v in values.values()) or not any(values.values()):
        return f"{len(done)} completed trials do not yet tell the parameters apart; run more trials"
    return values


def importance_image(study: optuna.Study, index: int, path: Path) -> Path:
    name = objective_names(study)[index]
    figure = _figure()
    title = f"Parameter importances for {name}"
    values = importances(study, index)
    if isinstance(values, str):
        _message(figure, title, values)
        return _save(figure, path)
    axes = figure.add_subplot()
    ordered = sorted(values.items(), key=lambda kv: kv[1])
    axes.barh([k for k, _ in ordered], [v for _, v in ordered], color="#1f77b4")
    for y, (_, v) in enumerate(ordered):
        axes.text(v, y, f" {v:.2f}", va="center")
    axes.set_xlabel("importance (PED-ANOVA, normalized to sum 1)")
    axes.set_title(title)
    axes.set_xlim(0, max(1.0, max(values.values()) * 1.15))
    figure.tight_layout()
    return _save(figure, path)


def curves_image(study: optuna.Study, curves: Mapping[int, Sequence[EvalEvent]], path: Path) -> Path:
    figure = _figure()
    title = "Learning curves of the Pareto trials"
    if not curves:
        _message(figure, title, "no learning curves of Pareto trials are stored")
        return _save(figure, path)
    loss_axes, acc_axes = figure.subplots(2, 1, sharex=True)
    for number, events in sorted(curves.items()):
        tokens = [e.tokens for e in events]
        (line,) = loss_axes.plot(tokens, [e.val_loss for e in events], marker="o", label=f"trial {number}")
        acc_axes.plot(tokens, [e.val_accuracy for e in events], marker="o", color=line.get_color())
    loss_axes.set_ylabel("val_loss")
    acc_axes.set_ylabel("val_accuracy")
    acc_axes.set_xlabel("tokens seen")
    loss_axes.set_title(title)
    loss_axes.legend(loc="best", fontsize="small", ncols=max(1, math.ceil(len(curves) / 8)))
    for axes in (loss_axes, acc_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# --------------------------------------------------------------------------------------------------
# HTML

_STYLE = """
body { font-family: Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { white-space: pre-wrap; } .muted { color: #666; }
"""


def _e(value: object) -> str:
    return html.escape(value if isinstance(value, str) else format_value(value))


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, _Code):
                cells.append(f"<td><code>{html.escape(value.text)}</code></td>")
            else:
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                cells.append(f'<td class="num">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


@dataclass(frozen=True)
class _Code:
    text: str


def pareto_rows(
    study: optuna.Study, front: Sequence[FrozenTrial], by_hardware: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """The Pareto table: one row per front trial (whole), best first objective first; with
    `by_hardware` (a study of mixed hardware, a front for each) grouped by hardware first."""
    names = objective_names(study)
    hardware = ["hardware"] if by_hardware else []
    front = sorted(front, key=lambda t: (str(t.user_attrs.get(HARDWARE)) if by_hardware else "", -t.values[0]))
    params = sorted({k for t in front for k in plain_params(t.params)})
    devices = [] if "n_devices" in params else ["devices"]  # a searched device count is a param column
    metrics = [METRIC_BY_NAME[name] for name in PARETO_METRICS]
    headers = ["trial", *hardware, *names, *params, *devices, *(m.heading for m in metrics), "sample"]
    rows = []
    for t in front:
        attrs = t.user_attrs
        rows.append(
            [
                t.number,
                *(attrs.get(HARDWARE) for _ in hardware),
                *t.values,
                *(plain_params(t.params).get(p) for p in params),
                *(attrs.get("n_devices") for _ in devices),
                *(None if attrs.get(m.name) is None else m.shown(attrs[m.name]) for m in metrics),
                _Code(str(attrs.get("sample", ""))),
            ]
        )
    return headers, rows


def _summary(study: optuna.Study, trials: Sequence[FrozenTrial]) -> str:
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    parts = [
        f"objectives: {', '.join(objective_names(study))} (maximized)",
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running"
        + (f" (target {target(study)})" if target(study) else ""),
    ]
    parts += outcome_lines(study, trials)
    fingerprint = study.user_attrs.get(DATA_FINGERPRINT)
    if fingerprint:
        parts.append(f"data fingerprint {str(fingerprint)[:12]}")
    return "<br>\n".join(html.escape(p) for p in parts)


def _img(path: Path, alt: str) -> str:
    w, h = IMAGE_SIZE
    return f'<p><img src="{html.escape(path.name)}" width="{w}" height="{h}" alt="{html.escape(alt)}"></p>'


def _first_started(trials: Sequence[FrozenTrial]) -> str:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    return min(starts).strftime("%Y-%m-%d %H:%M") if starts else "-"


def write_report(study: optuna.Study, stored_curves: Curves | Mapping[int, Sequence[EvalEvent]], out: Path) -> Report:
    """Write `out/index.html` and its PNG images; HpoError if `out` cannot be written.

    It reads the study light (`light_trials`), its front whole, and a sample of its trials
    whole for the importances: a report of 10,000 trials costs about what one of 1,000 does.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HpoError(f"--out {out}: cannot create the folder ({exc.strerror}); choose another --out") from None
    names = objective_names(study)
    keys = (*OUTCOME_KEYS, *POINT_KEYS, *([HARDWARE] if mixed_hardware(study) else []))
    trials = light_trials(study, keys, (RETRY_HISTORY,))
    groups = hardware_groups(trials)
    front = [t for members in groups.values() for t in pareto_trials(study, members)]
    whole = whole_trials(study, [t._trial_id for t in front])
    numbers = sorted(t.number for t in front)
    if not isinstance(stored_curves, Mapping):
        stored_curves = {n: stored_curves.curve(study.study_name, n) for n in numbers}
    sample = importance_sample(study, trials)
    try:
        pareto = pareto_image(study, trials, out / "pareto_front.png")
        volume = hypervolume_image(study, trials, out / "hypervolume.png")
        importance = [importance_image(sample, i, out / f"importance_{_slug(n)}.png") for i, n in enumerate(names)]
        curves = curves_image(study, study_curves(study, stored_curves, numbers, whole), out / "learning_curves.png")
    except OSError as exc:
        raise HpoError(f"--out {out}: cannot write the images ({exc.strerror}); choose another --out") from None
    headers, rows = pareto_rows(study, whole, by_hardware=len(groups) > 1)
    name = study.study_name
    started = _first_started(trials)
    made = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [
        f"<h1>Study {html.escape(name)}</h1>",
        f'<p class="muted">first trial started {started}; report made {made} by hpo {__version__}</p>',
        f"<p>{_summary(study, trials)}</p>",
        "<h2>Pareto front</h2>",
        _img(pareto, "Pareto front: val_accuracy against tokens_per_sec, coloured by device count"),
        f"<h2>Pareto trials ({len(rows)})</h2>",
        _html_table(headers, rows) if rows else "<p>no completed trials yet</p>",
        "<h2>Hypervolume history</h2>",
        _img(volume, "hypervolume of the Pareto front after each completed trial"),
        "<h2>Parameter importances</h2>",
        *(_img(path, f"parameter importances for {n}") for path, n in zip(importance, names, strict=True)),
        "<h2>Learning curves of the Pareto trials</h2>",
        _img(curves, "validation loss and accuracy against tokens for the Pareto trials"),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>hpo report: {html.escape(name)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )
    index = out / "index.html"
    try:
        index.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise HpoError(f"--out {out}: cannot write index.html ({exc.strerror}); choose another --out") from None
    return Report(index, [pareto, volume, *importance, curves])
