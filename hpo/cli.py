"""The `hpo` command line (the contract in DESIGN.md, "The command line").

Each subcommand has its own parser that accepts flags and `key=value` overrides in any
order. A user mistake (HpoError, a bad flag) prints one `error:` line and exits 2; no
traceback. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from hpo.errors import HpoError


class _Parser(argparse.ArgumentParser):
    """argparse that raises HpoError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise HpoError(f"{self.prog}: {message} (see {self.prog} --help)")


def _with_overrides(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides of study_configs/")
    return parser


def cmd_config(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from omegaconf import OmegaConf

    from hpo.config import compose, hpo_config
    from hpo.storage import redact

    args = _with_overrides(parser).parse_intermixed_args(argv)
    composed = compose(args.overrides)
    hpo_config(composed)  # validate before printing
    if composed["storage"].get("url"):
        composed["storage"]["url"] = redact(composed["storage"]["url"])
    print(OmegaConf.to_yaml(composed), end="")
    return 0


def cmd_train(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo.config import compose, hpo_config
    from hpo.feasibility import infeasible_reason
    from hpo.tables import format_table
    from hpo.train import train
    from hpo.trainspec import EvalEvent

    _with_overrides(parser)
    parser.add_argument("--checkpoint", metavar="PATH", help="save the trained model (same as train.checkpoint=PATH)")
    parser.add_argument("--quiet", action="store_true", help="print only the final metrics")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.checkpoint:
        overrides.append(f"train.checkpoint={args.checkpoint}")
    composed = hpo_config(compose(overrides))
    config = composed.train
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
        from hpo.launch import TrialFailure, run_isolated

        try:
            result = run_isolated(config, on_eval=on_eval)
        except TrialFailure as failure:
            raise HpoError(str(failure)) from None
    rows = [
        ("val_accuracy", result.val_accuracy),
        ("val_loss", result.val_loss),
        ("train_loss", result.train_loss),
        ("tokens/s", result.tokens_per_sec),
        ("params", result.params),
        ("FLOPs/token", result.flops_per_token),
        ("achieved GFLOP/s", result.achieved_flops / 1e9),
        ("peak GFLOP/s", result.peak_flops / 1e9 if result.peak_flops else None),
        ("MFU", result.mfu),
        ("peak memory MiB", result.peak_memory_bytes / 2**20),
        ("steps", result.steps),
        ("tokens", result.tokens),
        *([("resumed at tokens", result.resumed_at_tokens)] if result.resumed_at_tokens else []),
        ("wall s", result.wall_time_s),
        ("train steps s", result.train_time_s),
        ("eval s", result.eval_time_s),
        ("outside steps s", result.overhead_s),
        ("device", f"{result.n_devices} x {result.device_name} ({result.device}, {result.dtype})"),
    ]
    print(format_table(["metric", "value"], rows))
    if result.sample:
        print(f"\nsample:\n{result.sample}")
    if config.train.checkpoint:
        print(f"\ncheckpoint saved to {config.train.checkpoint}")
    if config.train.save_state:
        print(f"run state saved to {config.train.save_state} (resume with train.resume_from=PATH)")
    return 0


def _study_command(
    name: str, module: str = "cli_study", trains: bool = False
) -> Callable[[Sequence[str], argparse.ArgumentParser], int]:
    """Study commands live in hpo.cli_study (browsing ones in hpo.cli_browse), imported only
    when used (Optuna is slow to import). Those that train start the forkserver first, so
    that it imports torch while this process does (hpo.forkserver)."""

    def run(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
        if trains and not {"-h", "--help"} & set(argv):
            from hpo import forkserver

            forkserver.start()
        commands = importlib.import_module(f"hpo.{module}")
        return getattr(commands, f"cmd_{name}")(argv, parser)

    return run


Handler = Callable[[Sequence[str], argparse.ArgumentParser], int]
COMMANDS: dict[str, tuple[Handler, str]] = {
    "train": (cmd_train, "train one configuration, print its metrics"),
    "run": (_study_command("run", trains=True), "create a study (or continue one of the same name) and run it"),
    "resume": (_study_command("resume", trains=True), "continue a stored study from the database alone"),
    "worker": (_study_command("worker", trains=True), "join a running study"),
    "proxy": (_study_command("proxy", "cli_browse"), "serve a database to many workers through Optuna's gRPC proxy"),
    "studies": (_study_command("studies", "cli_browse"), "list the studies in a database"),
    "show": (_study_command("show", "cli_browse"), "Pareto front and best trials of a study"),
    "export": (_study_command("export", "cli_browse"), "all trials of a study as CSV or JSON"),
    "dashboard": (_study_command("dashboard", "cli_browse"), "optuna-dashboard on the studies' database"),
    "report": (_study_command("report", "cli_browse"), "a study as HTML and PNG images in a folder"),
    "config": (cmd_config, "print the composed config"),
}


def _usage() -> str:
    lines = ["usage: hpo COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run `hpo COMMAND --help` for a command's flags and overrides."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("error: no command given; `hpo --help` lists the commands", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from hpo import __version__

        print(f"hpo {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise HpoError(f"unknown command {command!r}; use one of {', '.join(COMMANDS)}")
        handler, help_text = COMMANDS[command]
        return handler(rest, _Parser(prog=f"hpo {command}", description=help_text))
    except HpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `hpo` executable: `main`, then a quick exit.

    An interpreter that has imported torch spends most of a second tearing its modules
    down at exit, after every result is stored. The executable skips that: it closes its
    databases (SQLite folds its write-ahead log back into the file then), flushes its
    output and leaves with os._exit. An uncaught exception takes the ordinary way out.

    A reader that stops reading (`hpo show NAME | head`) ends the command quietly, as it
    does other command-line tools, instead of with a BrokenPipeError traceback.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        code = 1
    from hpo.storage import close_all

    close_all()
    sys.stderr.flush()
    os._exit(code)
