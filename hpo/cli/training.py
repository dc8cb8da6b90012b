"""`hpo train | config`: one training run from the composed config, or the config itself."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from omegaconf import OmegaConf

from hpo.browse.tables import format_table
from hpo.cli.parsing import with_overrides
from hpo.config.compose import compose, hpo_config
from hpo.errors import HpoError
from hpo.record.outcome import EvalEvent, shown_metrics
from hpo.store.storage import redact


def cmd_config(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    args = with_overrides(parser).parse_intermixed_args(argv)
    composed = compose(args.overrides)
    hpo_config(composed)  # validate before printing
    if composed["storage"].get("url"):
        composed["storage"]["url"] = redact(composed["storage"]["url"])
    print(OmegaConf.to_yaml(composed), end="")
    return 0


def cmd_train(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    # torch, which `hpo config` does without
    from hpo.trainer.feasibility import infeasible_reason
    from hpo.trainer.launch import TrialFailure, run_isolated
    from hpo.trainer.loop import train

    with_overrides(parser)
    parser.add_argument("--checkpoint", metavar="PATH", help="save the trained model (same as train.checkpoint=PATH)")
    parser.add_argument("--quiet", action="store_true", help="print only the final metrics")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"train.checkpoint={args.checkpoint}")
    composed = hpo_config(compose(overrides))
    config = composed.training
    reason = infeasible_reason(config, composed.resources)
    if reason:
        raise HpoError(reason)

    def show(event: EvalEvent) -> None:
        print(
            f"step {event.step:>6}  tokens {event.tokens:>10,}  train_loss {event.train_loss:.4f}  "
            f"val_loss {event.val_loss:.4f}  val_acc {event.val_accuracy:.4f}  "
            f"tok/s {event.tokens_per_sec:,.0f}",
            flush=True,
        )

    on_eval = None if args.quiet else show
    if config.train.n_devices == 1:
        result = train(config, on_eval=on_eval)
    else:  # one process per device under torch.distributed
        try:
            result = run_isolated(config, on_eval=on_eval)
        except TrialFailure as failure:
            raise HpoError(str(failure)) from None
    rows: list[tuple[str, object]] = [(m.heading, m.shown(v)) for m, v in shown_metrics(result.to_dict())]
    rows.append(("device", f"{result.n_devices} x {result.device_name} ({result.device}, {result.dtype})"))
    print(format_table(["metric", "value"], rows))
    if result.sample:
        print(f"\nsample:\n{result.sample}")
    if config.train.checkpoint:
        print(f"\ncheckpoint saved to {config.train.checkpoint}")
    if config.train.save_state:
        print(f"run state saved to {config.train.save_state} (resume with train.resume_from=PATH)")
    return 0
