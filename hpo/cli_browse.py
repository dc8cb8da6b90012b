"""`hpo dashboard | report`: look at studies, in a browser or as a folder of images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpo.dashboard import DEFAULT_HOST, DEFAULT_PORT, check_database
from hpo.errors import HpoError
from hpo.storage import open_storage, redact, resolve_url

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
    import optuna

    from hpo.curves import CurveStore
    from hpo.report import write_report

    parser.add_argument("name", help="study name")
    parser.add_argument("--storage", metavar="URL", help=STORAGE_HELP)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for index.html and its PNG images")
    args = parser.parse_intermixed_args(argv)
    url = resolve_url(args.storage)
    check_database(url)
    storage = open_storage(url)
    if args.name not in optuna.get_all_study_names(storage):
        raise HpoError(f"study {args.name!r} does not exist in {redact(url)}; `hpo studies` lists those that do")
    study = optuna.load_study(study_name=args.name, storage=storage)
    report = write_report(study, CurveStore(storage.engine).curves(args.name), Path(args.out))
    print(f"report of {args.name}: {report.index}")
    for image in report.images:
        print(f"  {image}")
    return 0
