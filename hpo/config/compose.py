"""Compose `study_configs/` with Hydra and turn the result into typed, validated configs.

This is the only module that touches Hydra or OmegaConf. hpo uses Hydra's Compose API,
not `@hydra.main`, so that `hpo` keeps its subcommands while Hydra keeps its config groups
and `key=value` overrides (docs/architecture.md, Decisions). Everything else receives
frozen dataclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpo.config.settings import TRAIN_KEYS, HpoConfig
from hpo.config.structured import build
from hpo.config.training import RunSpec
from hpo.errors import HpoError


def builtin_config_dir() -> Path:
    """`study_configs/`: inside the package when installed from a wheel (pyproject maps it
    there as package data), beside the package in a source tree or an editable install."""
    package = Path(__file__).resolve().parents[1]  # hpo/
    for candidate in (package / "study_configs", package.parent / "study_configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise AssertionError(f"study_configs/ is missing from the installation at {package}")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as plain nested dicts, with interpolations resolved.

    Hydra's own exceptions are several types with multi-line messages; they become one
    HpoError line that keeps Hydra's first sentence and names the override syntax.
    """
    for override in overrides:
        if "=" not in override and not override.startswith("~"):  # ~key deletes key
            raise HpoError(f"override {override!r} is not key=value (for example model.n_layer=4)")
    try:
        with initialize_config_dir(config_dir=str(builtin_config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        data = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise HpoError(_one_line(exc)) from None
    assert isinstance(data, dict)
    return {str(key): value for key, value in data.items()}


def run_spec(composed: dict[str, Any]) -> RunSpec:
    """The RunSpec part of a composed config, validated alone (no search space)."""
    return build(RunSpec, {key: composed[key] for key in TRAIN_KEYS if key in composed})


def hpo_config(composed: dict[str, Any]) -> HpoConfig:
    """The typed, validated form of a whole composed config."""
    return build(HpoConfig, composed)


def _options_setting(key: str) -> list[str]:
    """The options of `key`'s group whose file sets the rest of it (pruner.pause:
    ["pruner=moasha"]): a key that the chosen option lacks is often another option's. The
    group's default comes first, as the likeliest intent (sampler=tpe for random_fraction)."""
    group, _, rest = key.partition(".")
    folder = builtin_config_dir() / group
    absent = object()
    defaults = OmegaConf.load(builtin_config_dir() / "config.yaml").defaults
    default = next((entry[group] for entry in defaults if isinstance(entry, DictConfig) and group in entry), None)
    owners = [
        file.stem
        for file in sorted(folder.glob("*.yaml"))
        if rest and OmegaConf.select(OmegaConf.load(file), rest, default=absent) is not absent
    ]
    return [f"{group}={option}" for option in sorted(owners, key=lambda option: option != default)]


def _one_line(exc: Exception) -> str:
    """Hydra's multi-line messages, reduced to the sentence and the fix a user needs."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if isinstance(exc, OverrideParseException):
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
        if owners := _options_setting(key):
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
