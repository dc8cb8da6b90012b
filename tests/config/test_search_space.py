"""The search space: YAML specs parsed into parameters, suggested through Optuna, applied to a
RunSpec; every mistake in a spec is an HpoError that names the key."""

from __future__ import annotations

import json
import math
import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpo.config.compose import compose, hpo_config, run_spec
from hpo.config.search_space import CONFIG_KEYS, PARAM_TARGETS, PER_TRIAL, Param, SearchSpace, plain_params
from hpo.config.training import RunSpec
from hpo.errors import HpoError
from hpo.record.attrs import config_from_stored, stored_config
from hpo.search.samplers import suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)


def ask(space: SearchSpace, seed: int = 0) -> tuple[dict, optuna.trial.FrozenTrial]:
    """Suggest once from an in-memory study; returns the values and the trial's record."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    values = suggest(space, trial)
    study.tell(trial, 0.0)
    return values, study.trials[0]


# --------------------------------------------------------------------------------------------------
# Parsing and suggesting


def test_int_range() -> None:
    space = SearchSpace.from_dict({"n_layer": {"low": 1, "high": 3}})
    (param,) = space.params
    assert (param.name, param.kind, param.low, param.high, param.log) == ("n_layer", "int", 1, 3, False)
    for seed in range(5):
        values, frozen = ask(space, seed)
        assert isinstance(values["n_layer"], int)
        assert 1 <= values["n_layer"] <= 3
        assert frozen.distributions["n_layer"] == IntDistribution(1, 3)
        assert frozen.params == values


def test_int_range_with_step() -> None:
    space = SearchSpace.from_dict({"batch_size": {"low": 16, "high": 64, "step": 16}})
    for seed in range(5):
        values, frozen = ask(space, seed)
        assert values["batch_size"] in (16, 32, 48, 64)
        assert frozen.distributions["batch_size"] == IntDistribution(16, 64, step=16)


def test_log_float_range() -> None:
    space = SearchSpace.from_dict({"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}})
    (param,) = space.params
    assert (param.kind, param.log) == ("float", True)
    for seed in range(5):
        values, frozen = ask(space, seed)
        assert isinstance(values["lr"], float)
        assert 1.0e-4 <= values["lr"] <= 1.0e-2
        assert frozen.distributions["lr"] == FloatDistribution(1.0e-4, 1.0e-2, log=True)


def test_mixed_int_and_float_bounds_make_a_float_range() -> None:
    (param,) = SearchSpace.from_dict({"weight_decay": {"low": 0, "high": 0.2}}).params
    assert param.kind == "float"
    values, _ = ask(SearchSpace.from_dict({"weight_decay": {"low": 0, "high": 0.2}}))
    assert 0.0 <= values["weight_decay"] <= 0.2


def test_categorical() -> None:
    space = SearchSpace.from_dict({"n_head": {"choices": [2, 4, 8]}, "pos_encoding": {"choices": ["rope"]}})
    kinds = {p.name: (p.kind, p.choices) for p in space.params}
    assert kinds == {"n_head": ("categorical", (2, 4, 8)), "pos_encoding": ("categorical", ("rope",))}
    values, frozen = ask(space)
    assert values["n_head"] in (2, 4, 8)
    assert values["pos_encoding"] == "rope"
    assert frozen.distributions["n_head"] == CategoricalDistribution((2, 4, 8))


def test_fixed_values_are_returned_but_not_searched() -> None:
    space = SearchSpace.from_dict({"n_devices": 1, "block_size": 64, "n_layer": {"low": 1, "high": 2}})
    fixed = {p.name: p.value for p in space.params if p.kind == "fixed"}
    assert fixed == {"n_devices": 1, "block_size": 64}
    values, frozen = ask(space)
    assert values["n_devices"] == 1 and values["block_size"] == 64
    assert set(frozen.params) == {"n_layer"}  # only searched parameters are Optuna parameters


def test_every_name_maps_to_a_config_key() -> None:
    base = RunSpec().to_dict()
    assert sorted(CONFIG_KEYS) == sorted(f"{section}.{key}" for section in base for key in base[section])
    for name, target in PARAM_TARGETS.items():
        assert target in CONFIG_KEYS, name
    assert set(PER_TRIAL) <= set(CONFIG_KEYS)


def test_the_built_in_search_spaces_parse() -> None:
    for group in ("search_space=default", "search_space=wide", "experiment=smoke", "experiment=cpu_20min"):
        config = hpo_config(compose([group]))
        assert any(p.kind != "fixed" for p in config.space.params)


# --------------------------------------------------------------------------------------------------
# Applying values to a RunSpec


@pytest.fixture(scope="module")
def base() -> RunSpec:
    return run_spec(compose(["experiment=smoke"]))


def test_head_dim_derives_the_width(base: RunSpec) -> None:
    space = SearchSpace.from_dict({"n_head": {"choices": [2, 4]}, "head_dim": {"choices": [16, 32]}})
    config = space.apply(base, {"n_head": 4, "head_dim": 16})
    assert (config.model.n_head, config.model.n_embd) == (4, 64)
    config = space.apply(base, {"n_head": 2, "head_dim": 32})
    assert (config.model.n_head, config.model.n_embd) == (2, 64)
    config = space.apply(base, {"n_head": 4, "head_dim": 32})
    assert config.model.n_embd == 128


def test_head_dim_alone_uses_the_base_head_count(base: RunSpec) -> None:
    space = SearchSpace.from_dict({"head_dim": {"choices": [8, 24]}})
    config = space.apply(base, {"head_dim": 24})
    assert config.model.n_embd == base.model.n_head * 24


def test_every_suggested_shape_is_valid(base: RunSpec) -> None:
    space = hpo_config(compose(["search_space=wide"])).space
    for seed in range(20):
        values, _ = ask(space, seed)
        config = space.apply(base, values)
        assert config.model.n_embd == values["n_head"] * values["head_dim"]
        assert config.model.n_embd % config.model.n_head == 0


def test_apply_sets_each_target(base: RunSpec) -> None:
    space = SearchSpace.from_dict({"lr": {"low": 1e-4, "high": 1e-2}})
    values = {
        "n_layer": 3,
        "lr": 0.005,
        "batch_size": 48,
        "optimizer": "sgd",
        "pos_encoding": "rope",
        "n_devices": 2,
        "dropout": 0.1,
    }
    config = space.apply(base, values)
    assert config.model.n_layer == 3
    assert config.optim.lr == 0.005
    assert config.train.batch_size == 48
    assert config.optim.name == "sgd"
    assert config.model.pos_encoding == "rope"
    assert config.train.n_devices == 2
    assert config.model.dropout == 0.1
    assert base.optim.lr != 0.005  # the base is left alone


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"lr": "fast"}, "optim.lr"),
        ({"batch_size": 2.5}, "train.batch_size"),
        ({"n_layer": 0}, "model.n_layer"),
        ({"optimizer": "lion"}, "optim.name"),
        ({"bias": "yes"}, "model.bias"),
        ({"lr": -1.0}, "optim.lr"),
    ],
)
def test_apply_revalidates(base: RunSpec, values: dict, fragment: str) -> None:
    space = SearchSpace.from_dict({"lr": {"low": 1e-4, "high": 1e-2}})
    with pytest.raises(HpoError, match=fragment.replace(".", r"\.")):
        space.apply(base, values)


# --------------------------------------------------------------------------------------------------
# Mistakes in a spec


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"lr": {"low": 0.01, "high": 0.01}}, "empty or inverted range"),
        ({"lr": {"low": 0.01, "high": 0.001}}, "empty or inverted range"),
        ({"n_layer": {"low": 4, "high": 1}}, "empty or inverted range"),
        ({"n_head": {"choices": []}}, "choices is empty"),
        ({"n_head": {"choices": None}}, "choices is empty"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "low=0.0 must be positive"),
        ({"lr": {"low": -1.0, "high": 0.1, "log": True}}, "must be positive"),
        ({"n_layers": {"low": 1, "high": 2}}, "search_space.n_layers is not a known parameter"),
        ({"n_layer": {"low": 1, "high": 2, "scale": "log"}}, "unknown field 'scale'"),
        ({"n_layer": {"low": 1}}, "needs low and high"),
        ({"n_layer": {"low": "one", "high": 2}}, "must be a finite number"),
        ({"lr": {"low": 1e-4, "high": math.inf}}, "must be a finite number"),
        ({"n_layer": {"low": True, "high": 2}}, "must be a finite number"),
        ({"lr": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}, "both log and step"),
        (
            {"n_head": {"choices": [2, 4]}, "head_dim": 16, "n_embd": 64},
            "both head_dim and n_embd",
        ),
        ({"n_layer": 2, "lr": 0.001}, "no searched parameter"),
        ({}, "no searched parameter"),
    ],
)
def test_bad_specs(spec: dict, fragment: str) -> None:
    with pytest.raises(HpoError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        SearchSpace.from_dict(spec)


def test_a_baseline_must_be_a_point_of_the_space() -> None:
    space = SearchSpace.from_dict(
        {
            "n_layer": {"low": 1, "high": 3},
            "n_head": {"choices": [2, 4]},
            "lr": {"low": 1e-4, "high": 1e-2},
            "n_devices": 1,
        }
    )
    space.check_point({"n_layer": 2, "n_head": 4, "lr": 1e-3, "n_devices": 1}, "b")
    space.check_point({}, "b")
    for values, fragment in (
        ({"depth": 2}, "b.depth is not in the search space"),
        ({"n_layer": 4}, "b.n_layer=4 is outside"),
        ({"n_head": 3}, "b.n_head=3 is outside"),
        ({"lr": "fast"}, "b.lr='fast' is outside"),
        ({"n_devices": 2}, "b.n_devices=2 is outside"),
    ):
        with pytest.raises(HpoError, match=re.escape(fragment)):
            space.check_point(values, "b")
    with pytest.raises(HpoError, match=re.escape("study.baselines[0].n_head=3 is outside")):
        hpo_config(compose(["experiment=smoke", "study.baselines=[{n_head: 3}]"]))


def test_bad_spec_in_a_composed_config_is_refused_before_any_study() -> None:
    with pytest.raises(HpoError, match=r"search_space\.lr has an empty or inverted range"):
        hpo_config(compose(["search_space.lr={low: 0.1, high: 0.01}"]))
    with pytest.raises(HpoError, match="not a known parameter"):
        hpo_config(compose(["+search_space.depth={low: 1, high: 2}"]))


# --------------------------------------------------------------------------------------------------
# Conditional entries: a spec per choice of another parameter

CONDITIONAL = {
    "optimizer": {"choices": ["adamw", "sgd"]},
    "lr": {"optimizer": {"adamw": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "sgd": {"low": 0.01, "high": 0.3}}},
    "weight_decay": {"optimizer": {"adamw": {"low": 0.0, "high": 0.2}, "sgd": 0.0}},
}


def test_a_conditional_entry_samples_only_the_range_of_the_chosen_option() -> None:
    space = SearchSpace.from_dict(CONDITIONAL)
    assert space.params[0].name == "optimizer"  # parents first: sampled define-by-run
    seen = set()
    for seed in range(30):
        values, frozen = ask(space, seed)
        seen.add(values["optimizer"])
        if values["optimizer"] == "sgd":
            assert 0.01 <= values["lr"] <= 0.3
            assert values["weight_decay"] == 0.0
            assert set(frozen.params) == {"optimizer", "lr[sgd]"}
            assert frozen.distributions["lr[sgd]"] == FloatDistribution(0.01, 0.3)
        else:
            assert 1.0e-4 <= values["lr"] <= 1.0e-2
            assert 0.0 <= values["weight_decay"] <= 0.2
            assert set(frozen.params) == {"optimizer", "lr[adamw]", "weight_decay[adamw]"}
        assert plain_params(frozen.params) == {k: v for k, v in values.items() if k in plain_params(frozen.params)}
    assert seen == {"adamw", "sgd"}


def test_a_baseline_of_a_conditional_space_is_checked_against_its_branch() -> None:
    space = SearchSpace.from_dict(CONDITIONAL)
    space.check_point({"optimizer": "sgd", "lr": 0.1}, "study.baselines[0]")
    with pytest.raises(HpoError, match=r"study\.baselines\[0\]\.lr=0\.001 is outside search_space\.lr"):
        space.check_point({"optimizer": "sgd", "lr": 0.001}, "study.baselines[0]")
    with pytest.raises(HpoError, match=r"depends on optimizer; give study\.baselines\[0\]\.optimizer too"):
        space.check_point({"lr": 0.1}, "study.baselines[0]")
    assert space.optuna_params({"optimizer": "sgd", "lr": 0.1}) == {"optimizer": "sgd", "lr[sgd]": 0.1}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({**CONDITIONAL, "lr": {"optimizer": {"adamw": {"low": 1e-4, "high": 1e-2}}}}, "give one for each choice"),
        ({**CONDITIONAL, "lr": {"optimizer": {"adamw": 1e-3, "sgd": 0.1, "adam": 1e-3}}}, "give one for each choice"),
        ({"lr": {"optimizer": {"adamw": 1e-3, "sgd": 0.1}}, "n_layer": {"low": 1, "high": 2}}, "must be an entry"),
        ({**CONDITIONAL, "optimizer": {"low": 0, "high": 1}}, "must be an entry of the search space with choices"),
        ({**CONDITIONAL, "lr": {"optimizer": {"adamw": 1e-3, "sgd": 0.1}, "low": 1e-4}}, "replace it whole"),
        ({**CONDITIONAL, "lr": {"optimizer": 0.1}}, "must map each choice"),
        ({**CONDITIONAL, "lr": {"optimizer": {"adamw": {"n_head": {"a": 1}}, "sgd": 0.1}}}, "conditional itself"),
    ],
)
def test_bad_conditional_entries(spec: dict, fragment: str) -> None:
    with pytest.raises(HpoError, match=re.escape(fragment)):
        SearchSpace.from_dict(spec)


def test_a_conditional_entry_on_numeric_choices_survives_the_stored_config() -> None:
    """A study stores its config as JSON, where a choice 2 becomes the key "2"."""
    overrides = [
        "search_space.n_head={choices: [2, 4]}",
        "+search_space.dropout={n_head: {2: 0.0, 4: {choices: [0.0, 0.1]}}}",
    ]
    config = hpo_config(compose(overrides))
    stored = json.loads(json.dumps(stored_config(config)))
    space = config_from_stored(stored).space
    assert space == config.space
    dropout = next(p for p in space.params if p.name == "dropout")
    assert [value for value, _ in dropout.branches] == [2, 4]


def test_a_fixed_branch_is_checked_before_any_study() -> None:
    spec = {**CONDITIONAL, "weight_decay": {"optimizer": {"adamw": {"low": 0.0, "high": 0.2}, "sgd": -1.0}}}
    with pytest.raises(HpoError, match=r"optim\.weight_decay=-1\.0 must be >= 0"):
        hpo_config({**compose([]), "search_space": spec})


# --------------------------------------------------------------------------------------------------
# Any key of the training config: `SECTION.FIELD`, nested in YAML and in Hydra overrides

ANY_KEY = {
    "optim.beta1": {"low": 0.8, "high": 0.95},
    "model.bias": {"choices": [True, False]},
    "optim.name": {"choices": ["adamw", "sgd"]},
    "optim.lr": {"optim.name": {"adamw": {"low": 1e-4, "high": 1e-2, "log": True}, "sgd": 0.1}},
    "train.evals": 3,
}
# The same space as YAML nests it: a mapping under a section name holds its entries, in the
# space and where a conditional entry names its parent.
ANY_KEY_NESTED = {
    "optim": {
        "beta1": {"low": 0.8, "high": 0.95},
        "name": {"choices": ["adamw", "sgd"]},
        "lr": {"optim": {"name": {"adamw": {"low": 1e-4, "high": 1e-2, "log": True}, "sgd": 0.1}}},
    },
    "model": {"bias": {"choices": [True, False]}},
    "train": {"evals": 3},
}


def test_any_config_key_is_an_entry_named_by_its_key(base: RunSpec) -> None:
    space = SearchSpace.from_dict(ANY_KEY)
    kinds = {p.name: p.kind for p in space.params}
    assert kinds == {
        "optim.beta1": "float",
        "model.bias": "categorical",
        "optim.name": "categorical",
        "optim.lr": "conditional",
        "train.evals": "fixed",
    }
    seen = set()
    for seed in range(12):
        values, frozen = ask(space, seed)
        name = values["optim.name"]
        seen.add(name)
        assert set(frozen.params) == {"optim.beta1", "model.bias", "optim.name"} | (
            {"optim.lr[adamw]"} if name == "adamw" else set()
        )
        assert plain_params(frozen.params).keys() <= values.keys()
        config = space.apply(base, values)
        assert (config.optim.beta1, config.model.bias, config.optim.name) == (
            values["optim.beta1"],
            values["model.bias"],
            name,
        )
        assert config.optim.lr == (0.1 if name == "sgd" else values["optim.lr"])
        assert config.train.evals == 3
    assert seen == {"adamw", "sgd"}


def entries(space: SearchSpace) -> dict[str, Param]:
    """The entries of a space by name: two spellings of a space may list them in another order."""
    return {p.name: p for p in space.params}


def test_the_nested_and_the_dotted_spelling_give_one_space() -> None:
    assert entries(SearchSpace.from_dict(ANY_KEY_NESTED)) == entries(SearchSpace.from_dict(ANY_KEY))
    mixed = {"optim.beta1": ANY_KEY["optim.beta1"], "model": {"bias": {"choices": [True, False]}}}
    assert SearchSpace.from_dict(mixed) == SearchSpace.from_dict({k: ANY_KEY[k] for k in ("optim.beta1", "model.bias")})


def test_hydra_overrides_nest_a_dotted_entry_and_it_round_trips_the_stored_config() -> None:
    """Hydra nests `+search_space.optim.beta1=...` at its dots; a dotted key inside a `{...}`
    value stays whole. Both are the entry optim.beta1, and a study's stored config (JSON)
    gives `hpo resume` the same space."""
    nested = hpo_config(
        compose(
            [
                "+search_space.optim.beta1={low: 0.8, high: 0.95}",
                "+search_space.model.bias={choices: [true, false]}",
                "+search_space.optim.name={choices: [adamw, sgd]}",
                "~search_space.lr",
                "+search_space.optim.lr={optim.name: {adamw: {low: 1.0e-4, high: 1.0e-2, log: true}, sgd: 0.1}}",
                "study.baselines=[{optim.beta1: 0.9, optim.name: sgd, optim.lr: 0.1}]",
            ]
        )
    )
    assert nested.search_space["optim"]["beta1"] == {"low": 0.8, "high": 0.95}
    dotted = hpo_config(
        compose(
            [
                "~search_space.lr",
                "+search_space={optim.beta1: {low: 0.8, high: 0.95}, model.bias: {choices: [true, false]},"
                " optim.name: {choices: [adamw, sgd]},"
                " optim.lr: {optim: {name: {adamw: {low: 1.0e-4, high: 1.0e-2, log: true}, sgd: 0.1}}}}",
            ]
        )
    )
    assert "optim.beta1" in dotted.search_space
    assert entries(nested.space) == entries(dotted.space)
    names = {p.name for p in nested.space.params}
    assert {"optim.beta1", "model.bias", "optim.name", "optim.lr", "n_layer"} <= names
    for config in (nested, dotted):
        stored = json.loads(json.dumps(stored_config(config)))
        assert config_from_stored(stored).space == config.space
    point = nested.study.baselines[0]
    assert nested.space.optuna_params(point) == {"optim.beta1": 0.9, "optim.name": "sgd", "optim.lr[sgd]": 0.1}


def test_a_baseline_names_a_config_key_either_way() -> None:
    space = SearchSpace.from_dict(ANY_KEY)
    for point in ({"optim.beta1": 0.9, "model.bias": True}, {"optim": {"beta1": 0.9}, "model": {"bias": True}}):
        space.check_point(point, "study.baselines[0]")
        assert space.optuna_params(point) == {"optim.beta1": 0.9, "model.bias": True}
    with pytest.raises(
        HpoError, match=re.escape("study.baselines[0].optim.beta1=0.5 is outside search_space.optim.beta1")
    ):
        space.check_point({"optim": {"beta1": 0.5}}, "study.baselines[0]")
    with pytest.raises(HpoError, match=re.escape("study.baselines[0].optim.beta1 is given twice")):
        space.check_point({"optim.beta1": 0.9, "optim": {"beta1": 0.9}}, "study.baselines[0]")


def test_an_unknown_key_names_the_closest_valid_one() -> None:
    for name, closest in (
        ("optim.beta_1", "optim.beta1"),
        ("model.n_layers", "model.n_layer"),
        ("optimiser", "optimizer"),
        ("n_layers", "n_layer"),
        ("train.batchsize", "train.batch_size"),
    ):
        with pytest.raises(HpoError) as raised:
            SearchSpace.from_dict({name: {"low": 1, "high": 2}})
        message = str(raised.value)
        assert message.startswith(f"search_space.{name} is not a known parameter; did you mean {closest}? ")
        assert "(short names: n_layer, n_head," in message
        assert message.endswith("or any model./data./optim./train./budget. key)")
        assert "\n" not in message
    with pytest.raises(
        HpoError, match=r"search_space\.optim\.beta_1 is not a known parameter; did you mean optim\.beta1\?"
    ):
        SearchSpace.from_dict({"optim": {"beta_1": {"low": 0.8, "high": 0.95}}})  # nested, as YAML writes it
    with pytest.raises(HpoError, match=r"search_space\.zzz is not a known parameter; use a short name \(n_layer, "):
        SearchSpace.from_dict({"zzz": {"low": 1, "high": 2}})
    with pytest.raises(HpoError, match=r"did you mean optim\.beta1\?"):
        hpo_config(compose(["+search_space.optim.beta_1={low: 0.8, high: 0.95}"]))


@pytest.mark.parametrize("key", sorted(PER_TRIAL))
def test_a_key_that_hpo_sets_per_trial_is_refused_with_the_reason(key: str) -> None:
    section, field = key.split(".")
    for spec in ({key: {"choices": [1, 2]}}, {section: {field: {"choices": [1, 2]}}}):
        with pytest.raises(HpoError, match=re.escape(f"search_space.{key} cannot be searched: {PER_TRIAL[key]}")):
            SearchSpace.from_dict({**spec, "n_layer": {"low": 1, "high": 2}})
    assert "seed" in PER_TRIAL["train.seed"] and "study.seed" in PER_TRIAL["train.seed"]


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            {"n_layer": {"low": 1, "high": 2}, "model.n_layer": 3},
            "both n_layer and model.n_layer, which both set model.n_layer",
        ),
        ({"model": {"n_layer": 3}, "n_layer": {"low": 1, "high": 2}}, "both model.n_layer and n_layer"),
        (
            {"head_dim": {"choices": [16, 32]}, "model.n_embd": 64},
            "both head_dim and model.n_embd, which both set model.n_embd; keep one (head_dim derives",
        ),
        ({"n_embd": {"choices": [32, 64]}, "model": {"n_embd": 64}}, "both n_embd and model.n_embd"),
        ({"optimizer": {"choices": ["adamw", "sgd"]}, "optim.name": "sgd"}, "both optimizer and optim.name"),
        (
            {"optim.beta1": {"low": 0.8, "high": 0.9}, "optim": {"beta1": 0.9}},
            "search_space.optim.beta1 is given twice",
        ),
    ],
)
def test_two_entries_of_one_key_are_refused(spec: dict, fragment: str) -> None:
    with pytest.raises(HpoError, match=re.escape(fragment)):
        SearchSpace.from_dict(spec)


def test_head_dim_takes_the_head_count_of_a_dotted_entry(base: RunSpec) -> None:
    space = SearchSpace.from_dict({"model.n_head": {"choices": [2, 8]}, "head_dim": {"choices": [16, 32]}})
    assert space.apply(base, {"model.n_head": 8, "head_dim": 16}).model.n_embd == 128


def test_a_bad_value_of_a_dotted_entry_is_refused_by_its_dataclass(base: RunSpec) -> None:
    with pytest.raises(HpoError, match=r"optim\.beta1=1\.5 must be in \[0, 1\)"):
        hpo_config(compose(["+search_space.optim.beta1=1.5"]))  # fixed: before any study exists
    with pytest.raises(HpoError, match=r"optim\.beta1=1\.5 must be in \[0, 1\)"):
        hpo_config(
            compose(
                [
                    "+search_space.optim.beta1={optimizer: {adamw: 0.9, adam: 1.5}}",
                    "+search_space.optimizer={choices: [adamw, adam]}",
                ]
            )
        )
    space = SearchSpace.from_dict({"optim.beta1": {"low": 0.5, "high": 1.5}})
    with pytest.raises(HpoError, match=r"optim\.beta1=1\.2 must be in \[0, 1\)"):
        space.apply(base, {"optim.beta1": 1.2})  # a sampled one: the trial is infeasible
    with pytest.raises(HpoError, match=r"model\.pos_encoding='alibi' is not allowed"):
        SearchSpace.from_dict({"model.pos_encoding": {"choices": ["rope", "alibi"]}}).apply(
            base, {"model.pos_encoding": "alibi"}
        )


def test_integer_bounds_on_a_float_field_are_a_real_interval() -> None:
    """`{low: 0, high: 1}` of optim.min_lr_ratio means [0, 1], not the integers 0 and 1."""
    params = {
        p.name: p
        for p in SearchSpace.from_dict(
            {"optim.min_lr_ratio": {"low": 0, "high": 1}, "n_layer": {"low": 1, "high": 3}}
        ).params
    }
    assert params["optim.min_lr_ratio"].kind == "float"
    assert params["n_layer"].kind == "int"
