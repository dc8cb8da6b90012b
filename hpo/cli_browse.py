"""`hpo studies | show | export | dashboard | report`: look at stored studies.

None of these trains, so none imports torch: they answer at the speed of Optuna and the
database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from hpo.dashboard import DEFAULT_HOST, DEFAULT_PORT
from hpo.results import export, show_text, studies_table
from hpo.storage import open_storage, resolve_url
from hpo.study import find_study

STORAGE_HELP = "database URL (default: $HPO_STORAGE, sqlite:///hpo.db)"


def cmd_dashboard(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo.dashboard import serve

    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    args = parser.parse_intermixed_args(argv)
    serve(resolve_url(args.storage), args.host, args.port)
    return 0


def cmd_report(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    from hpo.curves import open_curves
    from hpo.report import write_report

    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and its PNG images")
    args = parser.parse_intermixed_args(argv)
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


def _named_study(argv: Sequence[str], parser: argparse.ArgumentParser) -> tuple[optuna.Study, argparse.Namespace]:
    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    args = parser.parse_intermixed_args(argv)
    url = resolve_url(args.storage)
    return find_study(args.name, open_storage(url, must_exist=True), url), args


def cmd_show(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    study, _ = _named_study(argv, parser)
    print(show_text(study))
    return 0


def cmd_export(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    parser.add_argument("--format", required=True, choices=("csv", "json"))
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    study, args = _named_study(argv, parser)
    text = export(study, args.format)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0
