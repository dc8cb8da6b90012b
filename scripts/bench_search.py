"""Benchmark search efficiency: hypervolume of the Pareto front against training tokens spent.

Arms on the same search space and seeds: random sampling without pruning, TPE without
pruning, and TPE with MO-ASHA, both as hpo runs it (a trial on its rung's first front
always continues) and with the paper's strict top-1/eta rule (`pruner.keep_front=false`).
The pruned arms get four times the trials: they stop most of them early, and so spend
about the same tokens. Each study is a real `hpo run` on the builtin corpus. For every
arm the hypervolume of the feasible completed trials' front is tracked as training tokens
accumulate (a pruned trial costs the tokens it trained). Each objective is normalised to
[0, 1] between the worst and the best value that any completed trial of any arm reached
(the nadir and the ideal point), and the nadir is the one reference point for all arms.
Unnormalised, with (0, 0) as reference, the area would be about accuracy x throughput of
the fastest trial alone: accuracy varies by a few points where throughput varies tenfold,
so the fastest trial's run-to-run timing noise would decide the benchmark.

The goal: TPE with MO-ASHA reaches the final hypervolume of TPE without pruning with at
most half of TPE's tokens.

    python scripts/bench_search.py                  # ~20 minutes on 2 cores
    python scripts/bench_search.py --keep search.db # then: hpo dashboard --storage sqlite:///search.db
    python scripts/bench_search.py --seeds 1 --trials 6 --tokens 60000   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.frontier import feasible_complete, hypervolume

ARMS = {  # name -> (overrides, trial multiplier)
    "random": (["sampler=random", "pruner=none"], 1),
    "tpe": (["sampler=tpe", "pruner=none"], 1),
    "tpe+moasha": (["sampler=tpe", "pruner=moasha"], 4),
    "tpe+strict": (["sampler=tpe", "pruner=moasha", "pruner.keep_front=false"], 4),
}
PRUNED_ARMS = [arm for arm, (_, factor) in ARMS.items() if factor > 1]


def tokens_spent(trial: FrozenTrial) -> int:
    """Training tokens a trial cost: its whole budget, or its last evaluation if stopped early."""
    if trial.state == TrialState.COMPLETE:
        return int(trial.user_attrs["tokens"])
    rung = trial.user_attrs.get("rung")
    return int(rung["tokens"]) if rung else 0


Bounds = list[tuple[float, float]]


def bounds(trials: list[FrozenTrial]) -> Bounds:
    """(worst, best) of each objective over completed trials: the nadir and the ideal point."""
    values = [t.values for t in feasible_complete(trials)]
    return [(min(v[i] for v in values), max(v[i] for v in values)) for i in range(len(values[0]))]


def normalised(values: list[float], scale: Bounds) -> tuple[float, ...]:
    return tuple((v - lo) / (hi - lo) if hi > lo else 1.0 for v, (lo, hi) in zip(values, scale, strict=True))


def trajectory(trials: list[FrozenTrial], scale: Bounds) -> list[tuple[int, float]]:
    """(cumulative tokens, hypervolume) after each finished trial, in completion order."""
    out, spent, front = [], 0, []
    for trial in sorted(trials, key=lambda t: t.datetime_complete or t.datetime_start):
        spent += tokens_spent(trial)
        if feasible_complete([trial]):
            front.append(normalised(trial.values, scale))
        out.append((spent, hypervolume(front)))
    return out


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((tokens for tokens, hv in curve if hv >= target), None)


def run_study(url: str, name: str, seed: int, trials: int, tokens: int, overrides: list[str]) -> None:
    command = [
        sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url, "experiment=smoke",
        f"study.name={name}", f"study.seed={seed}", f"study.n_trials={trials}", f"budget.tokens={tokens}",
        "train.evals=9", *overrides,
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16, help="trials per study without pruning")
    parser.add_argument("--tokens", type=int, default=200_000, help="training tokens per full trial")
    parser.add_argument("--keep", type=Path, help="keep the studies in this SQLite file (must not exist yet)")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists already; name a new file")
    results: dict[str, list[list[FrozenTrial]]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{(args.keep or Path(tmp) / 'search.db').resolve()}"
        for seed in range(args.seeds):
            for arm, (overrides, factor) in ARMS.items():
                name = f"{arm}-{seed}"
                run_study(url, name, seed, args.trials * factor, args.tokens, overrides)
                results[arm].append(optuna.load_study(study_name=name, storage=url).get_trials())
                print(f"done {name}", file=sys.stderr, flush=True)
    scale = bounds([t for runs in results.values() for trials in runs for t in trials])
    curves = {arm: [trajectory(trials, scale) for trials in runs] for arm, runs in results.items()}

    print(f"{args.seeds} seeds, {args.trials} trials of {args.tokens:,} tokens (x4 trials with pruning)")
    (acc_lo, acc_hi), (tps_lo, tps_hi) = scale
    print(f"normalised: val_accuracy {acc_lo:.4f}..{acc_hi:.4f}, tokens_per_sec {tps_lo:,.0f}..{tps_hi:,.0f}")
    print("reference point: the nadir, (0, 0) once normalised\n")
    print(f"{'arm':<12}{'final HV':>10}{'tokens spent':>15}{'pruned':>8}")
    for arm, runs in curves.items():
        hv = statistics.mean(curve[-1][1] for curve in runs)
        spent = statistics.mean(curve[-1][0] for curve in runs)
        pruned = statistics.mean(sum(t.state == TrialState.PRUNED for t in trials) for trials in results[arm])
        print(f"{arm:<12}{hv:>10.4f}{spent:>15,.0f}{pruned:>8.1f}")

    print("\ntokens for each pruned arm to reach TPE's final hypervolume, as a fraction of TPE's tokens:")
    print(f"{'arm':<12}" + "".join(f"{'seed ' + str(seed):>13}" for seed in range(args.seeds)) + f"{'mean':>8}")
    for arm in PRUNED_ARMS:
        fractions = []
        for tpe, pruned in zip(curves["tpe"], curves[arm], strict=True):
            reached = tokens_to_reach(pruned, tpe[-1][1])
            fractions.append(None if reached is None else reached / tpe[-1][0])
        shown = "".join(f"{'not reached' if f is None else f'{f:.2f}':>13}" for f in fractions)
        met = [f for f in fractions if f is not None]
        mean = f"{statistics.mean(met):.2f}" if len(met) == len(fractions) else "-"
        print(f"{arm:<12}{shown}{mean:>8}")
    print("goal: tpe+moasha's mean <= 0.50 (a mean is shown when every seed reaches the target)")


if __name__ == "__main__":
    main()
