"""Benchmark the trainer's throughput against the machine's own references, in one run.

For each shape it measures tokens/s, achieved GFLOP/s and MFU of `hpo.trainer.loop.train`, and
of a plain nanoGPT-style loop (same model class, same optimizer, no bookkeeping) as the
reference for "the trial loop's overhead is ours to remove"; both rates are at the
lower-quartile step time, as hpo measures throughput (hpo.trainer.loop). MFU is against an fp32
matmul peak measured in this same run, before and after, since these machines are noisy.

Then `--repeats` identical runs of the first shape show how far apart identical runs
measure: the spread of hpo's throughput against that of tokens over the summed time of
the same timed steps (what hpo measured before).

    python scripts/bench_train.py                 # three shapes, 2 threads, 6 repeats
    python scripts/bench_train.py --accuracy      # also the 500-step accuracy run
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from hpo.config.training import BudgetConfig, DataConfig, GPTConfig, OptimConfig, RunSpec, TrainSettings
from hpo.trainer.data import Dataset, load_dataset
from hpo.trainer.hardware import measure_matmul_flops
from hpo.trainer.loop import build_optimizer, step_rate, train
from hpo.trainer.model import GPT

SHAPES = [  # (n_layer, n_head, n_embd, block_size, batch_size)
    (2, 2, 64, 64, 32),
    (4, 4, 128, 128, 32),
    (6, 6, 192, 128, 16),
]


def plain_loop(config: RunSpec, dataset: Dataset, steps: int, warmup: int) -> float:
    """tokens/s of the simplest correct loop: batch, forward, backward, step."""
    model_config = replace(config.model, vocab_size=dataset.tokenizer.vocab_size)
    torch.manual_seed(0)
    model = GPT(model_config)
    optimizer = build_optimizer(model, config.optim, torch.device("cpu"))
    for group in optimizer.param_groups:
        group["lr"] = config.optim.lr
    generator = torch.Generator().manual_seed(0)
    b, t = config.train.batch_size, model_config.block_size
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        x, y = dataset.train_batch(b, t, generator)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.perf_counter() - start)
    return step_rate(b * t, times[warmup:])


def spread(rates: list[float]) -> str:
    """How far apart measurements of the same thing are: (max - min) / mean, and the CV."""
    mean = statistics.mean(rates)
    return f"range {(max(rates) - min(rates)) / mean:6.1%}, CV {statistics.stdev(rates) / mean:6.1%}"


def agreement(config: RunSpec, dataset: Dataset, repeats: int, steps: int) -> None:
    """Train `config` `repeats` times and compare how far apart the runs measure."""
    hpo, summed = [], []
    for _ in range(repeats):
        result = train(config, dataset=dataset)
        hpo.append(result.tokens_per_sec)
        summed.append(steps * config.train.batch_size * config.model.block_size / result.timed_time_s)
    print(f"\n{repeats} identical runs of the first shape, {steps} timed steps each:")
    print(f"  hpo's tokens/s (lower-quartile step): {statistics.mean(hpo):>10,.0f} tok/s, {spread(hpo)}")
    print(f"  tokens over the summed step time:     {statistics.mean(summed):>10,.0f} tok/s, {spread(summed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=6, help="identical runs of the first shape (under 2: none)")
    parser.add_argument("--accuracy", action="store_true", help="also run (4,4,128,128,32) for 500 steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = load_dataset(DataConfig())
    peak_before = measure_matmul_flops(seconds=1.0)
    print(f"threads {args.threads}, torch {torch.__version__}")
    print(f"fp32 matmul peak (start of run): {peak_before / 1e9:.1f} GFLOP/s")
    header = f"{'shape (L,H,E,T,B)':<22}{'trainer tok/s':>14}{'plain tok/s':>13}{'trainer/plain':>15}"
    print(header + f"{'GFLOP/s':>10}{'MFU':>8}")
    configs = []
    for n_layer, n_head, n_embd, block, batch in SHAPES:
        warmup = 3
        config = RunSpec(
            model=GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block),
            optim=OptimConfig(lr=1e-3, warmup_frac=0.0),
            train=TrainSettings(
                batch_size=batch, threads=args.threads, evals=1, timing_warmup_steps=warmup, sample_tokens=0
            ),
            budget=BudgetConfig(steps=args.steps + warmup),
        )
        configs.append(config)
        result = train(config, dataset=dataset)
        plain = plain_loop(config, dataset, args.steps, warmup)
        mfu = result.achieved_flops / peak_before
        shape = f"({n_layer},{n_head},{n_embd},{block},{batch})"
        print(
            f"{shape:<22}{result.tokens_per_sec:>14,.0f}{plain:>13,.0f}{result.tokens_per_sec / plain:>15.3f}"
            f"{result.achieved_flops / 1e9:>10.1f}{mfu:>8.1%}"
        )
    peak_after = measure_matmul_flops(seconds=1.0)
    print(
        f"fp32 matmul peak (end of run): {peak_after / 1e9:.1f} GFLOP/s "
        f"(drift {peak_after / peak_before - 1:+.1%}; MFU above uses the start figure)"
    )
    if args.repeats > 1:
        agreement(configs[0], dataset, args.repeats, args.steps)

    if args.accuracy:
        config = RunSpec(
            model=GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=128),
            optim=OptimConfig(lr=1e-3),
            train=TrainSettings(batch_size=32, threads=args.threads, evals=10, sample_tokens=0),
            budget=BudgetConfig(steps=500),
        )
        counts = torch.bincount(torch.from_numpy(dataset.val.astype("int64")))
        result = train(config, dataset=dataset)
        print(
            f"\naccuracy run (4,4,128,128,32), AdamW lr 1e-3, 500 steps: val_loss {result.val_loss:.3f}, "
            f"val_accuracy {result.val_accuracy:.3f} (most-frequent-token rate "
            f"{counts.max().item() / counts.sum().item():.3f}), "
            f"{result.train_time_s:.0f} s of training steps, "
            f"evaluation {result.eval_time_s / result.wall_time_s:.1%} of wall time, "
            f"{result.tokens_per_sec:,.0f} tok/s, MFU {result.achieved_flops / peak_before:.1%}"
        )


if __name__ == "__main__":
    main()
