"""What every `hpo` subcommand's parser shares."""

from __future__ import annotations

import argparse
from typing import NoReturn

from hpo.errors import HpoError

STORAGE_HELP = "database URL (default: $HPO_STORAGE, sqlite:///hpo.db)"


class Parser(argparse.ArgumentParser):
    """argparse that raises HpoError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise HpoError(f"{self.prog}: {message} (see {self.prog} --help)")


def with_overrides(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with the positional `key=value` Hydra overrides of study_configs/."""
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="Hydra overrides of study_configs/")
    return parser
