"""Benchmark search efficiency: hypervolume of the Pareto front against training tokens spent.

Arms on the same search space and seeds: random sampling without pruning, TPE without
pruning, and TPE with MO-ASHA as hpo runs it (a trial on its rung's first front always
continues); `--arms ... tpe+strict` adds the paper's strict top-1/eta rule
(`pruner.keep_front=false`). The pruned arms get three times the trials: they stop most of
them early. Their rungs are hpo's defaults (the budget / 9 and / 3), and a rung judges
from its second trial on (`pruner.min_trials=2`). Each study is a real `hpo run` on the
builtin corpus.

For every arm the hypervolume of the feasible completed trials' front is tracked as
training tokens accumulate (a pruned trial costs the tokens it trained). Each objective is
normalised to [0, 1] between the worst and the best value that any completed trial of any
arm reached (the nadir and the ideal point), and the nadir is the one reference point for
all arms. Unnormalised, with (0, 0) as reference, the area would be about accuracy x
throughput of the fastest trial alone: accuracy varies by a few points where throughput
varies tenfold, so the fastest trial's run-to-run timing noise would decide the benchmark.

The goal: TPE with MO-ASHA reaches the final hypervolume of TPE without pruning with at
most half of TPE's tokens, on the hypervolume-against-tokens curves averaged over the
seeds. Each seed's own fraction is printed too; one seed alone is noisy, since a trial's
throughput varies by 5-10% between identical runs on a 2-core host and TPE's last trial
or two can move its final front.

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
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.frontier import feasible_complete, hypervolume
from hpo.pruning import PrunerConfig

PRUNED = ["pruner=moasha", "pruner.min_trials=2"]  # hpo's default rungs
ARMS = {  # name -> (overrides, trial multiplier)
    "random": (["sampler=random", "pruner=none"], 1),
    "tpe": (["sampler=tpe", "pruner=none"], 1),
    "tpe+moasha": (["sampler=tpe", *PRUNED], 3),
    "tpe+strict": (["sampler=tpe", *PRUNED, "pruner.keep_front=false"], 3),
}
DEFAULT_ARMS = ["random", "tpe", "tpe+moasha"]
SPACES = {  # name -> overrides that set the searched space
    # the smoke preset's 32 shapes, searched together with the training knobs of search_space/wide.yaml
    "knobs": [
        "experiment=smoke",
        "search_space.lr={low:1.0e-4,high:3.0e-2,log:true}",
        "+search_space.optimizer={choices:[adamw,adam,sgd]}",
        "+search_space.pos_encoding={choices:[learned,rope,sinusoidal,none]}",
        "+search_space.warmup_frac={low:0.0,high:0.2}",
        "+search_space.weight_decay={low:0.0,high:0.2}",
    ],
    # the smoke preset alone: 32 shapes and a learning rate in a range where every shape trains
    "shapes": ["experiment=smoke"],
}


def tokens_spent(trial: FrozenTrial) -> int:
    """Training tokens a trial cost: its whole budget, or its last evaluation if stopped early."""
    if trial.state == TrialState.COMPLETE:
        return int(trial.user_attrs["tokens"])
    rung = trial.user_attrs.get("rung")
    return int(rung["tokens"]) if rung else 0


Bounds = list[tuple[float, float]]
Curve = list[tuple[int, float]]  # (cumulative tokens, hypervolume), one point per finished trial


def bounds(trials: list[FrozenTrial]) -> Bounds:
    """(worst, best) of each objective over completed trials: the nadir and the ideal point."""
    values = [t.values for t in feasible_complete(trials)]
    if not values:
        sys.exit("error: no trial of any arm completed; run with more --tokens or look at the studies with --keep")
    return [(min(v[i] for v in values), max(v[i] for v in values)) for i in range(len(values[0]))]


def normalised(values: list[float], scale: Bounds) -> tuple[float, ...]:
    return tuple((v - lo) / (hi - lo) if hi > lo else 1.0 for v, (lo, hi) in zip(values, scale, strict=True))


def trajectory(trials: list[FrozenTrial], scale: Bounds) -> Curve:
    """(cumulative tokens, hypervolume) after each finished trial, in completion order."""
    out, spent, front = [], 0, []
    for trial in sorted(trials, key=lambda t: t.datetime_complete or t.datetime_start or datetime.min):
        spent += tokens_spent(trial)
        if feasible_complete([trial]):
            front.append(normalised(trial.values, scale))
        out.append((spent, hypervolume(front)))
    return out


def hv_at(curve: Curve, tokens: float) -> float:
    """The hypervolume a study had once it had spent `tokens`: a step function."""
    return max((hv for spent, hv in curve if spent <= tokens), default=0.0)


def mean_curve(curves: list[Curve]) -> Curve:
    """The seeds' hypervolume averaged at every token count where one of them changes."""
    steps = sorted({spent for curve in curves for spent, _ in curve})
    return [(t, statistics.mean(hv_at(curve, t) for curve in curves)) for t in steps]


def tokens_to_reach(curve: Curve, target: float) -> int | None:
    return next((tokens for tokens, hv in curve if hv >= target), None)


def share_to_reach(curve: Curve, reference: Curve) -> float | None:
    """The share of `reference`'s tokens that `curve` spent to reach its final hypervolume."""
    reached = tokens_to_reach(curve, reference[-1][1])
    return None if reached is None else reached / reference[-1][0]


def fraction(share: float | None) -> str:
    return "not reached" if share is None else f"{share:.2f}"


def run_study(url: str, name: str, seed: int, trials: int, tokens: int, overrides: list[str]) -> None:
    command = [
        sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url,
        f"study.name={name}", f"study.seed={seed}", f"study.n_trials={trials}", f"budget.tokens={tokens}",
        "train.evals=9", *overrides,
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16, help="trials per study without pruning")
    parser.add_argument("--tokens", type=int, default=200_000, help="training tokens per full trial")
    parser.add_argument("--space", choices=list(SPACES), default="knobs", help="the searched space (see SPACES)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS, help="tpe always runs")
    parser.add_argument("--keep", type=Path, help="keep the studies in this SQLite file (must not exist yet)")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists already; name a new file")
    arms = ["tpe", *(arm for arm in args.arms if arm != "tpe")]
    results: dict[str, list[list[FrozenTrial]]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{(args.keep or Path(tmp) / 'search.db').resolve()}"
        for seed in range(args.seeds):
            for arm in arms:
                overrides, factor = ARMS[arm]
                name = f"{arm}-{seed}"
                run_study(url, name, seed, args.trials * factor, args.tokens, [*SPACES[args.space], *overrides])
                results[arm].append(optuna.load_study(study_name=name, storage=url).get_trials())
                print(f"done {name}", file=sys.stderr, flush=True)
    scale = bounds([t for runs in results.values() for trials in runs for t in trials])
    curves = {arm: [trajectory(trials, scale) for trials in runs] for arm, runs in results.items()}
    means = {arm: mean_curve(runs) for arm, runs in curves.items()}

    print(f"space {args.space}: {args.seeds} seeds, {args.trials} trials of {args.tokens:,} tokens")
    rungs = PrunerConfig(name="moasha").rungs(args.tokens)
    print(f"pruned arms: x{ARMS['tpe+moasha'][1]} trials, {' '.join(PRUNED)}, rungs at {rungs} tokens")
    (acc_lo, acc_hi), (tps_lo, tps_hi) = scale
    print(f"normalised: val_accuracy {acc_lo:.4f}..{acc_hi:.4f}, tokens_per_sec {tps_lo:,.0f}..{tps_hi:,.0f}")
    print("reference point: the nadir, (0, 0) once normalised; HV: averaged over the seeds\n")
    target, budget = means["tpe"][-1][1], statistics.mean(curve[-1][0] for curve in curves["tpe"])
    print(f"{'arm':<12}{'final HV':>10}{'tokens spent':>15}{'pruned':>8}{'HV at half of TPE tokens':>26}")
    for arm, runs in curves.items():
        spent = statistics.mean(curve[-1][0] for curve in runs)
        pruned = statistics.mean(sum(t.state == TrialState.PRUNED for t in trials) for trials in results[arm])
        print(f"{arm:<12}{means[arm][-1][1]:>10.4f}{spent:>15,.0f}{pruned:>8.1f}{hv_at(means[arm], budget / 2):>26.4f}")

    print("\ntokens to reach TPE's final hypervolume, as a fraction of TPE's tokens")
    print("(mean: the seeds' averaged curve against TPE's averaged final hypervolume)")
    print(f"{'arm':<12}" + "".join(f"{'seed ' + str(seed):>13}" for seed in range(args.seeds)) + f"{'mean':>13}")
    shares = {}
    for arm in arms:
        seeds = "".join(
            f"{fraction(share_to_reach(curve, tpe)):>13}" for tpe, curve in zip(curves["tpe"], curves[arm], strict=True)
        )
        reached = tokens_to_reach(means[arm], target)
        shares[arm] = None if reached is None else reached / budget
        print(f"{arm:<12}{seeds}{fraction(shares[arm]):>13}")
    if "tpe+moasha" in shares:
        share = shares["tpe+moasha"]
        verdict = "not reached" if share is None else f"{share:.3f}, {'met' if share <= 0.5 else 'not met'}"
        print(f"goal: tpe+moasha's mean <= 0.50 ({verdict})")


if __name__ == "__main__":
    main()
