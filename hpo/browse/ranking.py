"""Did the winner stay the winner? A `hpo retrain` study's trials against their sources.

A search at a small budget ranks configurations by what they reach early; retraining its
front at a bigger budget tells whether that ranking holds. `hpo show` of a retrain study
prints each trial beside the one it trains again and Spearman's rank correlation of
their values: 1 when the order held, about 0 when the small budget said nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from hpo.browse.tables import format_table
from hpo.record.attrs import RETRAIN_OF, read_source


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            result[i] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's of the ranks); NaN for fewer than 2 pairs or
    a constant side, where no order exists to compare."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} values against {len(ys)}")
    if len(xs) < 2:
        return math.nan
    rx, ry = ranks(xs), ranks(ys)
    mean = (len(xs) + 1) / 2
    cov = sum((a - mean) * (b - mean) for a, b in zip(rx, ry, strict=True))
    norm = math.sqrt(sum((a - mean) ** 2 for a in rx) * sum((b - mean) ** 2 for b in ry))
    return cov / norm if norm else math.nan


def ranking_text(study: optuna.Study, names: Sequence[str]) -> str | None:
    """How the source study's ranking held in this retrain study, or None if it is not one."""
    source_study = study.user_attrs.get(RETRAIN_OF)
    if source_study is None:
        return None
    pairs = [
        (source, trial)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (source := read_source(trial)) is not None
    ]
    if not pairs:
        return f"retrain of {source_study}: no trial complete yet"
    headers = ["trial", f"{source_study} trial"]
    for name in names:
        headers += [f"{name} before", f"{name} now"]
    rows = [
        (
            trial.number,
            source.trial,
            *(v for i, name in enumerate(names) for v in (source.values[name], trial.values[i])),
        )
        for source, trial in sorted(pairs, key=lambda pair: -pair[1].values[0])
    ]
    lines = [f"retrain of {source_study}: {len(pairs)} front trials at the new budget", format_table(headers, rows)]
    for i, name in enumerate(names):
        rho = spearman([source.values[name] for source, _ in pairs], [trial.values[i] for _, trial in pairs])
        shown = "n/a (needs 2 trials with different values)" if math.isnan(rho) else f"{rho:+.2f}"
        lines.append(f"rank correlation of {name} between the budgets (Spearman): {shown}")
    return "\n".join(lines)
