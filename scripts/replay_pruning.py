"""Replay MO-ASHA on stored learning curves: what a pruner setting would have saved.

Each number of bench_search mixes the pruner with the sampler (TPE reacts to pruned
trials) and with timing noise (a trial's throughput moves by a few percent between
identical runs on 2 cores), and five seeds cannot tell them apart. This replay isolates the pruner. It
pools the completed trials of finished studies that ran without pruning, whose whole
learning curves are in the database, and draws from them at random, with replacement:
once as a search without pruning (`--trials` draws, each at its full cost), once under
MO-ASHA (`--factor` times as many draws, each stopped or kept at the rungs by
`hpo.search.pruning.keeps` on its stored values there, costing the tokens it reached). Over
`--replays` such pairs, the two hypervolume-against-tokens curves are averaged and
compared as bench_search compares its arms. Both arms draw from the same pool, so only
the pruner differs; 200 replays take about a minute.

`--oracle` judges every rung on the trial's final values instead: the savings of the
rule itself, as if early values predicted final ones perfectly. Its gap to the real
replay is what prediction costs; what it leaves is what the rule and the number of
trials allow (the first trials of a search meet empty rungs and run to the end).
`--promotion` pauses every trial at each rung instead, and resumes the paused trials in
their rung's top 1/eta before drawing a new one (ASHA's promotion type, which hpo does
not run: its trials cannot pause): what waiting for company at a rung would save.
`--strict` and `--min-trials` do not apply to it.
`--rung-metric val_accuracy` judges accuracy at a rung by the accuracy itself instead of
the validation loss (hpo's default, `pruner.rung_metric`). Before the replays, a table
shows how well each rung ranks the final objectives by either: Spearman's correlation of
a trial's value at the rung with its final value, over the pool.

A rung is judged on each trial's first evaluation at or after it. bench_search's studies
evaluate every budget / 9 (train.evals=9), where the default rungs fall.

    python scripts/bench_search.py --keep search.db                  # studies to replay
    python scripts/replay_pruning.py --storage sqlite:///search.db              # hpo's default rungs
    python scripts/replay_pruning.py --storage sqlite:///search.db --min-tokens 66666   # one rung at budget / 3
    python scripts/replay_pruning.py --storage sqlite:///search.db --oracle       # the rule's own limit
    python scripts/replay_pruning.py --storage sqlite:///search.db --promotion    # pausing, not stopping
    python scripts/replay_pruning.py --storage sqlite:///search.db --rung-metric val_accuracy
"""

from __future__ import annotations

import argparse
import random
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import get_args

import numpy as np
import optuna
from bench_search import Curve, fraction, interval, on_grid, share
from optuna.trial import FrozenTrial

from hpo.config.search import PrunerConfig, RungMetric
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent
from hpo.search.pareto import feasible_complete, hypervolume
from hpo.search.pruning import keeps, ranking, rung_values
from hpo.store.curves import CurveStore
from hpo.store.grpc import is_grpc
from hpo.store.storage import open_storage

GRID_POINTS = 2001  # token counts the averaged curves are compared at
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's


class Pool:
    """Completed trials of unpruned studies, with their curves and normalised final values."""

    def __init__(self, url: str, names: Sequence[str]) -> None:
        if is_grpc(url):
            sys.exit(f"error: --storage {url} is a proxy; the replay reads the curve table: give the database's URL")
        storage = open_storage(url, must_exist=True)
        assert isinstance(storage, optuna.storages.RDBStorage)
        table = CurveStore(storage.engine)
        studies = {summary.study_name: summary for summary in optuna.get_all_study_summaries(storage)}
        chosen, names = bool(names), list(names) or sorted(studies)
        if missing := sorted(set(names) - set(studies)):
            sys.exit(f"error: no study {', '.join(missing)} in {url}; `hpo studies --storage {url}` lists them")
        self.trials: list[FrozenTrial] = []
        self.curves: list[list[EvalEvent]] = []
        self.studies: list[str] = []
        for name in names:
            study = optuna.load_study(study_name=name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            if any("rung" in t.user_attrs for t in trials):
                if chosen:
                    sys.exit(f"error: study {name} ran with a pruner; replay studies that ran without one")
                continue
            curves = table.curves(name)
            done = [t for t in feasible_complete(trials) if t.number in curves]
            self.trials += done
            self.curves += [curves[t.number] for t in done]
            self.studies.append(name)
            self.objectives = study.metric_names or []
        if not self.trials:
            sys.exit(f"error: no completed trial with a learning curve in an unpruned study of {url}")
        values = np.array([t.values for t in self.trials])
        low, high = values.min(axis=0), values.max(axis=0)
        self.points = [tuple(v) for v in (values - low) / np.where(high > low, high - low, 1.0)]
        self.budget = int(self.trials[0].user_attrs["config"]["budget"]["tokens"])

    def cost(self, i: int) -> int:
        return int(self.trials[i].user_attrs["tokens"])

    def at(self, i: int, tokens: int) -> EvalEvent:
        """Trial i's first evaluation at or after `tokens` (its last if none is)."""
        return next((e for e in self.curves[i] if e.tokens >= tokens), self.curves[i][-1])


def without_pruning(pool: Pool, draws: list[int]) -> Curve:
    spent, front, out = 0, [], []
    for i in draws:
        spent += pool.cost(i)
        front.append(pool.points[i])
        out.append((spent, hypervolume(front)))
    return out


def with_pruning(pool: Pool, draws: list[int], pruner: PrunerConfig, oracle: bool = False) -> Curve:
    """MO-ASHA over the draws in order; a draw is a trial of its own, even when drawn twice.
    With `oracle`, each rung judges a trial on its final objective values instead: what the
    rule would save if a rung predicted them perfectly."""
    rungs = pruner.rungs(pool.budget)
    final = replace(pruner, rung_metric="val_accuracy")  # the objectives themselves
    seen: dict[int, dict[int, tuple[float, ...]]] = {rung: {} for rung in rungs}
    spent, front, out = 0, [], []
    for k, i in enumerate(draws):
        stopped_at = None
        for rung in rungs:
            event = pool.at(i, rung)
            judged = pool.curves[i][-1] if oracle else event
            seen[rung][k] = rung_values(final if oracle else pruner, judged, pool.objectives)
            if not keeps(seen[rung], k, pruner.eta, pruner.min_trials, pruner.keep_front):
                stopped_at = event.tokens
                break
        if stopped_at is None:
            spent += pool.cost(i)
            front.append(pool.points[i])
        else:
            spent += stopped_at
        out.append((spent, hypervolume(front)))
    return out


def with_promotion(pool: Pool, draws: list[int], pruner: PrunerConfig) -> Curve:
    """ASHA's promotion type over the same draws: every trial pauses at each rung, and
    before a new draw starts, the best paused trial in its rung's top 1/eta resumes to the
    next rung, the highest rung first (a rung of fewer than eta trials promotes none). A
    resumed trial goes on from where it paused. What pausing trials would save over
    stopping them, hpo's rule: a trial waits at a rung until the rung has company, instead
    of running to the end because the rung is still empty."""
    levels = [*pruner.rungs(pool.budget), pool.budget]
    last = len(levels) - 1
    seen: list[dict[int, tuple[float, ...]]] = [{} for _ in range(last)]
    waiting: list[list[int]] = [[] for _ in range(last)]  # per rung: its paused trials in its top, best first
    level = [-1] * len(draws)  # the highest level each draw reached
    reached, spent, front, out = [0] * len(draws), 0, [], []
    fresh = iter(range(len(draws)))
    while True:
        rung = next((r for r in reversed(range(last)) if waiting[r]), None)
        k = waiting[rung].pop(0) if rung is not None else next(fresh, None)
        if k is None:
            return out
        i, level[k] = draws[k], level[k] + 1
        tokens = pool.cost(i) if level[k] == last else pool.at(i, levels[level[k]]).tokens
        spent, reached[k] = spent + tokens - reached[k], tokens
        if level[k] == last:
            front.append(pool.points[i])
        else:
            at_rung = seen[level[k]]
            at_rung[k] = rung_values(pruner, pool.at(i, levels[level[k]]), pool.objectives)
            top = ranking(at_rung)[: len(at_rung) // pruner.eta]
            waiting[level[k]] = [j for j in top if level[j] == level[k]]
        out.append((spent, hypervolume(front)))


def ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, tied values sharing their mean rank: early accuracies tie often (a
    plateau is the same count of correct tokens), and ranking ties by position adds noise."""
    order = np.empty(len(values))
    order[values.argsort(kind="stable")] = np.arange(len(values))
    _, tie, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=order) / counts)[tie]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's on the ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def predictions(pool: Pool, rungs: list[int]) -> None:
    """How well each rung ranks the trials' final objective values, for every field a rung
    may judge an objective by (`pruner.rung_metric`): why the validation loss judges accuracy."""
    finals = np.array([t.values for t in pool.trials])
    columns: dict[tuple[int, str], PrunerConfig] = {}  # (objective, field) -> a pruner judging by it
    for metric in get_args(RungMetric):
        pruner = PrunerConfig("moasha", rung_metric=metric)
        for j, field in enumerate(pruner.rung_fields(pool.objectives)):
            columns.setdefault((j, field), pruner)
    names = [f"{field} ~ final {pool.objectives[j]}" for j, field in columns]
    width = max(map(len, names)) + 3
    print("rank correlation (Spearman) of a value at a rung with the final objective, over the pool")
    print(f"{'rung':>8}" + "".join(f"{name:>{width}}" for name in names))
    for rung in rungs:
        cells = []
        for (j, _), pruner in columns.items():
            early = [rung_values(pruner, pool.at(i, rung), pool.objectives)[j] for i in range(len(pool.trials))]
            cells.append(spearman(np.array(early), finals[:, j]))
        print(f"{rung:>8,}" + "".join(f"{cell:>{width}.2f}" for cell in cells))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True, metavar="URL", help="database of the studies (SQLite, PostgreSQL)")
    parser.add_argument("--studies", nargs="+", default=[], metavar="NAME", help="default: every unpruned study")
    parser.add_argument("--trials", type=int, default=32, help="draws per search without pruning (bench_search's)")
    parser.add_argument("--factor", type=int, default=3, help="draws with pruning, per draw without")
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--min-tokens", type=int, help="first rung (default: the budget / eta^2)")
    parser.add_argument("--min-trials", type=int, default=2, help="a rung with fewer trials stops none")
    parser.add_argument("--strict", action="store_true", help="the paper's top 1/eta only (no keep_front)")
    parser.add_argument("--rung-metric", choices=get_args(RungMetric), default="val_loss", help="judges val_accuracy")
    parser.add_argument("--oracle", action="store_true", help="rungs judge on final values: the rule's own limit")
    parser.add_argument(
        "--promotion",
        action="store_true",
        help="pause at rungs, resume the top 1/eta (ASHA's promotion type)",
    )
    args = parser.parse_args()
    if args.promotion and args.oracle:
        parser.error("--promotion replays the rule on the values at the rungs; leave out --oracle")
    try:
        pruner = PrunerConfig(
            "moasha", args.eta, args.min_tokens, args.min_trials, not args.strict, rung_metric=args.rung_metric
        )
        pool = Pool(args.storage, args.studies)
        pruner.check_budget(pool.budget)
    except HpoError as exc:
        sys.exit(f"error: {exc}")  # --eta, --min-tokens, --min-trials are the pruner's settings of the same names

    rng = random.Random(0)
    full, pruned = [], []
    trials = range(len(pool.trials))
    for _ in range(args.replays):
        full.append(without_pruning(pool, rng.choices(trials, k=args.trials)))
        draws = rng.choices(trials, k=args.trials * args.factor)
        pruned.append(
            with_promotion(pool, draws, pruner) if args.promotion else with_pruning(pool, draws, pruner, args.oracle)
        )
    grid = np.linspace(0, max(curve[-1][0] for curve in full + pruned), GRID_POINTS)
    runs = {"without pruning": full, "MO-ASHA": pruned}
    rows = {arm: on_grid(curves, grid) for arm, curves in runs.items()}
    tokens = {arm: np.array([curve[-1][0] for curve in curves]) for arm, curves in runs.items()}
    reference = tokens["without pruning"].mean()

    print(f"pool: {len(pool.trials)} completed trials of {pool.budget:,} tokens from {len(pool.studies)} studies\n")
    predictions(pool, pruner.rungs(pool.budget))
    rule = "strict top 1/eta" if args.strict else "keep_front"
    fields = " and ".join(pruner.rung_fields(pool.objectives))
    judged = "final values (--oracle)" if args.oracle else f"{fields} at the rung"
    if args.promotion:
        print(f"MO-ASHA: eta {args.eta}, rungs at {pruner.rungs(pool.budget)} tokens")
        print(f"trials pause at every rung; a rung's top 1/eta by {judged} resume before a new draw (--promotion)")
    else:
        print(f"MO-ASHA: eta {args.eta}, rungs at {pruner.rungs(pool.budget)} tokens, min_trials {args.min_trials}")
        print(f"a rung keeps by the {rule} rule, on each trial's {judged}")
    print(f"{args.replays} replays of {args.trials} draws without pruning and {args.trials * args.factor} with")
    print("HV: normalised to the pool's worst and best values, averaged over the replays\n")
    print(f"{'':<16}{'final HV':>10}{'tokens spent':>15}{'HV at half / all of the unpruned tokens':>41}")
    for arm, curves in runs.items():
        half, whole = on_grid(curves, np.array([reference / 2, reference])).mean(axis=0)
        print(f"{arm:<16}{rows[arm][:, -1].mean():>10.4f}{tokens[arm].mean():>15,.0f}{half:>33.4f} / {whole:.4f}")
    reached = share(rows["without pruning"], tokens["without pruning"], rows["MO-ASHA"], grid)
    low, high = np.quantile(
        interval(rows["without pruning"], tokens["without pruning"], rows["MO-ASHA"], grid, resamples=200),
        [0.1, 0.9],
        method="inverted_cdf",
    )
    print(
        f"\nMO-ASHA reached the final hypervolume without pruning with {fraction(reached)} of its tokens "
        f"({fraction(low)}..{fraction(high)} over resamples of the replays, 10th..90th percentile)"
    )


if __name__ == "__main__":
    main()
