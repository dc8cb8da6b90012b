"""Pareto-front arithmetic shared by the dashboard figures, reports and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.store.optuna_internals import pareto_front


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


def pareto_trials(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """`study.best_trials` (feasible trials only), of `trials` if given (light ones will do),
    else of the study's trials as Optuna's cache holds them: `best_trials` itself copies every
    trial of the study first, a second at 10,000 trials."""
    return pareto_front(study.get_trials(deepcopy=False) if trials is None else trials, study.directions)


def hypervolume_history(trials: Sequence[FrozenTrial]) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the front so far), in order of completion.

    The front is kept as the trials come: a trial that some front point matches or beats on
    every objective leaves the volume as it was; another joins the front, drops the points
    it beats, and the volume is computed again from the front alone. Linear in the trials
    for a front of a given size, where recomputing it from every trial so far was quadratic.
    """
    done = sorted(feasible_complete(trials), key=lambda t: (t.datetime_complete, t.number))
    history: list[tuple[int, float]] = []
    front: list[Sequence[float]] = []
    volume = 0.0
    for trial in done:
        point = trial.values
        if not any(_covers(kept, point) for kept in front):
            front = [kept for kept in front if not _covers(point, kept)] + [point]
            volume = hypervolume(front, (0.0,) * len(point))
        history.append((trial.number, volume))
    return history


def _covers(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether `a` is at least `b` on every objective (every one maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True))
