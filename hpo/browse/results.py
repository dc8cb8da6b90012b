"""Read studies back: summaries, the Pareto front, best trials and exports."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.browse.ranking import ranking_text
from hpo.browse.tables import format_table
from hpo.config.search_space import plain_params
from hpo.record.attrs import CONFIG, read_continuation, read_message, read_reason, read_rung, target
from hpo.search.pareto import feasible_complete
from hpo.search.promotion import superseded
from hpo.study.slots import ran


def objective_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"value_{i}" for i in range(len(study.directions))]


def studies_table(storage: optuna.storages.BaseStorage) -> str:
    """One row per study: trial counts by state and the best value of each objective."""
    rows = []
    for summary in sorted(optuna.get_all_study_summaries(storage), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = ran(study.get_trials(deepcopy=False))
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        best = _best_values(study)
        rows.append(
            (
                summary.study_name,
                f"{counts[TrialState.COMPLETE]}/{target(study) or '-'}",
                counts[TrialState.RUNNING],
                counts[TrialState.PRUNED],
                counts[TrialState.FAIL],
                ", ".join(f"{name} {_fmt(v)}" for name, v in best.items()) or "-",
            )
        )
    if not rows:
        return "no studies"
    return format_table(["study", "complete/target", "running", "pruned", "failed", "best"], rows)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def _best_values(study: optuna.Study) -> dict[str, float]:
    trials = feasible_complete(study.get_trials(deepcopy=False))
    if not trials:
        return {}
    return {name: max(t.values[i] for t in trials) for i, name in enumerate(objective_names(study))}


def pareto_table(front: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    """The Pareto front's trials (`study.best_trials`: feasible ones only), sorted by the first objective."""
    front = sorted(front, key=lambda t: -t.values[0])
    if not front:
        return "no completed trials yet"
    params = sorted({key for t in front for key in plain_params(t.params)})
    rows = [(t.number, *t.values, *(plain_params(t.params).get(p) for p in params)) for t in front]
    return format_table(["trial", *names, *params], rows)


def show_text(study: optuna.Study) -> str:
    """Pareto front plus the best trial by each objective, as `hpo show` prints it."""
    names, front = objective_names(study), study.best_trials
    parts = [f"study {study.study_name}: Pareto front ({len(front)} trials)", pareto_table(front, names)]
    every = study.get_trials(deepcopy=False)
    trials = feasible_complete(every)
    for i, name in enumerate(names):
        if trials:
            best = max(trials, key=lambda t: t.values[i])
            params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(plain_params(best.params).items()))
            parts.append(f"best {name}: trial {best.number} ({_fmt(best.values[i])}) {params}")
    ranking = ranking_text(study, names)
    return "\n".join(parts + outcome_lines(every) + ([f"\n{ranking}"] if ranking else []))


def outcome_lines(trials: Sequence[FrozenTrial]) -> list[str]:
    """The lines `hpo show` and `hpo report` both end their summary with: why trials did
    not complete, and the tokens the study trained (surplus claims of proxied workers are
    bookkeeping, left out)."""
    trials = ran(list(trials))
    reasons = Counter(reason for t in trials if (reason := read_reason(t)) is not None)
    lines = ["not completed: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))] if reasons else []
    compute = _compute_text(trials)
    return lines + ([compute] if compute else [])


def tokens_trained(trial: FrozenTrial) -> int:
    """Training tokens a trial cost: its whole budget if complete, up to the evaluation that
    stopped it if pruned (0 if it never trained: an infeasible configuration, a failure),
    less the tokens of the paused trial that it resumed, if it is one's promotion (those
    count once, with the paused trial)."""
    reached = _tokens_reached(trial)
    continuation = read_continuation(trial)
    resumed = continuation.tokens if continuation is not None else 0
    return reached - resumed if reached else 0


def _tokens_reached(trial: FrozenTrial) -> int:
    """How far a trial's run got, counting from its very first step."""
    if trial.state == TrialState.COMPLETE:
        return int(trial.user_attrs.get("tokens", 0))
    rung = read_rung(trial) if trial.state == TrialState.PRUNED else None
    return rung.event.tokens if rung is not None else 0


def _compute_text(trials: Sequence[FrozenTrial]) -> str | None:
    """The tokens a study trained and what early stopping saved, measured on its own trials:
    each stopped trial would have trained to its budget (a paused trial that was promoted
    was not stopped: its promotion went on). None before any trial trained."""
    spent = sum(tokens_trained(t) for t in trials)
    if not spent:
        return None
    continued = superseded(trials)
    stopped = [t for t in trials if t.state == TrialState.PRUNED and read_rung(t) is not None]
    stopped = [t for t in stopped if t.number not in continued]
    saved = sum(int(t.user_attrs[CONFIG]["budget"]["tokens"]) - _tokens_reached(t) for t in stopped)
    text = f"complete and pruned trials trained {spent:,} tokens"
    if stopped:
        text += (
            f"; stopping {len(stopped)} of them early saved {saved:,} more, "
            f"{saved / (spent + saved):.0%} of the study's cost without pruning"
        )
    return text


@dataclass(frozen=True)
class TrialRecord:
    """One trial as hpo reads it back: its objective values by name (None unless complete),
    its parameters as the search space names them, and every attribute hpo stored with it
    (the metrics of hpo.record.outcome.TrialResult, `config`, `curve`, `failure_reason`...)."""

    number: int
    state: str
    values: dict[str, float] | None
    params: dict[str, Any]
    user_attrs: dict[str, Any]

    @property
    def config(self) -> dict[str, Any] | None:
        """The resolved training config the trial ran (None if it never started)."""
        return self.user_attrs.get(CONFIG)


@dataclass(frozen=True)
class StudyResults:
    """A stored study's trials and its Pareto front (feasible complete trials that no other
    beats on every objective), best first by the first objective."""

    name: str
    objectives: list[str]
    trials: list[TrialRecord]
    front: list[TrialRecord]

    def trial(self, number: int) -> TrialRecord:
        return next(t for t in self.trials if t.number == number)


def study_results(study: optuna.Study) -> StudyResults:
    names = objective_names(study)
    trials = [_record(t, names) for t in study.get_trials(deepcopy=False)]
    front = sorted(study.best_trials, key=lambda t: -t.values[0])
    return StudyResults(study.study_name, names, trials, [trials[t.number] for t in front])


def _record(trial: FrozenTrial, names: Sequence[str]) -> TrialRecord:
    complete = trial.state == TrialState.COMPLETE
    values = dict(zip(names, trial.values, strict=True)) if complete else None
    return TrialRecord(trial.number, trial.state.name, values, plain_params(trial.params), trial.user_attrs)


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The JSON export contract: number, state, values (null unless complete), params, user_attrs."""
    records = study_results(study).trials
    return [{**asdict(r), "values": list(r.values.values()) if r.values else None} for r in records]


def export(study: optuna.Study, fmt: str) -> str:
    records = trial_records(study)
    if fmt == "json":
        return json.dumps(records, indent=2, default=str)
    # CSV: one row per trial, scalar columns only (curve, config and sample stay in JSON).
    names = objective_names(study)
    params = sorted({k for r in records for k in r["params"]})
    attrs = sorted(
        {k for r in records for k, v in r["user_attrs"].items() if not isinstance(v, (dict, list))} - {"sample"}
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", *names, *params, *attrs])
    for r in records:
        values = r["values"] or [None] * len(names)
        writer.writerow(
            [
                r["number"],
                r["state"],
                *values,
                *(r["params"].get(p) for p in params),
                *(r["user_attrs"].get(a) for a in attrs),
            ]
        )
    return out.getvalue()


def trial_line(trial: FrozenTrial, names: list[str]) -> str:
    """A finished trial on one line, for the progress output."""
    params = " ".join(f"{k}={_short(v)}" for k, v in sorted(plain_params(trial.params).items()))
    if trial.state == TrialState.COMPLETE:
        values = "  ".join(f"{n} {_fmt(v)}" for n, v in zip(names, trial.values, strict=True))
        seconds = trial.user_attrs.get("wall_time_s")
        return f"trial {trial.number:>3} done   {values}  ({seconds:.1f} s)  {params}"
    reason = read_reason(trial) or trial.state.name.lower()
    message = read_message(trial)
    return f"trial {trial.number:>3} {trial.state.name.lower():<6} {reason}: {message}  {params}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
