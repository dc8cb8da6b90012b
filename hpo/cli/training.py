"""`hpo train | config`: one training run from the composed config, or the config itself."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from omegaconf import OmegaConf

from hpo.browse.tables import format_table
from hpo.cli.parsing import STORAGE_HELP, check_output, with_overrides
from hpo.config.compose import compose, hpo_config
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent, shown_metrics
from hpo.store.storage import redact


def cmd_config(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    args = with_overrides(parser).parse_intermixed_args(argv)
    composed = compose(args.overrides, config_dir=args.config_dir)
    hpo_config(composed)  # validate before printing
    if composed["storage"].get("url"):
        composed["storage"]["url"] = redact(composed["storage"]["url"])
    print(OmegaConf.to_yaml(composed), end="")
    return 0


def _trial_ref(value: str) -> tuple[str, int]:
    """`STUDY:N` as (study name, trial number)."""
    name, _, number = value.rpartition(":")
    if not name or not number.isdigit():
        raise HpoError(f"--from-trial={value!r} must be STUDY:N, a study name and a trial number (--from-trial=hpo:3)")
    return name, int(number)


def cmd_train(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo import api  # torch, which `hpo config` does without

    with_overrides(parser)
    parser.add_argument("--checkpoint", metavar="PATH", help="save the trained model (same as train.checkpoint=PATH)")
    parser.add_argument(
        "--from-trial",
        metavar="STUDY:N",
        help="train trial N of STUDY again: the config and seed it trained with, then the overrides; "
        "on the resources a study trial has (one pinned core per CPU rank), so tokens/s compares",
    )
    parser.add_argument("--storage", metavar="URL", help=f"with --from-trial: the study's {STORAGE_HELP}")
    parser.add_argument("--quiet", action="store_true", help="print only the final metrics")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"train.checkpoint={args.checkpoint}")
    trial = None
    if args.from_trial:
        if args.config_dir:
            raise HpoError("--config-dir does not apply to --from-trial: the trial's config comes from its study")
        name, number = _trial_ref(args.from_trial)
        config = api.trial_config(name, number, overrides, args.storage)
        trial = api.load_results(name, args.storage).trial(number)
    elif args.storage:
        raise HpoError("--storage names the study of --from-trial; without it, hpo train uses no database")
    else:
        config = api.compose_config(overrides, config_dir=args.config_dir)

    # Where the run's results go is checked before it trains: a path that cannot be written
    # would otherwise fail only after training, and the trained model would be lost.
    if config.train.checkpoint:
        check_output(config.train.checkpoint, "--checkpoint" if args.checkpoint else "train.checkpoint")
    if config.train.save_state:
        check_output(config.train.save_state, "train.save_state")

    def show(event: EvalEvent) -> None:
        print(
            f"step {event.step:>6}  tokens {event.tokens:>10,}  train_loss {event.train_loss:.4f}  "
            f"val_loss {event.val_loss:.4f}  val_acc {event.val_accuracy:.4f}  "
            f"tok/s {event.tokens_per_sec:,.0f}",
            flush=True,
        )

    result = api.train(config, on_eval=None if args.quiet else show, pinned=trial is not None)
    measured = shown_metrics(result.to_dict())
    if trial is None:
        rows: list[tuple[object, ...]] = [(m.heading, m.shown(v)) for m, v in measured]
        rows.append(("device", f"{result.n_devices} x {result.device_name} ({result.device}, {result.dtype})"))
        print(format_table(["metric", "value"], rows))
    else:
        stored = trial.user_attrs
        rows = [(m.heading, m.shown(v), m.shown(stored[m.name]) if m.name in stored else "-") for m, v in measured]
        rows.append(("device", f"{result.n_devices} x {result.device_name}", f"{stored.get('device_name', '-')}"))
        print(format_table(["metric", "this run", f"{args.from_trial}"], rows))
    if result.sample:
        print(f"\nsample:\n{result.sample}")
    if config.train.checkpoint:
        print(f"\ncheckpoint saved to {config.train.checkpoint}")
    if config.train.save_state:
        print(f"run state saved to {config.train.save_state} (resume with train.resume_from=PATH)")
    return 0
