"""`hpo run | resume | worker`: run studies from the command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial

from hpo.browse.publisher import Publisher
from hpo.browse.results import objective_names, show_text, trial_line
from hpo.cli.parsing import STORAGE_HELP, with_overrides
from hpo.config.compose import compose, hpo_config
from hpo.config.settings import HpoConfig
from hpo.errors import HpoError
from hpo.record.attrs import DATA_FINGERPRINT, TARGET, target
from hpo.store.locks import study_lock
from hpo.store.storage import Storage, open_storage, redact, resolve_url, wait_for_storage
from hpo.study.lifecycle import create_or_continue, load_existing
from hpo.study.objective import states_of
from hpo.study.slots import counted_trials
from hpo.study.worker import run_worker
from hpo.trainer.data import load_dataset

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", metavar="URL", help="database URL (default: storage.url, $HPO_STORAGE, sqlite:///hpo.db)"
    )
    parser.add_argument("--n-workers", type=int, default=1, metavar="K", help="local worker processes on the study")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


class _Progress:
    """A bar over the study's trials, with each finished trial on a line of its own."""

    def __init__(self, study: optuna.Study, quiet: bool) -> None:
        self.study, self.quiet = study, quiet
        self.names = objective_names(study)
        self.bar = None
        if not quiet and sys.stderr.isatty():  # a bar in a log file is noise: lines only
            from tqdm import tqdm

            self.bar = tqdm(total=target(study), initial=counted_trials(study), unit="trial", dynamic_ncols=True)

    def __call__(self, trial: FrozenTrial) -> None:
        if self.quiet:
            return
        line = trial_line(trial, self.names)
        if self.bar is None:
            print(line, flush=True)
            return
        self.bar.write(line)
        self.bar.n = min(self.bar.total, counted_trials(self.study))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_workers(n: int) -> None:
    if n < 1:
        raise HpoError(f"--n-workers={n} must be at least 1")


def _work(
    study: optuna.Study,
    storage: Storage,
    config: HpoConfig,
    url: str,
    args: argparse.Namespace,
) -> None:
    """Run this process as one worker and start the other K-1 as `hpo worker` processes."""
    _check_workers(args.n_workers)
    env = {**os.environ, "HPO_STORAGE": url}  # the URL travels in the environment, not in `ps`
    command = [sys.executable, "-m", "hpo", "worker", study.study_name, "--quiet"]
    if args.timeout is not None:
        command += ["--timeout", str(args.timeout)]
    helpers = [subprocess.Popen(command, env=env) for _ in range(args.n_workers - 1)]
    progress = _Progress(study, args.quiet)
    try:
        with Publisher(study, storage) as publish:

            def on_trial(trial: FrozenTrial) -> None:
                publish(trial)
                progress(trial)

            run_worker(study, storage, config, timeout=args.timeout, on_trial=on_trial)
    finally:
        progress.close()
        for helper in helpers:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()
    failed = [h.returncode for h in helpers if h.returncode not in (0, None)]
    if failed:
        print(f"warning: {len(failed)} worker process(es) exited with status {failed}", file=sys.stderr)
    if not args.quiet:
        print(f"\n{show_text(study)}")
        print(f"\nbrowse it: hpo dashboard --storage {redact(url)}")


def _open(url: str, config: HpoConfig | None = None, *, must_exist: bool = True) -> Storage:
    """The storage; except where a study is created, a SQLite file that is not there is an error."""
    return open_storage(url, config.storage if config else None, must_exist=must_exist)


def _verify_data(study: optuna.Study, config: HpoConfig) -> None:
    fingerprint = load_dataset(config.data).fingerprint
    if study.user_attrs.get(DATA_FINGERPRINT) != fingerprint:
        raise HpoError(
            f"study {study.study_name!r} was made on data with fingerprint "
            f"{str(study.user_attrs.get(DATA_FINGERPRINT))[:12]}, but {config.data.source!r} "
            f"now has {fingerprint[:12]}; restore the data or start a new study"
        )


def cmd_run(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    with_overrides(parser)
    _add_run_flags(parser)
    parser.add_argument(
        "--create-only", action="store_true", help="create the study (or check it exists as configured) and exit"
    )
    args = parser.parse_intermixed_args(argv)
    _check_workers(args.n_workers)
    config = hpo_config(compose(args.overrides))
    url = resolve_url(args.storage, config.storage.url)
    storage = _open(url, config, must_exist=False)
    states_of(storage, config)  # a setting this database cannot serve is an error before the study exists
    fingerprint = load_dataset(config.data).fingerprint
    study = create_or_continue(config, storage, fingerprint)
    if not args.quiet or args.create_only:
        print(f"study {study.study_name} in {redact(url)}: {counted_trials(study)}/{target(study)} trials")
    if not args.create_only:
        _work(study, storage, config, url, args)
    return 0


def cmd_resume(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("name", help="study name")
    parser.add_argument("--n-trials", type=int, metavar="N", help="run N more trials (default: finish the target)")
    _add_run_flags(parser)
    args = parser.parse_intermixed_args(argv)
    _check_workers(args.n_workers)
    url = resolve_url(args.storage)
    study, config = load_existing(args.name, _open(url), url)
    _verify_data(study, config)
    storage = _open(url, config)  # with the study's own heartbeat settings
    study = create_or_continue(config, storage, study.user_attrs[DATA_FINGERPRINT])
    if args.n_trials is not None:
        if args.n_trials < 1:
            raise HpoError(f"--n-trials={args.n_trials} must be at least 1")
        with study_lock(storage, study.study_name):
            study.set_user_attr(TARGET, counted_trials(study) + args.n_trials)
    if not args.quiet:
        print(f"resuming {study.study_name} in {redact(url)}: {counted_trials(study)}/{target(study)} trials")
    _work(study, storage, config, url, args)
    return 0


def cmd_worker(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--quiet", action="store_true", help="no per-trial lines")
    parser.add_argument("--wait", type=float, default=60.0, metavar="S", help="wait up to S s for the database")
    args = parser.parse_intermixed_args(argv)
    url = resolve_url(args.storage)
    study, config = load_existing(args.name, wait_for_storage(url, timeout=args.wait), url)
    _verify_data(study, config)
    # Joining workers must not replay the first worker's sampler stream.
    storage = _open(url, config)
    study = create_or_continue(config, storage, study.user_attrs[DATA_FINGERPRINT], seed_offset=os.getpid())
    names = objective_names(study)

    def on_trial(trial: FrozenTrial) -> None:
        publish(trial)
        if not args.quiet:
            print(trial_line(trial, names), flush=True)

    with Publisher(study, storage) as publish:
        run_worker(study, storage, config, timeout=args.timeout, on_trial=on_trial)
    return 0


__all__ = ["cmd_resume", "cmd_run", "cmd_worker"]
