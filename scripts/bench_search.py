"""Benchmark search efficiency: hypervolume of the Pareto front against training tokens spent.

Arms on the same search space and seeds: random sampling without pruning, TPE without
pruning, and TPE with MO-ASHA as hpo runs it (a trial on its rung's first front always
continues; accuracy is judged at a rung by the validation loss; TPE sees a stopped trial
with its values at its rung). `--arms ...` adds `tpe+last`, where TPE ranks every stopped
trial below every completed one, as Optuna does (`sampler.pruned_trials=last`),
`tpe+strict`, the paper's strict top-1/eta rule (`pruner.keep_front=false`),
`tpe+accuracy`, rungs that judge the accuracy itself (`pruner.rung_metric=val_accuracy`),
as in the paper, or `tpe+pause`, ASHA's promotion type (`pruner.pause=true`: a rung pauses
the trials it does not keep, and resumes them as new trials once they rank in its top
1/eta; a promotion counts as one of the arm's trials), or `tpe+share`, where a third of
TPE's trials are random draws as in BOHB (`sampler.random_fraction=0.33`). The pruned arms
get three times the trials: they stop most of them early. Their rungs are hpo's defaults
(the budget / 9 and / 3), and a rung judges from its second trial on
(`pruner.min_trials=2`). Each study is a real `hpo run` on the builtin corpus.

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
throughput still varies by a few percent between identical runs on a 2-core host (docs/early-stopping.md,
Throughput), TPE's early draws steer the rest of its search, and its last trial or two
can move its final front. How far the seeds are from settling it shows in the
interval printed below the mean: the same mean over resamples of the seeds (bootstrap,
arms paired by seed). Runs kept with `--keep` and other `--first-seed`s pool into one
report with `--analyze`, so more seeds cost more runs, not a longer one.

A study needs enough trials for successive halving to pay: the first trials of a search
meet empty rungs and run to the end. With 16 trials per search even a pruner that knew
every trial's final values at its rungs would need 0.56 to 0.64 of the tokens; with 32,
0.41 to 0.50 (`replay_pruning.py --oracle` on kept runs). Hence 32 trials per study
without pruning by default, and 4 seeds: with Optuna's view of pruned trials (`tpe+last`),
runs of 3 or 4 seeds measured anywhere from 0.37 to 0.84 where 34 seeds pooled measured
0.57 (docs/early-stopping.md).

    python scripts/bench_search.py                  # 4 seeds, ~20 minutes on 2 cores
    python scripts/bench_search.py --keep search.db # then: hpo dashboard --storage sqlite:///search.db
    python scripts/bench_search.py --first-seed 4 --keep more.db
    python scripts/bench_search.py --analyze search.db more.db   # both runs' 8 seeds in one report
    python scripts/bench_search.py --seeds 1 --trials 6 --tokens 60000   # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hpo.browse.results import tokens_trained
from hpo.config.search import PrunerConfig
from hpo.search.pareto import feasible_complete, hypervolume

PRUNED = ["pruner=moasha", "pruner.min_trials=2"]  # hpo's default rungs
ARMS = {  # name -> (overrides, trial multiplier)
    "random": (["sampler=random", "pruner=none"], 1),
    "tpe": (["sampler=tpe", "pruner=none"], 1),
    "tpe+moasha": (["sampler=tpe", *PRUNED], 3),
    "tpe+strict": (["sampler=tpe", *PRUNED, "pruner.keep_front=false"], 3),
    "tpe+accuracy": (["sampler=tpe", *PRUNED, "pruner.rung_metric=val_accuracy"], 3),
    "tpe+pause": (["sampler=tpe", *PRUNED, "pruner.pause=true"], 3),
    "tpe+share": (["sampler=tpe", *PRUNED, "sampler.random_fraction=0.33"], 3),
    "tpe+last": (["sampler=tpe", *PRUNED, "sampler.pruned_trials=last"], 3),
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


RESAMPLES = 2000
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
        spent += tokens_trained(trial)
        if feasible_complete([trial]):
            front.append(normalised(trial.values, scale))
        out.append((spent, hypervolume(front)))
    return out


def on_grid(curves: list[Curve], grid: np.ndarray) -> np.ndarray:
    """Each curve's hypervolume once it had spent each grid token count (a step function):
    one row per seed, so that seeds average column by column."""
    rows = []
    for curve in curves:
        spent, hv = np.array([0] + [t for t, _ in curve]), np.array([0.0] + [h for _, h in curve])
        rows.append(hv[np.searchsorted(spent, grid, side="right") - 1])
    return np.array(rows)


def share(tpe: np.ndarray, tpe_tokens: np.ndarray, arm: np.ndarray, grid: np.ndarray) -> float:
    """The share of TPE's mean tokens that `arm`'s seed-averaged curve spends to reach TPE's
    seed-averaged final hypervolume (rows: seeds, paired); inf if it never does."""
    target = tpe[:, -1].mean() - 1e-12  # TPE's own mean curve ends there, up to rounding
    reached = np.flatnonzero(arm.mean(axis=0) >= target)
    return float(grid[reached[0]] / tpe_tokens.mean()) if reached.size else math.inf


def interval(
    tpe: np.ndarray, tpe_tokens: np.ndarray, arm: np.ndarray, grid: np.ndarray, resamples: int = RESAMPLES
) -> np.ndarray:
    """`share` over resamples of the seeds (with replacement, arms kept paired by seed):
    what the same benchmark would likely report with other seeds."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(tpe), size=(resamples, len(tpe)))
    return np.array([share(tpe[p], tpe_tokens[p], arm[p], grid) for p in picks])


def fraction(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:.2f}"


def run_study(url: str, name: str, seed: int, trials: int, tokens: int, overrides: list[str]) -> None:
    command = [
        sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url,
        f"study.name={name}", f"study.seed={seed}", f"study.n_trials={trials}", f"budget.tokens={tokens}",
        "train.evals=9", *overrides,
    ]  # fmt: skip
    subprocess.run(command, check=True)


Results = dict[str, list[list[FrozenTrial]]]  # arm -> one list of trials per seed, seeds paired across arms


def run(args: argparse.Namespace, arms: list[str]) -> tuple[list[str], Results]:
    """Run every arm for every seed, one `hpo run` after another."""
    results: Results = {arm: [] for arm in arms}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{(args.keep or Path(tmp) / 'search.db').resolve()}"
        for seed in seeds:
            for arm in arms:
                overrides, factor = ARMS[arm]
                name = f"{arm}-{seed}"
                run_study(url, name, seed, args.trials * factor, args.tokens, [*SPACES[args.space], *overrides])
                results[arm].append(optuna.load_study(study_name=name, storage=url).get_trials())
                print(f"done {name}", file=sys.stderr, flush=True)
    return [str(seed) for seed in seeds], results


def kept(files: list[Path], arms: list[str]) -> tuple[list[str], Results]:
    """The studies that earlier runs kept (`--keep`), pooled: every seed that ran all the arms."""
    labels: list[str] = []
    results: Results = {arm: [] for arm in arms}
    for file in files:
        if not file.is_file():
            sys.exit(f"error: --analyze {file}: no such file; name files that --keep wrote")
        url = f"sqlite:///{file.resolve()}"
        try:
            names = {summary.study_name for summary in optuna.get_all_study_summaries(url)}
        except sqlalchemy.exc.DatabaseError:
            sys.exit(f"error: --analyze {file} is not a study database; name files that --keep wrote")
        for seed in sorted(int(name.removeprefix("tpe-")) for name in names if name.startswith("tpe-")):
            missing = [f"{arm}-{seed}" for arm in arms if f"{arm}-{seed}" not in names]
            if missing:
                sys.exit(f"error: {file} has tpe-{seed} but not {', '.join(missing)}; name only --arms it ran")
            labels.append(f"{file.name}:{seed}" if len(files) > 1 else str(seed))
            for arm in arms:
                results[arm].append(optuna.load_study(study_name=f"{arm}-{seed}", storage=url).get_trials())
    if not labels:
        sys.exit(f"error: no tpe-<seed> study in {', '.join(map(str, files))}; name files that --keep wrote")
    return labels, results


def report(labels: list[str], results: Results) -> None:
    scale = bounds([t for runs in results.values() for trials in runs for t in trials])
    curves = {arm: [trajectory(trials, scale) for trials in runs] for arm, runs in results.items()}
    grid = np.unique([spent for runs in curves.values() for curve in runs for spent, _ in curve])
    rows = {arm: on_grid(runs, grid) for arm, runs in curves.items()}
    tpe, tpe_tokens = rows["tpe"], np.array([curve[-1][0] for curve in curves["tpe"]])
    half = np.searchsorted(grid, tpe_tokens.mean() / 2, side="right") - 1

    full = next(t for t in results["tpe"][0] if t.state == TrialState.COMPLETE)
    tokens = full.user_attrs["config"]["budget"]["tokens"]
    print(f"{len(labels)} seeds, {len(results['tpe'][0])} trials of {tokens:,} tokens without pruning")
    rungs = PrunerConfig(name="moasha").rungs(tokens)
    print(f"pruned arms: x{ARMS['tpe+moasha'][1]} trials, {' '.join(PRUNED)}, rungs at {rungs} tokens")
    (acc_lo, acc_hi), (tps_lo, tps_hi) = scale
    print(f"normalised: val_accuracy {acc_lo:.4f}..{acc_hi:.4f}, tokens_per_sec {tps_lo:,.0f}..{tps_hi:,.0f}")
    print("reference point: the nadir, (0, 0) once normalised; HV: averaged over the seeds\n")
    print(f"{'arm':<12}{'final HV':>10}{'tokens spent':>15}{'pruned':>8}{'HV at half of TPE tokens':>26}")
    for arm, runs in curves.items():
        spent = statistics.mean(curve[-1][0] for curve in runs)
        pruned = statistics.mean(sum(t.state == TrialState.PRUNED for t in trials) for trials in results[arm])
        print(
            f"{arm:<12}{rows[arm][:, -1].mean():>10.4f}{spent:>15,.0f}{pruned:>8.1f}{rows[arm][:, half].mean():>26.4f}"
        )

    print("\ntokens to reach TPE's final hypervolume, as a fraction of TPE's tokens")
    print("(mean: the seeds' averaged curve against TPE's averaged final hypervolume)")
    width = max(len(label) for label in [*labels, "seed"]) + 2
    print(f"{'seed':<{width}}" + "".join(f"{arm:>13}" for arm in curves))
    for i, label in enumerate(labels):
        seed = [i]
        shares = [share(tpe[seed], tpe_tokens[seed], rows[arm][seed], grid) for arm in curves]
        print(f"{label:<{width}}" + "".join(f"{fraction(value):>13}" for value in shares))
    means = {arm: share(tpe, tpe_tokens, rows[arm], grid) for arm in curves}
    print(f"{'mean':<{width}}" + "".join(f"{fraction(value):>13}" for value in means.values()))
    for arm in curves:
        if arm != "tpe":
            resampled = interval(tpe, tpe_tokens, rows[arm], grid)
            low, high = np.quantile(resampled, [0.1, 0.9], method="inverted_cdf")
            print(
                f"{arm}: the mean over {RESAMPLES} resamples of the seeds: {fraction(low)}..{fraction(high)} "
                f"(10th..90th percentile), <= 0.50 in {np.mean(resampled <= 0.5):.0%} of them"
            )
    for arm in ("tpe+moasha", "tpe+pause", "tpe+share"):
        if arm in means:
            value = means[arm]
            verdict = "not reached" if math.isinf(value) else f"{value:.3f}, {'met' if value <= 0.5 else 'not met'}"
            print(f"goal: {arm}'s mean <= 0.50 ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed, first-seed + 1, ...")
    parser.add_argument("--trials", type=int, default=32, help="trials per study without pruning")
    parser.add_argument("--tokens", type=int, default=200_000, help="training tokens per full trial")
    parser.add_argument("--space", choices=list(SPACES), default="knobs", help="the searched space (see SPACES)")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS, help="tpe always runs")
    parser.add_argument("--keep", type=Path, help="keep the studies in this SQLite file (must not exist yet)")
    parser.add_argument("--analyze", type=Path, nargs="+", help="run nothing: pool the studies these --keep files hold")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep} exists already; name a new file")
    arms = ["tpe", *(arm for arm in args.arms if arm != "tpe")]
    report(*(kept(args.analyze, arms) if args.analyze else run(args, arms)))


if __name__ == "__main__":
    main()
