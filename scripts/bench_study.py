"""Benchmark the study machinery's overhead: worker wall time outside timed training steps.

Runs a real `hpo run` (10 trials of about 20 s each on CPU by default) in a fresh SQLite
database and splits the worker's wall time, measured around the whole process, into the
trainer's timed steps and everything else: process start and imports, data loading,
model build, warm-up steps, evaluation, text sample, child process start, database.

    python scripts/bench_study.py                       # goal: overhead under 5%
    python scripts/bench_study.py --trials 3 --tokens 300000   # a quick look
    python scripts/bench_study.py storage.save_states=false    # what saving run states costs
"""

from __future__ import annotations

import argparse
import itertools
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
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more overrides of the study's config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        command = [
            sys.executable, "-m", "hpo", "run", "--quiet", "--storage", url,
            "experiment=smoke", "study.name=bench", f"study.n_trials={args.trials}",
            f"budget.tokens={args.tokens}", "search_space.n_layer=2", "search_space.head_dim=32",
            "search_space.batch_size=32", *args.overrides,
        ]  # fmt: skip
        started_at, start = time.time(), time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        ended_at = started_at + wall
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
    # Where the worker's share went, from the trials' own timestamps (ask and tell).
    ordered = sorted(trials, key=lambda t: t.number)
    first_ask = ordered[0].datetime_start.timestamp() - started_at
    last_tell = ended_at - max(t.datetime_complete.timestamp() for t in ordered)
    gaps = sum((b.datetime_start - a.datetime_complete).total_seconds() for a, b in itertools.pairwise(ordered))
    around = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) - trial_wall
    print(f"    start-up until the first trial     {first_ask:8.1f} s  {first_ask / wall:6.1%}")
    print(f"    in trials, around the training     {around:8.1f} s  {around / wall:6.1%}")
    print(f"    between trials                     {gaps:8.1f} s  {gaps / wall:6.1%}")
    print(f"    after the last trial               {last_tell:8.1f} s  {last_tell / wall:6.1%}")


if __name__ == "__main__":
    main()
