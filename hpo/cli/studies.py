"""`hpo run | resume | retrain | worker`: run studies from the command line, through hpo.api."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial

from hpo import api
from hpo.browse.results import objective_names, show_text, trial_line
from hpo.cli.parsing import STORAGE_HELP, check_positive, with_overrides
from hpo.errors import HpoError
from hpo.record.attrs import target
from hpo.store.storage import redact, resolve_url
from hpo.study.slots import counted_trials
from hpo.trainer import forkserver


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", metavar="URL", help="database URL (default: storage.url, $HPO_STORAGE, sqlite:///hpo.db)"
    )
    parser.add_argument("--n-workers", type=int, default=1, metavar="K", help="local worker processes on the study")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _check_run_flags(args: argparse.Namespace) -> None:
    """The numbers a command that runs trials takes, before anything is opened or made."""
    if getattr(args, "n_workers", 1) < 1:
        raise HpoError(f"--n-workers={args.n_workers} must be at least 1")
    check_positive("--timeout", args.timeout, "give the seconds after which no trial starts, or leave it out")
    if getattr(args, "n_trials", None) is not None and args.n_trials < 1:
        raise HpoError(f"--n-trials={args.n_trials} must be at least 1; leave it out to finish the study's target")
    if getattr(args, "n", None) is not None and args.n < 1:
        raise HpoError(f"--n={args.n} must be at least 1; leave it out to train the whole front again")
    if getattr(args, "wait", 0.0) < 0:
        raise HpoError(f"--wait={args.wait:g} must be 0 or more seconds (0: do not wait for the database)")


class _Progress:
    """Each finished trial on a line of its own, under a bar over the study's trials when
    the output is a terminal (a bar in a log file is noise)."""

    def __init__(self, quiet: bool, bar: bool = True) -> None:
        self.quiet, self.want_bar = quiet, bar and not quiet and sys.stderr.isatty()
        self.study: optuna.Study | None = None
        self.names: list[str] = []
        self.bar = None

    def open(self, study: optuna.Study) -> None:
        self.study, self.names = study, objective_names(study)
        if self.want_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=target(study), initial=counted_trials(study), unit="trial", dynamic_ncols=True)

    def __call__(self, trial: FrozenTrial) -> None:
        if self.quiet:
            return
        line = trial_line(trial, self.names)
        if self.bar is None or self.study is None:
            print(line, flush=True)
            return
        self.bar.write(line)
        self.bar.n = min(self.bar.total, counted_trials(self.study))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _follow(args: argparse.Namespace, url: str, verb: str, run: Callable[..., optuna.Study]) -> int:
    """Run a study through `run` (an hpo.api function with its study arguments bound) with
    the command's workers and timeout: its line, a line per trial (and a bar on a terminal),
    then what `hpo show` prints and where to browse it."""
    forkserver.start()
    progress = _Progress(args.quiet)

    def start(study: optuna.Study) -> None:
        if not args.quiet:
            print(f"{verb} {study.study_name} in {redact(url)}: {counted_trials(study)}/{target(study)} trials")
        progress.open(study)

    try:
        study = run(n_workers=args.n_workers, timeout=args.timeout, on_start=start, on_trial=progress)
    finally:
        progress.close()
    if not args.quiet:
        print(f"\n{show_text(study)}")
        print(f"\nbrowse it: hpo dashboard --storage {redact(url)}")
    return 0


def cmd_run(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    with_overrides(parser)
    _add_run_flags(parser)
    parser.add_argument(
        "--create-only", action="store_true", help="create the study (or check it exists as configured) and exit"
    )
    args = parser.parse_intermixed_args(argv)
    _check_run_flags(args)
    config = api.compose_config(args.overrides, config_dir=args.config_dir)
    url = resolve_url(args.storage, config.storage.url)
    if args.create_only:
        study = api.create_study(config, url)
        print(f"study {study.study_name} in {redact(url)}: {counted_trials(study)}/{target(study)} trials")
        return 0
    return _follow(args, url, "study", functools.partial(api.run_study, config, url))


def cmd_resume(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("name", help="study name")
    parser.add_argument("--n-trials", type=int, metavar="N", help="run N more trials (default: finish the target)")
    _add_run_flags(parser)
    args = parser.parse_intermixed_args(argv)
    _check_run_flags(args)
    url = resolve_url(args.storage)
    return _follow(args, url, "resuming", functools.partial(api.resume_study, args.name, url, n_trials=args.n_trials))


def cmd_retrain(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("name", help="the study whose front to train again")
    parser.add_argument("--front", action="store_true", required=True, help="train the Pareto front's trials again")
    parser.add_argument("--n", type=int, metavar="K", help="only the first K front trials by the first objective")
    with_overrides(parser, stored=True)
    _add_run_flags(parser)
    args = parser.parse_intermixed_args(argv)
    _check_run_flags(args)
    url = resolve_url(args.storage)
    retrain = functools.partial(api.retrain_front, args.name, args.overrides, url, n=args.n)
    return _follow(args, url, "retraining the front in", retrain)


def cmd_worker(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument("--wait", type=float, default=60.0, metavar="S", help="wait up to S s for the database")
    args = parser.parse_intermixed_args(argv)
    _check_run_flags(args)
    forkserver.start()
    progress = _Progress(args.quiet, bar=False)
    api.join_study(
        args.name, args.storage, wait=args.wait, timeout=args.timeout, on_start=progress.open, on_trial=progress
    )
    return 0


__all__ = ["cmd_resume", "cmd_retrain", "cmd_run", "cmd_worker"]
