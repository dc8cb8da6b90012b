"""Pareto-front arithmetic shared by the dashboard figures, reports and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float] = (0.0, 0.0)) -> float:
    """Volume dominated by `points` (every objective maximized) beyond `reference`.

    One objective: the best value's distance from the reference. Two: the exact area, by
    a sweep over the points sorted by the first objective.
    """
    if not points:
        return 0.0
    if len(reference) == 1:
        return max(0.0, max(p[0] for p in points) - reference[0])
    assert len(reference) == 2, "hpo studies have one or two objectives"
    area, best_y = 0.0, reference[1]
    for x, y in sorted(((p[0], p[1]) for p in points), reverse=True):
        if x > reference[0] and y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def feasible_complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Completed trials that satisfied every constraint: the ones a front may contain."""
    return [t for t in trials if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())]


def hypervolume_history(study: optuna.Study) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the front so far), in order of completion."""
    done = sorted(feasible_complete(study.get_trials(deepcopy=False)), key=lambda t: (t.datetime_complete, t.number))
    history, points = [], []
    for trial in done:
        points.append(trial.values)
        history.append((trial.number, hypervolume(points, (0.0,) * len(trial.values))))
    return history
