"""What every `hpo` subcommand's parser shares."""

from __future__ import annotations

import argparse
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
