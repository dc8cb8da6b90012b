"""`hpo dashboard | report`: look at studies, in a browser or as a folder of images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hpo.dashboard import DEFAULT_HOST, DEFAULT_PORT
from hpo.storage import open_storage, resolve_url

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
    from hpo.study import find_study

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
