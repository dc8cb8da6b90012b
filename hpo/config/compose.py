"""Compose `study_configs/` with Hydra and turn the result into typed, validated configs.

This is the only module that touches Hydra or OmegaConf. hpo uses Hydra's Compose API,
not `@hydra.main`, so that `hpo` keeps its subcommands while Hydra keeps its config groups
and `key=value` overrides (docs/architecture.md, Decisions). Everything else receives
frozen dataclasses.

A user's config folder (`--config-dir DIR`, else `$HPO_CONFIG_DIR`) joins Hydra's config
search path ahead of `study_configs/`, through Hydra's SearchPathPlugin hook, as Hydra's
own `--config-dir` does: its group options and presets sit beside the packaged ones, and
one with a packaged option's name replaces it.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.errors import HydraException, OverrideParseException
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from hpo.config.settings import TRAIN_KEYS, HpoConfig
from hpo.config.structured import build
from hpo.config.training import RunSpec
from hpo.errors import HpoError

CONFIG_DIR_ENV = "HPO_CONFIG_DIR"

# The user's folder while `compose` initializes Hydra; read by _UserConfigDir.
_user_dir: ContextVar[Path | None] = ContextVar("hpo_user_config_dir", default=None)


class _UserConfigDir(SearchPathPlugin):
    """Hydra's hook on the config search path: the user's folder goes first, as Hydra's
    own `--config-dir` puts it, so that an option found in both folders is the user's."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = _user_dir.get()
        if folder is not None:
            search_path.prepend(provider="hpo --config-dir", path=f"file://{folder}")


def builtin_config_dir() -> Path:
    """`study_configs/`: inside the package when installed from a wheel (pyproject maps it
    there as package data), beside the package in a source tree or an editable install."""
    package = Path(__file__).resolve().parents[1]  # hpo/
    for candidate in (package / "study_configs", package.parent / "study_configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise AssertionError(f"study_configs/ is missing from the installation at {package}")


def user_config_dir(config_dir: str | Path | None = None) -> Path | None:
    """The user's config folder, absolute: `config_dir` (the `--config-dir` flag), else
    `$HPO_CONFIG_DIR`, else None. A path that is not a folder is a user error."""
    if config_dir is not None and str(config_dir) != "":
        given, name = str(config_dir), f"--config-dir {config_dir}"
    elif os.environ.get(CONFIG_DIR_ENV):
        given = os.environ[CONFIG_DIR_ENV]
        name = f"{CONFIG_DIR_ENV}={given}"
    else:
        return None
    folder = Path(given).expanduser().resolve()
    if not folder.exists():
        raise HpoError(f"{name}: no such folder ({folder})")
    if not folder.is_dir():
        raise HpoError(f"{name}: {folder} is not a folder")
    if (folder / "config.yaml").exists():
        raise HpoError(
            f"{name}: {folder / 'config.yaml'} would replace hpo's root config; a config folder "
            "holds group options only (for example experiment/NAME.yaml, data/NAME.yaml)"
        )
    return folder


def _search_folders(user: Path | None) -> list[Path]:
    """The folders Hydra searches, in its order: the user's first."""
    return [user, builtin_config_dir()] if user is not None else [builtin_config_dir()]


def compose(overrides: Sequence[str] = (), *, config_dir: str | Path | None = None) -> dict[str, Any]:
    """The composed config as plain nested dicts, with interpolations resolved.

    `config_dir` (default `$HPO_CONFIG_DIR`) is a folder of the user's own group options
    and presets, searched before `study_configs/`. Hydra's own exceptions are several
    types with multi-line messages; they become one HpoError line that keeps Hydra's first
    sentence and names the override syntax.
    """
    overrides = _check_syntax(overrides)
    user = user_config_dir(config_dir)
    Plugins.instance().register(_UserConfigDir)  # once: a registered class is not added again
    token = _user_dir.set(user)
    try:
        with initialize_config_dir(config_dir=str(builtin_config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        data = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise HpoError(_one_line(exc, user)) from None
    finally:
        _user_dir.reset(token)
    assert isinstance(data, dict)
    return {str(key): value for key, value in data.items()}


def apply_overrides(
    base: Mapping[str, Any], overrides: Sequence[str], what: str, *, config_dir: str | Path | None = None
) -> dict[str, Any]:
    """`base`, a composed config in the form `compose` returns (a stored study's, say), with
    Hydra `key=value` overrides applied as `compose` applies them: Hydra's override grammar
    and OmegaConf's merge, so each value is the one `compose` gives (4 an int, 1e-3 a
    float, true a bool, {a: 1} merged into the mapping there).

    Keys must exist: `+key=value` adds one, `~key` deletes one. An override that picks a
    config group option (`budget=steps`) is refused, since `base` is composed already;
    `what` names who refuses it (`--from-trial`). The groups are those of `study_configs/`
    and of the user's config folder (`config_dir`, else `$HPO_CONFIG_DIR`).
    """
    overrides = _check_syntax(overrides)
    groups = _groups(user_config_dir(config_dir))
    try:
        parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
    except OverrideParseException as exc:
        raise HpoError(_one_line(exc)) from None
    cfg = OmegaConf.create(copy.deepcopy(dict(base)))
    OmegaConf.set_struct(cfg, True)  # as Hydra leaves a composed config: unknown keys are errors
    for override in parsed:
        key, text = override.key_or_group, str(override.input_line)
        if override.is_sweep_override():
            raise HpoError(f"{text!r} is a sweep; {what} takes one value per key")
        value = override.value()
        top_mapping = "." not in key and isinstance(base.get(key), Mapping)
        if override.package is not None or (
            not override.is_delete()
            and not isinstance(value, dict)
            and (key in groups or (top_mapping and isinstance(value, str)))
        ):
            raise HpoError(
                f"{text!r} picks a config group option, which {what} cannot take: "
                "set keys instead (for example budget.tokens=20000000)"
            )
        try:
            _apply(cfg, key, value, override, text)
        except HpoError:
            raise
        except OmegaConfBaseException as exc:
            raise HpoError(f"cannot apply {text!r}: {_one_line(exc)}") from None
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    return {str(k): v for k, v in data.items()}


def _apply(cfg: DictConfig, key: str, value: Any, override: Override, text: str) -> None:
    """One parsed override applied to `cfg` as Hydra applies a composed config's overrides
    (ConfigLoaderImpl._apply_overrides_to_config), with hpo's one-line errors."""
    current = OmegaConf.select(cfg, key, throw_on_missing=False)
    if override.is_delete():
        if current is None:
            raise HpoError(f"cannot delete {key}: {_no_key(cfg, key)}")
        if value is not None and value != current:
            raise HpoError(f"cannot delete {key}: its value is {current}, not {value}")
        parent, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            node = OmegaConf.select(cfg, parent) if parent else cfg
            del node[leaf]
    elif override.is_add():
        if current is not None and not isinstance(value, (dict, list)):
            raise HpoError(f"cannot add {key}: it is set already; write {text[1:]} to change it")
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    elif override.is_force_add():
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    elif current is None and not _has_key(cfg, key):
        raise HpoError(_no_key(cfg, key))
    else:
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as exc:
            missing = str(getattr(exc, "full_key", "") or key)
            if isinstance(value, dict) and missing.startswith(key + "."):
                raise HpoError(
                    f"{key} has no key {missing.removeprefix(key + '.')!r}, and {key}={{...}} only updates its keys; "
                    f"to replace the whole entry write ~{key} +{key}={text.split('=', 1)[1]}"
                ) from None
            raise


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether `key` (dotted) is in `cfg`, also where its value is null."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    return isinstance(node, DictConfig) and leaf in node


def _no_key(cfg: DictConfig, key: str) -> str:
    """An unknown key, with the closest key that exists."""
    keys = list(_dotted_keys(OmegaConf.to_container(cfg)))
    close = difflib.get_close_matches(key, keys, n=1)
    if close:
        return f"unknown config key {key}; did you mean {close[0]}?"
    return f"unknown config key {key}; +{key}=VALUE adds it"


def _dotted_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for name, child in node.items():
            yield f"{prefix}{name}"
            yield from _dotted_keys(child, f"{prefix}{name}.")


def _check_syntax(overrides: Sequence[str]) -> list[str]:
    """The overrides as Hydra's grammar takes them: HpoError for one that is not key=value,
    and a plain value with non-ASCII letters (`study.name=café`) quoted, as the grammar
    reads unquoted values as ASCII only."""
    checked = []
    for override in overrides:
        if "=" not in override and not override.startswith("~"):  # ~key deletes key
            raise HpoError(f"override {override!r} is not key=value (for example model.n_layer=4)")
        checked.append(_quote_text(override))
    return checked


# What makes a value more than one plain word in Hydra's grammar: a list, a mapping, a sweep,
# a quoted string, a function call, an interpolation, an escape.
_STRUCTURE = set("[]{}(),'\"$\\")


def _quote_text(override: str) -> str:
    """`key=value` with `value` quoted when it is plain text with a non-ASCII letter."""
    key, sep, value = override.partition("=")
    if not sep or value.isascii() or _STRUCTURE & set(value) or value != value.strip():
        return override
    return f"{key}='{value}'"


def _groups(user: Path | None) -> set[str]:
    """The config groups: the folders of `study_configs/` and of the user's folder."""
    return {path.name for folder in _search_folders(user) for path in folder.iterdir() if path.is_dir()}


def run_spec(composed: dict[str, Any]) -> RunSpec:
    """The RunSpec part of a composed config, validated alone (no search space)."""
    return build(RunSpec, {key: composed[key] for key in TRAIN_KEYS if key in composed})


def hpo_config(composed: dict[str, Any]) -> HpoConfig:
    """The typed, validated form of a whole composed config."""
    return build(HpoConfig, composed)


def _options_setting(key: str, user: Path | None = None) -> list[str]:
    """The options of `key`'s group whose file sets the rest of it (pruner.pause:
    ["pruner=moasha"]): a key that the chosen option lacks is often another option's. The
    group's default comes first, as the likeliest intent (sampler=tpe for random_fraction).
    The user's folder is searched too, and its file wins where both have an option."""
    group, _, rest = key.partition(".")
    absent = object()
    defaults = OmegaConf.load(builtin_config_dir() / "config.yaml").defaults
    default = next((entry[group] for entry in defaults if isinstance(entry, DictConfig) and group in entry), None)
    files: dict[str, Path] = {}
    for folder in reversed(_search_folders(user)):  # the user's last, so that its files win
        files.update({file.stem: file for file in (folder / group).glob("*.yaml")})
    owners = [
        option
        for option, file in sorted(files.items())
        if rest and OmegaConf.select(OmegaConf.load(file), rest, default=absent) is not absent
    ]
    return [f"{group}={option}" for option in sorted(owners, key=lambda option: option != default)]


def _one_line(exc: Exception, user: Path | None = None) -> str:
    """Hydra's multi-line messages, reduced to the sentence and the fix a user needs."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OverrideParseException):
        if not first.isascii():
            return (
                f"malformed override: {first}; Hydra reads non-ASCII letters only inside quotes: "
                "quote the value, for example 'study.name=\"café\"' or "
                "\"+search_space.pos_encoding={choices: ['été']}\""
            )
        return f"malformed override: {first}; write key=value, for example model.n_layer=4"
    if first.startswith("Could not override"):
        key = first.split("'")[1]
        missing = getattr(exc.__cause__, "full_key", key)
        if missing.startswith(key + "."):  # the key exists, and a {...} value merges into it: it lacks one of those
            value = lines[-1].split("=", 1)[1]
            return (
                f"{key} has no key {missing.removeprefix(key + '.')!r}, and {key}={{...}} only updates its keys; "
                f"to replace the whole entry write ~{key} +{key}={value}"
            )
        if owners := _options_setting(key, user):
            return f"unknown config key {key}: it is a key of {' and '.join(owners)}; add {owners[0]} to the overrides"
        return f"unknown config key {key}; `hpo config` prints the keys that exist"
    if first.startswith("Could not delete"):
        return f"{first.removesuffix('.')}; `hpo config` prints the keys that exist"
    if "Available options" in str(exc):
        block = str(exc).split("Available options", 1)[1].split("Config search path")[0]
        options = [line.strip() for line in block.splitlines()[1:] if line.strip()]
        missing = first.removeprefix("In 'config': ")
        return f"{missing}; available: {', '.join(options)}"
    return first
