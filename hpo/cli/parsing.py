"""What every `hpo` subcommand's parser shares."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import NoReturn

from hpo.errors import HpoError

STORAGE_HELP = "database URL (default: $HPO_STORAGE, sqlite:///hpo.db)"
CONFIG_DIR_HELP = (
    "a folder of your own config group options and presets (DIR/experiment/NAME.yaml, DIR/data/NAME.yaml), "
    "found beside study_configs/; an option of the same name as a packaged one is yours (default: $HPO_CONFIG_DIR)"
)


class Parser(argparse.ArgumentParser):
    """argparse that raises HpoError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise HpoError(f"{self.prog}: {message} (see {self.prog} --help)")


def with_overrides(parser: argparse.ArgumentParser, stored: bool = False) -> argparse.ArgumentParser:
    """`parser` with the positional `key=value` Hydra overrides of study_configs/, and
    `--config-dir DIR` (args.config_dir, None without the flag), which `compose` takes as
    `config_dir` and which falls back to $HPO_CONFIG_DIR there. Overrides of a `stored`
    study's config take no config folder: that config comes from the database."""
    if stored:
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the study's stored config")
        return parser
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides of study_configs/")
    parser.add_argument("--config-dir", metavar="DIR", help=CONFIG_DIR_HELP)
    return parser


def check_positive(flag: str, value: float | None, fix: str) -> None:
    """HpoError unless `value` (of `flag`, None when not given) is greater than 0."""
    if value is not None and not value > 0:
        raise HpoError(f"{flag}={value:g} must be greater than 0; {fix}")


def check_port(flag: str, port: int) -> None:
    """HpoError unless `port` is a TCP port number."""
    if not 1 <= port <= 65535:
        raise HpoError(f"{flag}={port} must be between 1 and 65535; pass a free port, such as {flag}=8081")


def check_output(path: str | Path, what: str, *, folder: bool = False, new_folders: bool = True) -> None:
    """HpoError, naming `what` (the flag or key that gave `path`), unless `path` can be
    written: an existing file (a folder with `folder`) this process may write, or a new
    one in a folder that exists and takes files, or (`new_folders`: the writer makes them)
    whose missing folders can be made there. Checked before the work whose result goes
    there; nothing is created."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    fix = "give a path in a folder you can write"
    if path.exists():
        if folder and not path.is_dir():
            raise HpoError(f"{what}={path} is a file, not a folder; {fix}")
        if not folder and path.is_dir():
            raise HpoError(f"{what}={path} is a folder; give a file path in it, such as {path / 'out'}")
        if not os.access(path, os.W_OK) or (folder and not _takes_files(path)):
            raise HpoError(f"{what}={path} cannot be written; {fix}")
        return
    existing = path.parent
    if not new_folders and not existing.exists():
        raise HpoError(f"{what}={path}: folder {existing} does not exist; create it first, or {fix}")
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HpoError(f"{what}={path} is under {existing}, which is a file, not a folder; {fix}")
    if not _takes_files(existing):
        raise HpoError(f"{what}={path} cannot be written: folder {existing} takes no new files; {fix}")


def _takes_files(folder: Path) -> bool:
    """Whether a file can be made in `folder`: tried, as permissions do not say it for
    root, a read-only file system or /proc."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".hpo-write-check-"):
            return True
    except OSError:
        return False
