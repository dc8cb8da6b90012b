"""What optuna-dashboard shows of a trial: a markdown note, and the study's figures.

A note is the whole record of one finished trial in a page: outcome, configuration,
every metric with its unit, devices, where the time went, the learning curve, a text
sample of the trained model and, when it did not complete, why. `save_trial_note` writes
it and `save_figures` refreshes the study-level figures (hpo.browse.figures); the publisher
calls both after each trial (hpo.browse.publisher).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.browse.figures import study_figures
from hpo.browse.results import objective_names
from hpo.browse.tables import format_value
from hpo.config.search_space import plain_params
from hpo.record.attrs import (
    CONFIG,
    CURVE,
    DEVICES,
    HARDWARE,
    HOST,
    HPO_VERSION,
    OPTUNA_VERSION,
    SEED,
    read_continuation,
    read_message,
    read_reason,
    read_rung,
)
from hpo.record.outcome import EvalEvent, Reason, shown_metrics
from hpo.store.curves import Curves
from hpo.store.optuna_internals import finished_trial

_STATE_WORDS = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.PRUNED: "pruned"}
# Learning-curve rows shown in a note; longer curves are thinned, keeping the last point.
MAX_CURVE_ROWS = 12


def _cell(value: object) -> str:
    """A value fit for a markdown table cell: no pipes or line breaks to break the row."""
    text = value if isinstance(value, str) else format_value(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _code_block(text: str) -> str:
    """A fenced block that no run of backticks inside `text` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _metric_rows(attrs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, value with unit) for every metric the trial recorded."""
    rows = []
    for metric, value in shown_metrics(attrs):
        text = metric.text(value)
        if metric.name == "overhead_s" and attrs.get("wall_time_s"):
            text += f" ({100 * value / attrs['wall_time_s']:.0f} % of wall time)"
        rows.append((metric.label, text))
    return rows


def _devices(attrs: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    n = attrs.get("n_devices", params.get("n_devices"))
    if n is None:
        return None
    name = attrs.get("device_name")
    kind = ", ".join(str(attrs[k]) for k in ("device", "dtype") if attrs.get(k))
    text = f"{n} x {name}" if name else f"{n} device{'s' if n != 1 else ''}"
    if kind:
        text += f" ({kind})"
    if attrs.get(DEVICES) is not None:
        text += f", device ids {', '.join(map(str, attrs[DEVICES]))}"
    else:
        text += " requested, none leased"
    if attrs.get(HOST):
        text += f", host {attrs[HOST]}"
    if attrs.get(HARDWARE):
        text += f"; tokens/s measured on {attrs[HARDWARE]}"
    return text


def _config_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One row per config group (model, data, optim, ...): `key=value` pairs."""
    rows = []
    for group, values in config.items():
        if isinstance(values, Mapping):
            rows.append((group, ", ".join(f"{k}={_value(v)}" for k, v in values.items() if v is not None)))
        else:
            rows.append((group, _value(values)))
    return rows


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def _curve_rows(curve: Sequence[Mapping[str, Any]]) -> list[tuple[object, ...]]:
    if len(curve) > MAX_CURVE_ROWS:
        step = len(curve) / (MAX_CURVE_ROWS - 1)
        curve = [*(curve[int(i * step)] for i in range(MAX_CURVE_ROWS - 1)), curve[-1]]
    return [
        (e["tokens"], f"{e['train_loss']:.4f}", f"{e['val_loss']:.4f}", f"{e['val_accuracy']:.4f}", e["tokens_per_sec"])
        for e in curve
    ]


def trial_note(trial: FrozenTrial, objective_names: Sequence[str], curve: Sequence[EvalEvent] | None = None) -> str:
    """The markdown note of a finished trial, from its user attributes.

    Only completed trials keep their learning curve in an attribute; `curve` (from the
    curve table) gives that of a pruned or failed one.
    """
    attrs, state = trial.user_attrs, trial.state
    reason = read_reason(trial)
    heading = f"## Trial {trial.number}: {_STATE_WORDS.get(state, state.name.lower())}"
    if reason:
        heading += f" ({reason})"
    parts = [heading]
    if state == TrialState.COMPLETE and trial.values is not None:
        parts.append(
            " · ".join(f"**{n}** {format_value(v)}" for n, v in zip(objective_names, trial.values, strict=False))
        )
    if reason:
        message = read_message(trial).strip().replace("\n", "\n> ")
        parts.append(f"> **{reason}**: {message}".rstrip())
    continues = read_continuation(trial)
    if continues is not None:
        parts.append(
            f"Continues trial {continues.trial}, paused at {continues.tokens:,} tokens: "
            "it resumed that run there, with its seed."
        )
    rung = read_rung(trial)
    if rung is not None:
        verb = "Paused" if reason == Reason.PAUSED else "Stopped"
        event = rung.event
        parts.append(
            f"{verb} at the rung of {rung.rung_tokens:,} tokens, with val_loss {event.val_loss:.4f}, "
            f"val_accuracy {event.val_accuracy:.4f} and {event.tokens_per_sec:,.0f} tokens/s."
        )
    parts.append("### Configuration")
    if trial.params:
        sampled = plain_params(trial.params).items()
        parts.append(_table(["sampled parameter", "value"], [(k, _value(v)) for k, v in sampled]))
    config = attrs.get(CONFIG)
    if isinstance(config, Mapping):
        rows = "\n".join(f"- **{group}**: {_cell(settings)}" for group, settings in _config_rows(config))
        parts.append(f"Resolved training config:\n\n{rows}")
    elif not trial.params:
        parts.append("No configuration was recorded.")
    metrics = _metric_rows(attrs)
    if metrics:
        parts += ["### Metrics", _table(["metric", "value"], metrics)]
    devices = _devices(attrs, plain_params(trial.params))
    if devices:
        parts += ["### Devices", devices]
    curve_points = attrs.get(CURVE) or [asdict(e) for e in curve or ()]
    if curve_points:
        parts += [
            "### Learning curve",
            _table(["tokens", "train_loss", "val_loss", "val_accuracy", "tokens/s"], _curve_rows(curve_points)),
        ]
    if attrs.get("sample"):
        parts += ["### Text sample", _code_block(str(attrs["sample"]))]
    provenance = [f"{k} {attrs[k]}" for k in (HPO_VERSION, "torch_version", OPTUNA_VERSION, SEED) if k in attrs]
    if provenance:
        parts.append("*" + " · ".join(p.replace("_version", "") for p in provenance) + "*")
    return "\n\n".join(parts) + "\n"


def save_trial_note(study: optuna.Study, trial: FrozenTrial, curves: Curves) -> None:
    """Save `trial`'s note, where optuna-dashboard shows it on the trial's page."""
    from optuna_dashboard import save_note

    curve = None if trial.user_attrs.get(CURVE) else curves.curve(study.study_name, trial.number)
    save_note(finished_trial(study, trial), trial_note(trial, objective_names(study), curve))


def save_figures(
    study: optuna.Study, curves: Curves | Mapping[int, list[EvalEvent]], latest: int | None = None
) -> None:
    """Refresh the study's figures in optuna-dashboard, with trial `latest` highlighted.

    Figures are rewritten whole under fixed ids, chunk by chunk: a caller with several
    workers on a study holds the study lock (hpo.store.locks.study_lock) around this call, so
    two workers never interleave their chunks, and the last writer has seen every trial.
    """
    from optuna_dashboard import save_plotly_graph_object

    for graph_id, figure in study_figures(study, curves, latest=latest).items():
        save_plotly_graph_object(study, figure, graph_object_id=graph_id)
