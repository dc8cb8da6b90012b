"""Every YAML under study_configs/ composes and validates as a whole study config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpo.config.compose import builtin_config_dir, compose, hpo_config
from hpo.config.search import PrunerConfig
from hpo.config.settings import HpoConfig

CONFIG_DIR = builtin_config_dir()
OPTIONS = sorted((path.parent.name, path.stem) for path in CONFIG_DIR.glob("*/*.yaml") if path.parent != CONFIG_DIR)


def needs(group: str, option: str) -> list[str]:
    """Overrides an option needs to validate: Optuna's pruners need a single-objective study."""
    if group == "pruner" and PrunerConfig(name=option).is_optunas:  # type: ignore[arg-type]
        return ["study.objectives=[val_accuracy]"]
    return []


def test_every_group_file_is_listed() -> None:
    groups = {group for group, _ in OPTIONS}
    assert {"model", "data", "optim", "train", "budget", "search_space", "study", "sampler"} <= groups
    assert {"pruner", "storage", "resources", "experiment"} <= groups
    assert len(OPTIONS) == len(list(CONFIG_DIR.glob("*/*.yaml")))


def test_the_root_config_lists_every_group() -> None:
    defaults = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())["defaults"]
    listed = {next(iter(entry)) for entry in defaults if isinstance(entry, dict)}
    assert {group for group, _ in OPTIONS} <= listed


def test_the_default_config_validates() -> None:
    config = hpo_config(compose([]))
    assert isinstance(config, HpoConfig)
    assert config.study.objectives == ("val_accuracy", "tokens_per_sec")


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_validates(group: str, option: str) -> None:
    composed = compose([f"{group}={option}", *needs(group, option)])
    config = hpo_config(composed)
    assert isinstance(config, HpoConfig)
    config.space  # noqa: B018 - the search space parses
    text = (CONFIG_DIR / group / f"{option}.yaml").read_text()
    if group == "experiment":
        assert "# @package _global_" in text
    else:
        # the option's own keys are what was composed into its group (experiments aside)
        own = yaml.safe_load(text) or {}
        own.pop("defaults", None)
        for key, value in own.items():
            assert composed[group][key] == value, f"{group}/{option}.yaml: {key}"


@pytest.mark.parametrize("option", sorted(o for g, o in OPTIONS if g == "experiment"))
def test_experiment_with_each_sampler_and_pruner(option: str) -> None:
    for sampler in sorted(o for g, o in OPTIONS if g == "sampler"):
        config = hpo_config(compose([f"experiment={option}", f"sampler={sampler}"]))
        assert config.sampler.name == sampler
    for pruner in sorted(o for g, o in OPTIONS if g == "pruner"):
        config = hpo_config(compose([f"experiment={option}", f"pruner={pruner}", *needs("pruner", pruner)]))
        assert config.pruner.name == pruner


def test_optuna_pruners_refuse_two_objectives() -> None:
    from hpo.errors import HpoError

    for pruner in sorted(o for g, o in OPTIONS if g == "pruner" and needs(g, o)):
        with pytest.raises(HpoError, match="single objective"):
            hpo_config(compose([f"pruner={pruner}"]))


def test_config_files_ship_with_the_package() -> None:
    # `pip install .` maps study_configs/ into the package (pyproject's package-data)
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    tool = pyproject["tool"]["setuptools"]
    assert tool["package-dir"]["hpo.study_configs"] == "study_configs"
    assert tool["package-data"]["*"] == ["*.yaml"]
    root = Path(__file__).parents[2] / "study_configs"
    groups = {f"hpo.study_configs.{d.name}" for d in root.iterdir() if d.is_dir()}
    assert groups <= set(tool["packages"]), "list every config group folder in pyproject's packages"
