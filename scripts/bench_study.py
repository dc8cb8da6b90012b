"""Benchmark the study machinery's overhead: worker wall time outside timed training steps.

Runs a real `hpo run` (10 trials of about 20 s each on CPU by default) in a fresh SQLite
database and splits the worker's wall time, measured around the whole process, into the
trainer's timed steps and everything else: process start and imports, data loading,
model build, warm-up steps, evaluation, text sample, child process start, database.

    python scripts/bench_study.py                       # goal: overhead under 5%
    python scripts/bench_study.py --trials 3 --tokens 300000   # a quick look
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="training tokens per trial (~20 s here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        command = [
            sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url,
            "experiment=smoke", "study.name=bench", f"study.n_trials={args.trials}",
            f"budget.tokens={args.tokens}", "search_space.n_layer=2", "search_space.head_dim=32",
            "search_space.batch_size=32",
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        trials = optuna.load_study(study_name="bench", storage=url).get_trials()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    attrs = [t.user_attrs for t in done]
    timed = sum(a["timed_time_s"] for a in attrs)
    steps = sum(a["train_time_s"] for a in attrs)
    evals = sum(a["eval_time_s"] for a in attrs)
    trial_wall = sum(a["wall_time_s"] for a in attrs)
    print(f"{len(done)}/{len(trials)} trials complete, {trial_wall / max(1, len(done)):.1f} s each on average")
    print(f"worker wall time                       {wall:8.1f} s")
    print(f"timed training steps                   {timed:8.1f} s  {timed / wall:6.1%}")
    overhead = wall - timed
    print(f"outside timed steps (overhead)         {overhead:8.1f} s  {overhead / wall:6.1%}  (goal < 5%)")
    print(f"  warm-up steps (excluded from tok/s)  {steps - timed:8.1f} s  {(steps - timed) / wall:6.1%}")
    print(f"  evaluation                           {evals:8.1f} s  {evals / wall:6.1%}")
    other = trial_wall - steps - evals
    print(f"  in trial: data, model, sample        {other:8.1f} s  {other / wall:6.1%}")
    rest = wall - trial_wall
    print(f"  worker: start, children, database    {rest:8.1f} s  {rest / wall:6.1%}")


if __name__ == "__main__":
    main()
