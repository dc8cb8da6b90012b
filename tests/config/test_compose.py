"""Every file under study_configs/ composes into a valid RunSpec; bad overrides are user errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.config.compose import builtin_config_dir, compose, run_spec
from hpo.config.settings import TRAIN_KEYS
from hpo.config.training import RunSpec
from hpo.errors import HpoError

CONFIG_DIR = builtin_config_dir()
GROUP_OPTIONS = sorted(
    (path.parent.name, path.stem) for path in CONFIG_DIR.glob("*/*.yaml") if path.parent.name != "experiment"
)
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    return data or {}


def test_the_config_folder_is_found() -> None:
    assert (CONFIG_DIR / "config.yaml").is_file()
    assert {"model", "data", "optim", "train", "budget", "experiment"} <= {
        p.name for p in CONFIG_DIR.iterdir() if p.is_dir()
    }
    assert "smoke" in EXPERIMENTS


def test_default_config() -> None:
    composed = compose()
    config = run_spec(composed)
    assert isinstance(config, RunSpec)
    for group in TRAIN_KEYS:
        defaults = read_yaml(CONFIG_DIR / group / f"{_default_option(group)}.yaml")
        assert composed[group] == defaults, group
    assert config.budget.tokens == read_yaml(CONFIG_DIR / "budget" / "tokens.yaml")["tokens"]


def _default_option(group: str) -> str:
    for entry in read_yaml(CONFIG_DIR / "config.yaml")["defaults"]:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    raise AssertionError(f"{group} has no default in config.yaml")


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    composed = compose([f"{group}={option}"])
    run_spec(composed)
    # The option's file reaches the composed config unchanged.
    assert composed[group] == read_yaml(CONFIG_DIR / group / f"{option}.yaml")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(name: str) -> None:
    composed = compose([f"experiment={name}"])
    config = run_spec(composed)
    preset = read_yaml(CONFIG_DIR / "experiment" / f"{name}.yaml")
    # Each training value the preset sets wins over the group defaults.
    for section in TRAIN_KEYS:
        for key, value in (preset.get(section) or {}).items():
            assert getattr(getattr(config, section), key) == value, f"{section}.{key}"


def test_smoke_experiment_is_a_tiny_run() -> None:
    config = run_spec(compose(["experiment=smoke"]))
    assert config.model.n_layer <= 2 and config.model.n_embd <= 64 and config.model.block_size <= 64
    assert config.budget.tokens is not None and config.budget.tokens <= 500_000


def test_overrides_reach_the_config() -> None:
    config = run_spec(
        compose(
            [
                "experiment=smoke",
                "model.n_layer=1",
                "model.pos_encoding=rope",
                "optim=sgd",
                "optim.lr=0.05",
                "train.batch_size=16",
                "budget.tokens=12345",
                "data.tokenizer=byte",
            ]
        )
    )
    assert config.model.n_layer == 1 and config.model.pos_encoding == "rope"
    assert config.model.n_embd == 64  # from the experiment
    assert (config.optim.name, config.optim.lr) == ("sgd", 0.05)
    assert config.train.batch_size == 16
    assert config.budget.tokens == 12345
    assert config.data.tokenizer == "byte"


def test_switching_the_budget_kind() -> None:
    config = run_spec(compose(["budget=steps", "budget.steps=20"]))
    assert (config.budget.steps, config.budget.tokens) == (20, None)
    config = run_spec(compose(["budget=seconds", "budget.seconds=1.5"]))
    assert config.budget.seconds == 1.5


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        # an unknown option of a group: names it and lists the real ones
        (["optim=nope"], ["optim/nope", "adamw", "sgd"]),
        (["model=huge"], ["model/huge", "small"]),
        (["experiment=nope"], ["experiment/nope", "smoke"]),
        # an unknown key
        (["model.n_layers=2"], ["model.n_layers"]),
        (["optim.learning_rate=0.1"], ["optim.learning_rate"]),
        (["experiment.x=1"], ["unknown config key experiment.x;", "hpo config"]),  # not a key: a group
        (["nope.x=1"], ["unknown config key nope.x;"]),
        # a key of another option of the group: names the option that has it
        (["pruner=median", "pruner.pause=true"], ["pruner.pause", "a key of pruner=moasha;", "add pruner=moasha"]),
        (["budget.steps=20"], ["budget.steps", "a key of budget=steps;"]),
        # a {...} value merges into an existing entry: a key that entry lacks, and how to replace it
        (
            ["experiment=smoke", "search_space.n_layer={choices:[1]}"],
            ["search_space.n_layer has no key 'choices'", "~search_space.n_layer +search_space.n_layer={choices:[1]}"],
        ),
        # deleting a key that is not there
        (["~model.n_layers"], ["'model.n_layers' does not exist", "hpo config"]),
        # malformed overrides
        (["model.n_layer=["], ["malformed"]),
        (["model.n_layer=1)"], ["malformed"]),
        # no '='
        (["model.n_layer"], ["model.n_layer", "key=value"]),
        (["experiment=smoke", "smoke"], ["'smoke'", "key=value"]),
        # wrong types
        (["model.n_layer=two"], ["model.n_layer", "two", "integer"]),
        (["model.n_layer=2.5"], ["model.n_layer", "2.5"]),
        (["optim.lr=fast"], ["optim.lr", "fast", "number"]),
        (["model.bias=3"], ["model.bias", "true or false"]),
        (["train.batch_size=[1,2]"], ["train.batch_size"]),
        # values a dataclass rejects
        (["model.pos_encoding=nope"], ["model.pos_encoding", "nope"]),
        (["optim.name=nope"], ["optim.name", "nope"]),
        (["optim.lr=0"], ["optim.lr=0"]),
        (["optim.lr=-1"], ["optim.lr=-1"]),
        (["train.batch_size=0"], ["train.batch_size=0"]),
        (["budget.tokens=0"], ["budget.tokens=0"]),
        (["model.n_head=3"], ["n_embd=128", "n_head=3"]),
    ],
)
def test_bad_overrides_are_one_line_user_errors(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(HpoError) as info:
        run_spec(compose(overrides))
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


def test_an_entry_is_replaced_by_deleting_and_adding_it() -> None:
    composed = compose(["experiment=smoke", "~search_space.n_layer", "+search_space.n_layer={choices:[1]}"])
    assert composed["search_space"]["n_layer"] == {"choices": [1]}


def test_compose_recovers_after_an_error() -> None:
    with pytest.raises(HpoError):
        compose(["optim=nope"])
    assert compose(["optim=sgd"])["optim"]["name"] == "sgd"
