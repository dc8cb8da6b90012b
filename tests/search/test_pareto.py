"""Hypervolume against known answers: areas worked out by hand, and Optuna's own
implementation (WFG, on losses) on random fronts."""

from __future__ import annotations

import random

import numpy as np
import optuna._hypervolume
import pytest

from hpo.search.pareto import hypervolume


@pytest.mark.parametrize(
    ("points", "reference", "area"),
    [
        ([], (0.0, 0.0), 0.0),
        ([(2.0, 3.0)], (0.0, 0.0), 6.0),  # one rectangle
        ([(1.0, 3.0), (3.0, 1.0)], (0.0, 0.0), 3.0 + 3.0 - 1.0),  # two overlapping rectangles
        ([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (0.0, 0.0), 6.0),  # staircase: 3 + 2 + 1
        ([(1.0, 1.0), (2.0, 2.0)], (0.0, 0.0), 4.0),  # a dominated point adds nothing
        ([(2.0, 2.0), (2.0, 2.0)], (0.0, 0.0), 4.0),  # duplicates count once
        ([(3.0, 3.0)], (1.0, 2.0), 2.0),  # measured from the reference
        ([(0.5, 3.0), (3.0, 0.5)], (1.0, 1.0), 0.0),  # nothing beyond the reference
        ([(0.3, 120_000.0), (0.25, 200_000.0)], (0.0, 0.0), 0.3 * 120_000 + 0.25 * 80_000),  # hpo's scales
        ([(5.0,)], (1.0,), 4.0),  # one objective: the best value's distance
    ],
)
def test_hypervolume_known_areas(points: list[tuple[float, ...]], reference: tuple[float, ...], area: float) -> None:
    assert hypervolume(points, reference) == pytest.approx(area)


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_agrees_with_optunas(seed: int) -> None:
    rng = random.Random(seed)
    points = [(rng.uniform(0, 1), rng.uniform(0, 10)) for _ in range(rng.randint(1, 40))]
    # Optuna minimizes: the negated points against the negated reference give the same volume.
    theirs = optuna._hypervolume.compute_hypervolume(-np.array(points), np.zeros(2))
    assert hypervolume(points, (0.0, 0.0)) == pytest.approx(theirs, rel=1e-12)
