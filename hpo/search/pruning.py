"""Early stopping for hpo's studies: multi-objective asynchronous successive halving.

MO-ASHA (Schmucker et al. 2021): rungs at token budgets r_min * eta^k, each at most the
budget / eta. When a trial reaches a rung it continues only if it ranks in the top 1/eta of
all trials that reached that rung, ranked by non-dominated sorting of its objectives at
the rung, ties within a front broken by crowding distance (NSGA-II's, which keeps the
ends and the sparse parts of a front). A rung with fewer than `min_trials` trials stops
no one: a trial is never pruned for lack of company. Decisions are asynchronous, with
what the database knows when the trial arrives, so workers never wait for each other.

One departure from the paper, on by default (`keep_front`): a trial on the rung's first
non-dominated front always continues, even when that front holds more than 1/eta of the
rung. The paper's studies have hundreds of trials per rung; hpo's have tens, and with two
objectives the first front of a few trials is often larger than their top third, so the
strict rule stops trials that no other trial beats, which is exactly what the final
hypervolume needs. n random points in the plane have about ln(n) on their first front, so
the savings stay those of successive halving as rungs fill (scripts/bench_search.py
measures both rules).

The values at a rung are the trial's own measurements so far: its loss on the fixed
validation set and its throughput over its timed steps (warm-up excluded). A pruned
trial keeps them as its record; no trial's final throughput ever comes from a rung.

A second departure (`rung_metric`): the accuracy objective is judged at a rung by the
validation loss, not by the accuracy itself. Early next-token accuracy sits on plateaus
(on the builtin corpus many trials read 0.112, then 0.220, for several evaluations: the
commonest characters), while the loss keeps falling, and it ranks the trials' final
accuracies better. Over six pools of 192 trials, Spearman's correlation with the final
accuracy was 0.65 to 0.78 for the loss against 0.53 to 0.65 for the accuracy at the
budget / 9, and 0.83 to 0.87 against 0.70 to 0.80 at the budget / 3
(scripts/replay_pruning.py prints them). Throughput at a rung needs no stand-in: its
correlation with the final throughput was 0.98 to 1.00.

With `pause`, a rung pauses the trials it does not keep instead of stopping them: ASHA's
promotion type. A trial arriving at a rung goes on only if it ranks in the rung's top
floor(n/eta), with no leniency for small rungs or the first front, since a paused trial is
not lost: its run keeps its state at the rung (hpo.trainer.checkpoint), and as the rung fills, a
paused trial that ranks in its top floor(n/eta) resumes as a new trial (hpo.search.promotion).
The first trials of a search then no longer run to the end for lack of company.

Single-objective studies use Optuna's pruners through `trial.report` instead.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import optuna

from hpo.config.search import PrunerConfig
from hpo.record.outcome import EvalEvent

K = TypeVar("K", bound=Hashable)


def rung_values(config: PrunerConfig, event: EvalEvent, objectives: Sequence[str]) -> tuple[float, ...]:
    """What a rung compares of a trial, one value per objective, all maximized (a loss
    negated)."""
    fields = config.rung_fields(list(objectives))
    return tuple(-event.val_loss if f == "val_loss" else getattr(event, f) for f in fields)


def optuna_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner | None:
    """Optuna's pruner for a single-objective study (None for none and moasha)."""
    if config.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=config.min_trials)
    if config.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=config.min_tokens or "auto", reduction_factor=config.eta
        )
    if config.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=config.min_tokens or 1, reduction_factor=config.eta)
    return None


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is at least as good as b everywhere and better somewhere (all maximized)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def nondominated_fronts(points: Mapping[K, Sequence[float]]) -> list[list[K]]:
    """Keys grouped into successive Pareto fronts, best first (maximization)."""
    remaining = dict(points)
    fronts = []
    while remaining:
        front = [k for k, p in remaining.items() if not any(dominates(q, p) for q in remaining.values())]
        fronts.append(front)
        for k in front:
            del remaining[k]
    return fronts


def crowding_distance(points: Mapping[K, Sequence[float]], front: Sequence[K]) -> dict[K, float]:
    """NSGA-II crowding distance within one front; the extremes of each objective get inf."""
    distance = dict.fromkeys(front, 0.0)
    if len(front) <= 2:
        return dict.fromkeys(front, math.inf)
    for m in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda k: points[k][m])
        low, high = points[ordered[0]][m], points[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for i in range(1, len(ordered) - 1):
            distance[ordered[i]] += (points[ordered[i + 1]][m] - points[ordered[i - 1]][m]) / (high - low)
    return distance


def ranking(points: Mapping[K, Sequence[float]]) -> list[K]:
    """All keys, best first: by front, then by decreasing crowding distance."""
    order: list[K] = []
    for front in nondominated_fronts(points):
        crowd = crowding_distance(points, front)
        order.extend(sorted(front, key=lambda k: -crowd[k]))
    return order


def promotable(points: Mapping[K, Sequence[float]], eta: int) -> list[K]:
    """ASHA's promotion rule: the rung's top floor(n/eta), best first (none below eta trials)."""
    return ranking(points)[: len(points) // eta]


def keeps(points: Mapping[K, Sequence[float]], key: K, eta: int, min_trials: int, keep_front: bool = True) -> bool:
    """Whether `key` continues past a rung where `points` are every trial's values."""
    if len(points) < min_trials:
        return True
    if keep_front and not any(dominates(other, points[key]) for other in points.values()):
        return True
    top = max(1, len(points) // eta)
    return key in ranking(points)[:top]
