"""Properties of config validation over generated input (issue #26): any override of a real
key, and any search-space entry, either gives a config that validates (and a search space
whose sampled points build a RunSpec) or is refused with HpoError, never another exception,
which would be a traceback, or a study left with a RUNNING trial."""

from __future__ import annotations

import functools
import math
from typing import Any

import optuna
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.config.compose import compose, hpo_config, run_spec
from hpo.config.search_space import CONFIG_KEYS, PARAM_TARGETS, PER_TRIAL, SearchSpace
from hpo.config.training import RunSpec
from hpo.errors import HpoError
from hpo.search.samplers import suggest

optuna.logging.set_verbosity(optuna.logging.ERROR)

BASE = ["experiment=tiny"]
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Scalars of every type, with the edges: 0, negatives, huge, NaN, infinities, -0.0, non-ASCII
# and the characters that mean something to Hydra's grammar.
SCALARS = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, -1, 2**40, -(2**70)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 1e-3]),
    st.text(max_size=8),
    st.sampled_from(["café", "été", "a b", "x=y", "${oc.env:HOME}", "'", '"', "\\", ",", "*", ":", "~"]),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)


@functools.cache
def composed() -> dict[str, Any]:
    return compose(BASE)


@functools.cache
def base() -> RunSpec:
    return run_spec(composed())


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [key for name, child in node.items() for key in _leaves(child, f"{prefix}{name}.")]
    return [prefix.removesuffix(".")]


@functools.cache
def keys() -> list[str]:
    return sorted(key for key in _leaves(composed()) if not key.startswith("search_space."))


def render(value: Any) -> str:
    """`value` written as a user would write it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(render(item) for item in value) + "]"
    return "{" + ", ".join(f"{key}: {render(item)}" for key, item in value.items()) + "}"


@SETTINGS
@given(st.data(), st.lists(VALUES, min_size=1, max_size=2))
def test_overrides_validate_or_are_refused(data: st.DataObject, values: list[Any]) -> None:
    overrides = [f"{data.draw(st.sampled_from(keys()))}={render(value)}" for value in values]
    try:
        hpo_config(compose([*BASE, *overrides]))
    except HpoError as exc:
        assert "\n" not in str(exc) and str(exc)


SEARCHABLE = [*PARAM_TARGETS, *(key for key in CONFIG_KEYS if key not in PER_TRIAL)]
NUMBERS = st.one_of(
    st.integers(-2, 70), st.floats(-2, 70), st.sampled_from([0, 0.0, -0.0, 1e-4, math.nan, math.inf]), SCALARS
)
# Plausible entries, so that many spaces pass and their points are sampled and built.
PLAUSIBLE = st.one_of(
    st.fixed_dictionaries({"low": st.integers(1, 4), "high": st.integers(4, 9)}, optional={"step": st.integers(-1, 6)}),
    st.fixed_dictionaries(
        {"low": st.floats(0.0, 0.1), "high": st.floats(0.1, 0.9)},
        optional={"step": st.sampled_from([0.05, 0.1, 0.3, 0.0, -0.1]), "log": st.booleans()},
    ),
    st.fixed_dictionaries(
        {
            "choices": st.lists(
                st.sampled_from([1, 2, 4, 16, 0.0, 0.1, "learned", "rope", "adamw", "sgd", True]),
                min_size=1,
                max_size=3,
            )
        }
    ),
    st.sampled_from([1, 2, 16, 0.1, "rope", "sgd", True]),
)
SPECS = st.one_of(
    PLAUSIBLE,
    PLAUSIBLE,
    VALUES,  # a fixed value
    st.fixed_dictionaries(
        {"low": NUMBERS, "high": NUMBERS},
        optional={"step": NUMBERS, "log": st.one_of(st.booleans(), SCALARS)},
    ),
    st.fixed_dictionaries({"choices": st.one_of(st.lists(VALUES, max_size=4), SCALARS)}),
)


def _sample(space: SearchSpace, seed: int) -> dict[str, Any]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    values = suggest(space, trial)
    study.tell(trial, 0.0)
    return values


@SETTINGS
@given(
    st.dictionaries(st.sampled_from([*PARAM_TARGETS, *SEARCHABLE]), SPECS, min_size=1, max_size=3), st.integers(0, 3)
)
def test_search_space_entries_build_or_are_refused(spec: dict[str, Any], seed: int) -> None:
    try:
        space = SearchSpace.from_dict(spec)
        space.check(base())
    except HpoError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    try:  # a value invalid beside some values of the other entries only is an infeasible trial
        assert isinstance(space.apply(base(), _sample(space, seed)), RunSpec)
    except HpoError:
        assert sum(p.kind != "fixed" for p in space.params) > 1 or any(p.kind in ("int", "float") for p in space.params)
    if len(space.params) == 1 and space.params[0].kind == "categorical":  # alone, every choice builds
        for choice in space.params[0].choices:
            space.apply(base(), {space.params[0].name: choice})
