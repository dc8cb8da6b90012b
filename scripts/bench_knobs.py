"""Benchmark what a search over every knob spends its trials on: options that learn, or not.

Runs real studies of `search_space=wide` (shapes cut small so a trial lasts seconds on a
CPU, budget.tokens=150000, TPE, no pruning) on the builtin corpus, one per seed, and
reports for each arm:

- trials that never beat the unigram rate (always predicting the validation set's
  commonest character): they learned nothing that a search can use;
- for each positional encoding and optimizer, its trials, how many learned, their mean
  validation accuracy, and how many sit on the final Pareto front;
- the final front's hypervolume (accuracy x tokens/s, from 0), against the unigram
  accuracy measured in the same run.

`--before DIR` runs the same studies with the hpo of another checkout (its package and its
study_configs/), so that a change to the knobs is measured against the code before it:

    python scripts/bench_knobs.py --seeds 3 --trials 24 --before /path/to/older/checkout
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import optuna

from hpo.config.search_space import plain_params
from hpo.config.training import DataConfig
from hpo.search.pareto import feasible_complete, hypervolume
from hpo.trainer.data import load_dataset

SMALL = [  # every knob of search_space=wide, on shapes that train in seconds
    "search_space=wide",
    "model.block_size=64",
    "budget.tokens=150000",
    "train.evals=2",
    "train.sample_tokens=0",
    "train.threads=1",
    "search_space.n_layer={low: 1, high: 3}",
    "search_space.n_head={choices: [2, 4]}",
    "search_space.head_dim={choices: [16, 32]}",
    "search_space.batch_size={choices: [16, 32]}",
    "search_space.n_devices=1",
    "sampler=tpe",
    "pruner=none",
]


def unigram_accuracy() -> float:
    """Next-token accuracy of always predicting the validation set's commonest token."""
    _, targets = load_dataset(DataConfig()).validation_set(block_size=64, n_tokens=DataConfig().val_tokens)
    counts = np.bincount(targets.reshape(-1).numpy())
    return float(counts.max() / counts.sum())


def run_study(url: str, seed: int, trials: int, code: Path | None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url, *SMALL]
    command += [f"study.name=knobs-{seed}", f"study.seed={seed}", f"study.n_trials={trials}"]
    subprocess.run(command, check=True, env=env, cwd=code or Path.cwd())


def report(name: str, studies: list[optuna.Study], unigram: float) -> None:
    trials = [t for s in studies for t in feasible_complete(s.get_trials(deepcopy=False))]
    on_front = {(s.study_name, t.number) for s in studies for t in s.best_trials}
    stuck = [t for t in trials if t.values[0] <= unigram + 0.005]
    print(f"\n{name}: {len(trials)} complete trials over {len(studies)} studies")
    print(f"  never beat the unigram rate ({unigram:.3f}): {len(stuck)} ({len(stuck) / max(1, len(trials)):.0%})")
    for knob in ("pos_encoding", "optimizer"):
        groups: dict[str, list[tuple[str, optuna.trial.FrozenTrial]]] = defaultdict(list)
        for study in studies:
            for trial in feasible_complete(study.get_trials(deepcopy=False)):
                groups[str(plain_params(trial.params).get(knob))].append((study.study_name, trial))
        for option, members in sorted(groups.items()):
            accuracies = [t.values[0] for _, t in members]
            learned = sum(a > unigram + 0.005 for a in accuracies)
            front = sum((s, t.number) in on_front for s, t in members)
            print(
                f"  {knob}={option:<11} {len(members):>3} trials, {learned:>3} learned, "
                f"mean val_accuracy {statistics.mean(accuracies):.3f}, {front} on the fronts"
            )
    volumes = [hypervolume([t.values for t in s.best_trials]) for s in studies]
    print("  front hypervolume per seed: " + ", ".join(f"{v:,.0f}" for v in volumes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=24, help="trials per study")
    parser.add_argument("--before", type=Path, metavar="DIR", help="a checkout of an older hpo to compare with")
    args = parser.parse_args()
    unigram = unigram_accuracy()
    arms = {"this checkout": None, **({f"before ({args.before})": args.before.resolve()} if args.before else {})}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, code) in enumerate(arms.items()):
            url = f"sqlite:///{Path(tmp) / f'arm{index}.db'}"
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            for seed in seeds:
                run_study(url, seed, args.trials, code)
            report(name, [optuna.load_study(study_name=f"knobs-{s}", storage=url) for s in seeds], unigram)


if __name__ == "__main__":
    main()
