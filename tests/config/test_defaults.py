"""Every default is written once: the dataclasses and the YAML groups that users read agree.

A config group's default option (the one study_configs/config.yaml names) states the
defaults of its dataclass in YAML, with the comments a user reads; the dataclass holds
them for Python and for stored studies that lack a key. This test fails on any
disagreement, so neither can drift from the other.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import yaml

from hpo.config.compose import builtin_config_dir
from hpo.config.settings import HpoConfig

CONFIG_DIR = builtin_config_dir()
# search_space has no dataclass default: study_configs/search_space/default.yaml is the only one.
GROUPS = [f for f in dataclasses.fields(HpoConfig) if f.name != "search_space"]


def _default_options() -> dict[str, str]:
    defaults = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())["defaults"]
    return {group: option for entry in defaults if isinstance(entry, dict) for group, option in entry.items()}


def _plain(value: Any) -> Any:
    """As a database stores it: tuples and lists alike, 900 and 900.0 alike."""
    return json.loads(json.dumps(value), parse_int=float)


def _yaml(group: str, option: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text()) or {}


@pytest.mark.parametrize("field", GROUPS, ids=[f.name for f in GROUPS])
def test_the_default_option_states_the_dataclass_defaults(field: dataclasses.Field) -> None:
    option = _default_options()[field.name]
    stated = _yaml(field.name, option)
    assert callable(field.default_factory)
    defaults = dataclasses.asdict(field.default_factory())
    for key, value in stated.items():
        assert key in defaults, f"{field.name}/{option}.yaml: {key} is not a field of {field.type}"
        assert _plain(value) == _plain(defaults[key]), (
            f"{field.name}.{key}: {field.name}/{option}.yaml says {value!r}, the dataclass {defaults[key]!r}"
        )
    # A field the default option leaves out is another option's (pruner.pause is moasha's):
    # composing the default then lacks the key, and its dataclass default applies.
    others = [_yaml(field.name, path.stem) for path in (CONFIG_DIR / field.name).glob("*.yaml")]
    for key in defaults.keys() - stated.keys():
        assert any(key in other for other in others), f"{field.name}.{key} is in no YAML of study_configs/{field.name}/"
