"""Every file under study_configs/ composes into a valid RunSpec; bad overrides are user errors;
a user's config folder joins the search; apply_overrides gives what compose gives."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.config.compose import apply_overrides, builtin_config_dir, compose, run_spec
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


# --------------------------------------------------------------------------------------------------
# A user's config folder (--config-dir, $HPO_CONFIG_DIR); the CLI's side is tests/cli/test_config_dir.py


def _user_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "my_configs"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_a_user_folder_adds_options_and_wins_on_a_name_clash(tmp_path: Path) -> None:
    folder = _user_folder(
        tmp_path,
        {
            "experiment/mine.yaml": "# @package _global_\nstudy: {name: mine}\nbudget: {tokens: 4321}\n",
            "optim/sgd.yaml": "name: sgd\nlr: 0.5\n",
        },
    )
    composed = compose(["experiment=mine", "optim=sgd"], config_dir=folder)
    assert (composed["study"]["name"], composed["budget"]["tokens"]) == ("mine", 4321)
    assert composed["optim"] == {"name": "sgd", "lr": 0.5}  # the user's sgd.yaml, not hpo's
    assert compose(["optim=sgd"])["optim"]["lr"] != 0.5
    assert compose(["experiment=smoke"], config_dir=folder)["study"]["name"] == "smoke"  # hpo's presets stay


def test_the_environment_variable_names_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _user_folder(tmp_path, {"budget/tiny.yaml": "tokens: 777\n"})
    monkeypatch.setenv("HPO_CONFIG_DIR", str(folder))
    assert compose(["budget=tiny"])["budget"] == {"tokens": 777}
    monkeypatch.setenv("HPO_CONFIG_DIR", "")  # empty: no folder
    with pytest.raises(HpoError, match="budget/tiny"):
        compose(["budget=tiny"])


@pytest.mark.parametrize(
    ("files", "overrides", "needles"),
    [
        # an unknown option lists the options of both folders
        ({"optim/mine.yaml": "name: sgd\n"}, ["optim=nope"], ["optim/nope", "adamw", "mine", "sgd"]),
        # a key of another option names the user's options too
        (
            {"pruner/gentle.yaml": "name: moasha\npause: false\n"},
            ["pruner=median", "pruner.pause=true"],
            ["a key of pruner=gentle and pruner=moasha;"],
        ),
        # a config.yaml of its own would replace hpo's root config
        ({"config.yaml": "defaults: []\n"}, [], ["--config-dir", "config.yaml", "group options only"]),
    ],
)
def test_user_folder_errors(tmp_path: Path, files: dict[str, str], overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(HpoError) as info:
        compose(overrides, config_dir=_user_folder(tmp_path, files))
    assert "\n" not in str(info.value)
    for needle in needles:
        assert needle in str(info.value)


def test_a_folder_that_is_not_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HpoError, match=f"^--config-dir {tmp_path}/nowhere: no such folder"):
        compose([], config_dir=tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(HpoError, match=r"^--config-dir .*file is not a folder$"):
        compose([], config_dir=tmp_path / "file")
    monkeypatch.setenv("HPO_CONFIG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(HpoError, match=f"^HPO_CONFIG_DIR={tmp_path}/nowhere: no such folder"):
        compose([])


# --------------------------------------------------------------------------------------------------
# apply_overrides: overrides on a composed config, as compose applies them

SAME_AS_COMPOSE = [
    ["optim.lr=1e-3"],
    ["model.n_layer=2", "model.bias=true", "model.dropout=0.1"],
    ["budget.tokens=20000", "train.evals=3"],
    ["study.name='my study'", 'train.checkpoint="out/model.pt"'],
    ["data.sha256=null", "data.source=/tmp/corpus.txt"],
    ["study.baselines=[{n_head: 4}]", "study.objectives=[val_accuracy]"],
    ["search_space.lr={low: 1e-4, high: 1e-2}"],  # a {...} value updates the entry's keys
    ["search_space.n_layer=2", "search_space.n_head={choices: [2]}"],
    ["~search_space.n_layer", "+search_space.n_layer={choices:[1]}"],
    ["~model.dropout"],
    ["++model.extra=3"],
    ["budget={tokens: 5}"],  # a mapping merges into the group's keys, as compose does
]


@pytest.mark.parametrize("overrides", SAME_AS_COMPOSE, ids=[" ".join(o) for o in SAME_AS_COMPOSE])
@pytest.mark.parametrize("preset", [[], ["experiment=smoke"]], ids=["default", "smoke"])
def test_apply_overrides_gives_what_compose_gives(preset: list[str], overrides: list[str]) -> None:
    base = compose(preset)
    before = copy.deepcopy(base)
    applied = apply_overrides(base, overrides, "--from-trial")
    assert applied == compose([*preset, *overrides])
    assert base == before  # the base is not changed


def test_apply_overrides_keeps_the_value_types() -> None:
    applied = apply_overrides(compose([]), ["model.n_layer=2", "optim.lr=1e-3", "model.bias=true"], "hpo retrain")
    assert type(applied["model"]["n_layer"]) is int and applied["model"]["n_layer"] == 2
    assert type(applied["optim"]["lr"]) is float and applied["optim"]["lr"] == 1e-3
    assert applied["model"]["bias"] is True
    assert apply_overrides(compose([]), [], "hpo retrain") == compose([])


@pytest.mark.parametrize(
    "override", ["budget=steps", "experiment=smoke", "experiment=null", "+experiment=smoke", "model@x=small"]
)
def test_apply_overrides_refuses_config_group_options(override: str) -> None:
    with pytest.raises(HpoError) as info:
        apply_overrides(compose([]), [override], "--from-trial")
    assert str(info.value) == (
        f"{override!r} picks a config group option, which --from-trial cannot take: "
        "set keys instead (for example budget.tokens=20000000)"
    )


def test_apply_overrides_knows_the_user_folders_groups(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path, {"extras/one.yaml": "a: 1\n"})
    with pytest.raises(HpoError, match=r"^'extras=one' picks a config group option, which hpo retrain cannot"):
        apply_overrides(compose([]), ["extras=one"], "hpo retrain", config_dir=folder)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["model.n_layers=2"], ["unknown config key model.n_layers; did you mean model.n_layer?"]),
        (["optim.learning_rate=0.1"], ["unknown config key optim.learning_rate"]),
        (["train.batchsize=20"], ["unknown config key train.batchsize; did you mean train.batch_size?"]),
        (["~model.n_layers"], ["cannot delete model.n_layers", "did you mean model.n_layer?"]),
        (["+model.n_layer=2"], ["cannot add model.n_layer: it is set already; write model.n_layer=2"]),
        (["model.n_layer=1,2"], ["'model.n_layer=1,2' is a sweep; --from-trial takes one value per key"]),
        (["model.n_layer=["], ["malformed"]),
        (["model.n_layer"], ["'model.n_layer'", "key=value"]),
        (
            ["search_space.n_layer={choices:[1]}"],
            ["search_space.n_layer has no key 'choices'", "~search_space.n_layer +search_space.n_layer={choices:[1]}"],
        ),
    ],
)
def test_apply_overrides_errors_are_one_line(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(HpoError) as info:
        apply_overrides(compose(["experiment=smoke"]), overrides, "--from-trial")
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
