"""Read studies back: summaries, the Pareto front, best trials and exports."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.browse.ranking import ranking_text
from hpo.browse.tables import format_table
from hpo.config.search_space import plain_params
from hpo.record.attrs import (
    BUDGET_KEPT,
    CONFIG,
    CONTINUES,
    HARDWARE,
    REASON,
    RETRY_HISTORY,
    RUNG,
    TARGET,
    mixed_hardware,
    read_continuation,
    read_message,
    read_reason,
    read_rung,
)
from hpo.search.pareto import feasible_complete, pareto_trials
from hpo.search.promotion import superseded
from hpo.store.optuna_internals import frozen_metric_names, light_trials, light_trials_by_study, whole_trials
from hpo.study.slots import ran

# What the summaries read of every trial besides its state, values and constraints
# (`light_trials`): why it did not complete, and what its run cost (`outcome_lines`). A
# study of 10,000 trials is summed up without loading its trials whole; the front and the
# best trials, a few dozen, are read whole for their parameters.
OUTCOME_KEYS = (REASON, "tokens", RUNG, CONTINUES)


def objective_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"value_{i}" for i in range(len(study.directions))]


def studies_table(storage: optuna.storages.BaseStorage) -> str:
    """One row per study: trial counts by state and the best value of each objective. The
    studies and their trials are read once for all (`light_trials_by_study`)."""
    rows = []
    trials_of = light_trials_by_study(storage, user_keys=(REASON,))
    for study in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        trials = ran(trials_of.get(study.study_name, []))
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        names = frozen_metric_names(study) or [f"value_{i}" for i in range(len(study.directions))]
        best = _best_values(names, trials)
        rows.append(
            (
                study.study_name,
                f"{counts[TrialState.COMPLETE]}/{int(study.user_attrs.get(TARGET, 0)) or '-'}",
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


def _best_values(names: Sequence[str], trials: Sequence[FrozenTrial]) -> dict[str, float]:
    trials = feasible_complete(trials)
    if not trials:
        return {}
    return {name: max(t.values[i] for t in trials) for i, name in enumerate(names)}


def pareto_table(front: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    """The Pareto front's trials (`study.best_trials`: feasible ones only), sorted by the first objective."""
    front = sorted(front, key=lambda t: -t.values[0])
    if not front:
        return "no completed trials yet"
    params = sorted({key for t in front for key in plain_params(t.params)})
    rows = [(t.number, *t.values, *(plain_params(t.params).get(p) for p in params)) for t in front]
    return format_table(["trial", *names, *params], rows)


def show_text(study: optuna.Study) -> str:
    """Pareto front plus the best trial by each objective, as `hpo show` prints it: the
    front is `study.best_trials`, computed from every trial's values alone. A study whose
    trials ran on several kinds of hardware (`study.hardware=mixed`) has a front for each:
    their tokens/s do not compare across them."""
    names = objective_names(study)
    keys = (*OUTCOME_KEYS, HARDWARE) if mixed_hardware(study) else OUTCOME_KEYS
    every = light_trials(study, keys, (RETRY_HISTORY,), times=False)
    groups = hardware_groups(every)
    fronts = {hardware: pareto_trials(study, members) for hardware, members in groups.items()}
    trials = feasible_complete(every)
    bests = [max(trials, key=lambda t: t.values[i]) for i in range(len(names))] if trials else []
    light = [t for front in fronts.values() for t in front] + bests
    whole = {t.number: t for t in whole_trials(study, {t._trial_id for t in light})}
    parts = []
    for hardware, front in fronts.items():
        on = f" on {hardware or 'unrecorded hardware'}" if len(fronts) > 1 else ""
        parts.append(f"study {study.study_name}: Pareto front{on} ({len(front)} trials)")
        parts.append(pareto_table([whole[t.number] for t in front], names))
    for i, (name, best) in enumerate(zip(names, bests, strict=False)):
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(plain_params(whole[best.number].params).items()))
        on = f" on {best.user_attrs.get(HARDWARE)}" if len(fronts) > 1 else ""
        parts.append(f"best {name}: trial {best.number}{on} ({_fmt(best.values[i])}) {params}")
    ranking = ranking_text(study, names)
    return "\n".join(parts + outcome_lines(study, every) + ([f"\n{ranking}"] if ranking else []))


def hardware_groups(trials: Sequence[FrozenTrial]) -> dict[str | None, list[FrozenTrial]]:
    """The trials by the hardware they recorded (light ones need the HARDWARE attribute), in
    the order each first appears; one group of them all when they share one (or none recorded)."""
    groups: dict[str | None, list[FrozenTrial]] = {}
    for trial in trials:
        groups.setdefault(trial.user_attrs.get(HARDWARE), []).append(trial)
    recorded = [hardware for hardware in groups if hardware is not None]
    if len(recorded) < 2:
        return {recorded[0] if recorded else None: list(trials)}
    return groups


def outcome_lines(study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[str]:
    """The lines `hpo show` and `hpo report` both end their summary with: why trials did
    not complete, and the tokens the study trained (surplus claims of proxied workers are
    bookkeeping, left out). `trials` may be light ones with OUTCOME_KEYS."""
    trials = ran(list(trials))
    reasons = Counter(reason for t in trials if (reason := read_reason(t)) is not None)
    lines = ["not completed: " + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))] if reasons else []
    compute = _compute_text(study, trials)
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


def _compute_text(study: optuna.Study, trials: Sequence[FrozenTrial]) -> str | None:
    """The tokens a study trained and what early stopping saved, measured on its own trials:
    each stopped trial would have trained to its budget (a paused trial that was promoted
    was not stopped: its promotion went on). None before any trial trained."""
    spent = sum(tokens_trained(t) for t in trials)
    if not spent:
        return None
    continued = superseded(trials)
    stopped = [t for t in trials if t.state == TrialState.PRUNED and read_rung(t) is not None]
    budgets = _budgets(study, [t for t in stopped if t.number not in continued])
    stopped = [t for t in stopped if t.number in budgets]
    saved = sum(budgets[t.number] - _tokens_reached(t) for t in stopped)
    text = f"complete and pruned trials trained {spent:,} tokens"
    if stopped:
        text += (
            f"; stopping {len(stopped)} of them early saved {saved:,} more, "
            f"{saved / (spent + saved):.0%} of the study's cost without pruning"
        )
    return text


def _budgets(study: optuna.Study, stopped: Sequence[FrozenTrial]) -> dict[int, int]:
    """Each stopped trial's token budget, by number, if it had one in tokens (not in steps
    or seconds). Its rung record keeps it; a trial whose record hpo wrote before it did is
    read whole for its config, and only such trials are."""
    budgets: dict[int, int | None] = {}
    older = []
    for trial in stopped:
        rung = read_rung(trial)
        if rung is not None and BUDGET_KEPT in trial.user_attrs[RUNG]:
            budgets[trial.number] = rung.budget_tokens
        else:
            older.append(trial._trial_id)
    for trial in whole_trials(study, older) if older else []:
        budgets[trial.number] = trial.user_attrs.get(CONFIG, {}).get("budget", {}).get("tokens")
    return {number: int(tokens) for number, tokens in budgets.items() if tokens is not None}


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
    front = sorted(pareto_trials(study), key=lambda t: -t.values[0])
    return StudyResults(study.study_name, names, trials, [trials[t.number] for t in front])


def _record(trial: FrozenTrial, names: Sequence[str]) -> TrialRecord:
    complete = trial.state == TrialState.COMPLETE
    values = dict(zip(names, trial.values, strict=True)) if complete else None
    return TrialRecord(trial.number, trial.state.name, values, plain_params(trial.params), trial.user_attrs)


# Trials an export reads whole at a time: its memory stays that of one page, whatever the
# study's size (a study read whole takes 450 MB at 10,000 trials).
EXPORT_PAGE = 500


def _record_pages(study: optuna.Study) -> Iterator[list[dict[str, Any]]]:
    """The JSON export contract, page by page in trial order: number, state, values (null
    unless complete), params, user_attrs."""
    names = objective_names(study)
    ids = [t._trial_id for t in light_trials(study)]
    for start in range(0, len(ids), EXPORT_PAGE):
        page = sorted(whole_trials(study, ids[start : start + EXPORT_PAGE]), key=lambda t: t.number)
        records = (_record(t, names) for t in page)
        yield [{**asdict(r), "values": list(r.values.values()) if r.values else None} for r in records]


def write_export(study: optuna.Study, fmt: str, out: TextIO) -> None:
    """Every trial of the study as JSON (a list of records) or CSV, written as it is read."""
    if fmt == "json":
        _write_json(study, out)
    else:
        _write_csv(study, out)


def _write_json(study: optuna.Study, out: TextIO) -> None:
    """What `json.dumps(records, indent=2)` writes, one record at a time."""
    first = True
    for page in _record_pages(study):
        for record in page:
            text = json.dumps(record, indent=2, default=str).replace("\n", "\n  ")
            out.write(("[\n  " if first else ",\n  ") + text)
            first = False
    out.write("[]" if first else "\n]")


def _write_csv(study: optuna.Study, out: TextIO) -> None:
    """One row per trial, scalar columns only (curve, config and sample stay in JSON). The
    columns are every trial's, so the trials are read twice: once for them, once for the rows."""
    names = objective_names(study)
    params: set[str] = set()
    attrs: set[str] = set()
    for page in _record_pages(study):
        for r in page:
            params.update(r["params"])
            attrs.update(k for k, v in r["user_attrs"].items() if not isinstance(v, (dict, list)))
    attrs.discard("sample")
    writer = csv.writer(out)
    writer.writerow(["number", "state", *names, *sorted(params), *sorted(attrs)])
    for page in _record_pages(study):
        for r in page:
            values = r["values"] or [None] * len(names)
            writer.writerow(
                [
                    r["number"],
                    r["state"],
                    *values,
                    *(r["params"].get(p) for p in sorted(params)),
                    *(r["user_attrs"].get(a) for a in sorted(attrs)),
                ]
            )


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
