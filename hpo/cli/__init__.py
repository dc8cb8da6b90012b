"""The `hpo` command line: `hpo COMMAND [ARGS...]`, dispatched to hpo.cli.training,
hpo.cli.studies and hpo.cli.browsing.

Each subcommand has its own parser that accepts flags and `key=value` overrides in any
order. A user mistake (HpoError, a bad flag) prints one `error:` line and exits 2; no
traceback. Ctrl-C exits 130; SIGTERM (`kill`, `docker stop`, a batch scheduler) takes the same
way out, the running trial failed as `interrupted` and queued again, and exits 143.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import NoReturn

from hpo.cli.parsing import Parser
from hpo.errors import TERMINATED, HpoError
from hpo.store.storage import close_all

Handler = Callable[[Sequence[str], argparse.ArgumentParser], int]


def _command(name: str, module: str) -> Handler:
    """`cmd_NAME` of `hpo.cli.MODULE`, imported only when used: Optuna, Hydra and plotly
    take half a second, torch another one (imported only by what trains or reads data)."""

    def run(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
        commands = importlib.import_module(f"hpo.cli.{module}")
        return getattr(commands, f"cmd_{name}")(argv, parser)

    return run


COMMANDS: dict[str, tuple[Handler, str]] = {
    "train": (_command("train", "training"), "train one configuration, print its metrics"),
    "run": (_command("run", "studies"), "create a study (or continue one of the same name) and run it"),
    "resume": (_command("resume", "studies"), "continue a stored study from the database alone"),
    "worker": (_command("worker", "studies"), "join a running study"),
    "retrain": (_command("retrain", "studies"), "train a study's Pareto front again at a new budget"),
    "proxy": (_command("proxy", "browsing"), "serve a database to many workers through Optuna's gRPC proxy"),
    "studies": (_command("studies", "browsing"), "list the studies in a database"),
    "show": (_command("show", "browsing"), "Pareto front and best trials of a study"),
    "export": (_command("export", "browsing"), "all trials of a study as CSV or JSON"),
    "dashboard": (_command("dashboard", "browsing"), "optuna-dashboard on the studies' database"),
    "report": (_command("report", "browsing"), "a study as HTML and PNG images in a folder"),
    "config": (_command("config", "training"), "print the composed config"),
}


def _usage() -> str:
    lines = ["usage: hpo COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run `hpo COMMAND --help` for a command's flags and overrides."]
    return "\n".join(lines)


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: a KeyboardInterrupt in the main thread, so that the running trial is
    failed and queued again and its ranks are killed (hpo.trainer.launch) before the exit.
    A second SIGTERM during that clean-up is ignored; SIGKILL still ends the process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(TERMINATED)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None = None) -> int:
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
        return handler(rest, Parser(prog=f"hpo {command}", description=help_text))
    except HpoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        if stop.args == (TERMINATED,):
            print("terminated", file=sys.stderr)
            return 128 + signal.SIGTERM
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
    close_all()
    sys.stderr.flush()
    os._exit(code)
