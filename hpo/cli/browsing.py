"""`hpo studies | show | export | dashboard | report | proxy`: look at stored studies, or serve them.

None of these trains, so none imports torch (the import-linter contract in pyproject.toml
says so): they answer at the speed of Optuna and the database, and a proxy or a dashboard
server stays small. What only one command draws with (matplotlib, plotly) is imported by
that command alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound

from hpo.browse import dashboard
from hpo.browse.results import show_text, studies_table, write_export
from hpo.cli.parsing import STORAGE_HELP, check_output, check_port
from hpo.errors import HpoError
from hpo.store import grpc
from hpo.store.storage import DATABASE_URLS, open_storage, redact, resolve_url
from hpo.study.lifecycle import find_study
from hpo.study.models import study_models, trial_model


def cmd_dashboard(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument(
        "--host",
        default=dashboard.DEFAULT_HOST,
        help=f"address to listen on (default {dashboard.DEFAULT_HOST}: this machine only)",
    )
    parser.add_argument(
        "--port", type=int, default=dashboard.DEFAULT_PORT, help=f"port to listen on (default {dashboard.DEFAULT_PORT})"
    )
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="folder of the studies' kept models, for the Artifacts tab (default: a SQLite database's -artifacts)",
    )
    args = parser.parse_intermixed_args(argv)
    check_port("--port", args.port)
    dashboard.serve(resolve_url(args.storage), args.host, args.port, artifacts=args.artifacts)
    return 0


def cmd_report(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo.browse.report import write_report  # matplotlib: only where a report is drawn
    from hpo.store.curves import open_curves

    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and its PNG images")
    args = parser.parse_intermixed_args(argv)
    check_output(args.out, "--out", folder=True)  # before the study is read and drawn
    url = resolve_url(args.storage)
    storage = open_storage(url, must_exist=True)
    study = find_study(args.name, storage, url)
    report = write_report(study, open_curves(storage).curves(args.name), Path(args.out))
    print(f"report of {args.name}: {report.index}")
    for image in report.images:
        print(f"  {image}")
    return 0


def cmd_studies(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    args = parser.parse_intermixed_args(argv)
    print(studies_table(open_storage(resolve_url(args.storage), must_exist=True)))
    return 0


def _named_study(
    argv: Sequence[str],
    parser: argparse.ArgumentParser,
    check: Callable[[argparse.Namespace], None] | None = None,
) -> tuple[optuna.Study, argparse.Namespace]:
    """The study the command names, after `check` of its arguments (before the database is opened)."""
    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    args = parser.parse_intermixed_args(argv)
    if check is not None:
        check(args)
    url = resolve_url(args.storage)
    return find_study(args.name, open_storage(url, must_exist=True), url), args


def cmd_show(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    study, _ = _named_study(argv, parser)
    print(show_text(study))
    return 0


def cmd_export(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("--format", choices=("csv", "json"), help="the trials' table as CSV or JSON")
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    parser.add_argument("--trial", type=int, metavar="N", help="with --model: the trial whose kept model to write")
    parser.add_argument("--model", metavar="FILE", help="write trial N's kept model to FILE (a checkpoint)")
    parser.add_argument("--artifacts", metavar="DIR", help="folder of the kept models (default: the study's)")
    study, args = _named_study(argv, parser, _check_export)
    if args.model is not None or args.trial is not None:
        return _export_model(study, args)
    if args.output:
        with open(args.output, "w", newline="") as handle:
            write_export(study, args.format, handle)
    else:
        write_export(study, args.format, sys.stdout)
    return 0


def _check_export(args: argparse.Namespace) -> None:
    """The flags of `hpo export`, and the file it writes, before the database is opened."""
    if args.model is not None or args.trial is not None:
        if args.model is None or args.trial is None:
            raise HpoError("--trial N and --model FILE go together: hpo export NAME --trial N --model FILE")
        if args.format is not None or args.output is not None:
            raise HpoError("--model FILE writes a model, --format and --output a table: give one or the other")
        if args.trial < 0:
            raise HpoError(f"--trial={args.trial} must be a trial number, 0 or more (`hpo show NAME` lists them)")
        check_output(args.model, "--model", new_folders=False)
        return
    if args.format is None:
        raise HpoError("hpo export needs --format csv|json (the trials' table) or --trial N --model FILE (a model)")
    if args.output:
        check_output(args.output, "--output", new_folders=False)


def _export_model(study: optuna.Study, args: argparse.Namespace) -> int:
    """`hpo export NAME --trial N --model FILE`: a kept model, as the trial's run saved it."""
    folder = study_models(study, resolve_url(args.storage), args.artifacts)
    model = trial_model(study, args.trial)
    path = Path(args.model)
    try:
        folder.download(model, path)
    except ArtifactNotFound:
        raise HpoError(
            f"trial {args.trial}'s model ({model.artifact_id}) is not in {folder.path}; "
            "give the folder the workers kept it in: --artifacts DIR"
        ) from None
    except OSError as exc:
        raise HpoError(f"--model {args.model}: cannot write it ({exc.strerror}); give a writable file path") from None
    print(f"trial {args.trial}'s model: {path}")
    return 0


def cmd_proxy(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo.browse import proxy  # plotly, for the figures it draws: only where a proxy runs

    parser.add_argument(
        "--storage", metavar="URL", help="database URL to serve (default: $HPO_STORAGE, sqlite:///hpo.db)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=proxy.DEFAULT_PORT, help=f"port (default {proxy.DEFAULT_PORT})")
    parser.add_argument(
        "--figures-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="redraw the dashboard figures of proxied studies this often (default 10; 0: never)",
    )
    args = parser.parse_intermixed_args(argv)
    check_port("--port", args.port)
    if args.figures_every < 0:
        raise HpoError(f"--figures-every {args.figures_every:g} is negative; give seconds, or 0 to draw no figures")
    url = resolve_url(args.storage)
    if grpc.is_grpc(url):
        raise HpoError(f"--storage {redact(url)} is a proxy itself; a proxy serves a database: use {DATABASE_URLS}")
    # The address first (a port in use, a host not of this machine): a new database is fine,
    # as workers create their studies through the proxy, but not one left by a failed start.
    dashboard.bind(args.host, args.port).server_close()
    database = open_storage(url)
    assert isinstance(database, optuna.storages.RDBStorage)  # not a proxy: checked above
    proxy.serve(database, redact(url), args.host, args.port, args.figures_every)
    return 0
