"""The search space: YAML parameter specs, validated, and applied to a RunSpec.

A spec is either a fixed value or a distribution:

    n_layer: {low: 1, high: 6}                 # integer range (both bounds integers)
    lr: {low: 1.0e-4, high: 1.0e-2, log: true} # float range
    n_head: {choices: [2, 4, 8]}               # categorical
    n_devices: 1                               # fixed: not searched, still recorded
    lr: {optimizer: {adamw: {low: 1.0e-4, high: 3.0e-2, log: true},   # conditional: one spec
                     sgd: {low: 1.0e-2, high: 0.3, log: true}}}       # per choice of another
    optim: {beta1: {low: 0.8, high: 0.95}}     # any config key: the entry optim.beta1

An entry is named by a short name (PARAM_TARGETS: the knobs studies search most, short
on the dashboard) or by any dotted key of the training config, `SECTION.FIELD` with a
section of RunSpec and a field of its dataclass (CONFIG_KEYS, read off the dataclasses so
that a field added there is searchable at once). The YAML form of a dotted entry is
nested, `optim: {beta1: ...}`, which is also what a Hydra override makes of
`+search_space.optim.beta1=...` (Hydra nests at dots); a literal `optim.beta1:` key means
the same. A mapping under a section name is read as entries, at the top of the space and
where a conditional entry names its parent (`optim: {name: {adamw: ..., sgd: ...}}`): no
short name is a section name, so the two never meet. The dotted key is the entry's name
and its Optuna parameter name. The training keys that hpo sets per trial itself
(PER_TRIAL) cannot be searched, and two entries may not set one key.

A conditional entry is sampled define-by-run, after the parameter it depends on, from the
spec of the value that one took. Each branch has an Optuna parameter of its own
(`lr[sgd]`), so a sampler models the learning rates of SGD and AdamW apart; everything
hpo shows names it plainly (`plain_params`).

Width is derived, never searched alone with the head count: `head_dim` gives
`n_embd = n_head * head_dim`, so every sampled shape divides evenly. Values are checked by
the dataclasses when `apply` builds a trial's RunSpec, so any key takes exactly the values
the config accepts; `check` applies every fixed value, choice and bound (in each branch)
before a study exists, and a range's step is checked as Optuna will use it.
hpo.search.samplers suggests a point of the space through Optuna.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_type_hints

from hpo.config.structured import build
from hpo.config.training import RunSpec
from hpo.errors import HpoError

# Short names of the knobs that studies search most, with the config keys they set.
PARAM_TARGETS: dict[str, str] = {
    "n_layer": "model.n_layer",
    "n_head": "model.n_head",
    "n_embd": "model.n_embd",
    "head_dim": "model.n_embd",  # n_embd = n_head * head_dim
    "block_size": "model.block_size",
    "pos_encoding": "model.pos_encoding",
    "dropout": "model.dropout",
    "bias": "model.bias",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "warmup_frac": "optim.warmup_frac",
    "beta2": "optim.beta2",
    "grad_clip": "optim.grad_clip",
    "batch_size": "train.batch_size",
    "micro_batch_size": "train.micro_batch_size",
    "n_devices": "train.n_devices",
}

# Each section of the training config (model, data, optim, train, budget) with its fields.
SECTIONS: dict[str, tuple[str, ...]] = {
    section.name: tuple(field.name for field in dataclasses.fields(get_type_hints(RunSpec)[section.name]))
    for section in dataclasses.fields(RunSpec)
}
CONFIG_KEYS: tuple[str, ...] = tuple(f"{section}.{field}" for section, names in SECTIONS.items() for field in names)

# Training keys that no search may vary, with why: those hpo sets for each trial itself, and
# the data, which every trial of a study shares.
PER_TRIAL: dict[str, str] = {
    **{
        key: "a study's trials share one corpus and validation set (its data fingerprint); run one study per corpus"
        for key in CONFIG_KEYS
        if key.startswith("data.")
    },
    "train.seed": "hpo seeds each trial from study.seed and the trial's number; set study.seed",
    "train.eval_tokens": "hpo evaluates each trial at the pruner's rungs (pruner.min_tokens, pruner.eta)",
    "train.save_state": "hpo keeps each trial's state in a file of its own (storage.states)",
    "train.resume_from": "hpo resumes a lost or paused trial from its own state file",
    "train.checkpoint": "every trial would write the same file; `hpo train ... train.checkpoint=PATH` keeps one run",
}

Kind = Literal["int", "float", "categorical", "fixed", "conditional"]
SPEC_FIELDS = ("low", "high", "log", "step", "choices")


@dataclass(frozen=True)
class Param:
    """One entry. A conditional one has no range of its own: `parent` names the parameter
    whose value picks one of `branches`, (value, spec) pairs."""

    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    parent: str | None = None
    branches: tuple[tuple[Any, Param], ...] = ()

    @property
    def options(self) -> tuple[Any, ...]:
        """The values this parameter can take, if it has a list of them (choices or a fixed value)."""
        return self.choices if self.kind == "categorical" else (self.value,) if self.kind == "fixed" else ()

    def branch(self, parent_value: Any) -> Param | None:
        """The spec a conditional parameter has when its parent took `parent_value` (None
        for a value that is not one of the parent's)."""
        return next((spec for value, spec in self.branches if value == parent_value), None)

    def optuna_name(self, parent_value: Any = None) -> str:
        """The Optuna parameter name: the entry's, or for a branch `name[parent value]`."""
        return self.name if self.kind != "conditional" else f"{self.name}[{parent_value}]"

    def contains(self, value: Any) -> bool:
        """Whether `value` is one this (unconditional) spec can take."""
        if self.kind in ("fixed", "categorical"):
            return value in self.options
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        assert self.low is not None and self.high is not None
        return number and self.low <= value <= self.high


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's parameters of a trial as the search space names them: `lr[sgd]` is `lr`."""
    return {name.split("[", 1)[0]: value for name, value in params.items()}


def _target(name: Any) -> str | None:
    """The config key that an entry called `name` sets, or None if no entry can be called so."""
    return PARAM_TARGETS.get(name) or (name if name in CONFIG_KEYS else None)


def _float_field(name: str) -> bool:
    """Whether the config field that an entry named by its key sets is a float: `{low: 0,
    high: 1}` is then the real interval, not the integers 0 and 1. Short names keep the
    meaning that stored studies gave them (integer bounds, an integer range)."""
    target = name if name in CONFIG_KEYS else None
    if target is None:
        return False
    section, field = target.split(".")
    hint = get_type_hints(get_type_hints(RunSpec)[section])[field]
    return float in (get_args(hint) or (hint,))


def _int_field(name: str) -> bool:
    """Whether the config field that an entry sets is an integer (and not a float too): a
    range of floats could not be trained there."""
    target = _target(name)
    if target is None:
        return False
    section, field = target.split(".")
    hint = get_type_hints(get_type_hints(RunSpec)[section])[field]
    options = get_args(hint) or (hint,)
    return int in options and float not in options


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(mapping: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    """`mapping` with each mapping under a section name (`optim: {beta1: ...}`) spread into
    dotted keys (`optim.beta1`): the YAML and Hydra spelling of an entry, or a parent, named
    by a config key. HpoError for a key given both ways, as neither would win plainly."""
    flat: dict[Any, Any] = {}
    for name, value in mapping.items():
        nested = name in SECTIONS and isinstance(value, Mapping)
        items = [(f"{name}.{field}", item) for field, item in value.items()] if nested else [(name, value)]
        for dotted, item in items:
            if dotted in flat:
                section, _, field = dotted.partition(".")
                raise HpoError(
                    f"{where}.{dotted} is given twice, as {dotted} and as {section}: {{{field}: ...}}; keep one"
                )
            flat[dotted] = item
    return flat


def _check_name(name: Any, key: str) -> None:
    """HpoError unless `name` is an entry that can be searched: a short name or a config key
    that hpo does not set per trial. An unknown name is most often a typo: name the closest."""
    if name in PER_TRIAL:
        raise HpoError(f"{key} cannot be searched: {PER_TRIAL[name]}")
    if _target(name) is not None:
        return
    searchable = [*PARAM_TARGETS, *(k for k in CONFIG_KEYS if k not in PER_TRIAL)]
    close = difflib.get_close_matches(str(name), searchable, n=1)
    sections = "/".join(f"{section}." for section in SECTIONS)
    short = ", ".join(PARAM_TARGETS)
    if close:
        raise HpoError(
            f"{key} is not a known parameter; did you mean {close[0]}? (short names: {short}, or any {sections} key)"
        )
    raise HpoError(f"{key} is not a known parameter; use a short name ({short}) or any {sections} key")


def _parse_param(name: str, spec: Any) -> Param:
    key = f"search_space.{name}"
    _check_name(name, key)
    if not isinstance(spec, Mapping):
        return Param(name, "fixed", value=spec)
    spec = _flatten(spec, key)
    parents = [field for field in spec if _target(field) is not None]
    if parents:
        return _parse_conditional(name, spec, parents)
    unknown = set(spec) - set(SPEC_FIELDS)
    if unknown:
        raise HpoError(
            f"{key} has unknown field {sorted(unknown)[0]!r}; use low/high/log/step, choices, "
            f"or a parameter it depends on ({key}={{optimizer: {{adamw: ..., sgd: ...}}}})"
        )
    if "choices" in spec:
        if len(spec) > 1:
            extra = sorted((field for field in spec if field != "choices"), key=str)[0]
            raise HpoError(f"{key} has both choices and {extra}; give either choices or a range {{low, high}}")
        given = spec["choices"] if spec["choices"] is not None else ()
        if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, (list, tuple)):
            raise HpoError(f"{key}.choices={given!r} must be a list of values, for example {key}={{choices: [2, 4]}}")
        choices = tuple(given)
        if not choices:
            raise HpoError(f"{key}.choices is empty; list at least one value")
        for i, choice in enumerate(choices):
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise HpoError(
                    f"{key}.choices[{i}]={choice!r} is not a single value; a choice is a number, a string, "
                    "true/false or null"
                )
        return Param(name, "categorical", choices=choices)
    if "low" not in spec or "high" not in spec:
        raise HpoError(f"{key} needs low and high (or choices, or a fixed value)")
    low, high = spec["low"], spec["high"]
    for bound, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise HpoError(f"{key}.{bound}={value!r} must be a finite number")
    integers = isinstance(low, int) and isinstance(high, int) and not _float_field(name)
    kind: Kind = "int" if integers else "float"
    if kind == "float" and _int_field(name):
        raise HpoError(
            f"{key} has bounds low={low} high={high}, but {_target(name)} takes integers; "
            f"write integer bounds (for example {key}={{low: {math.ceil(low)}, high: {math.floor(high)}}})"
        )
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise HpoError(f"{key}.log={log!r} must be true or false")
    if low > high or (kind == "float" and low == high):
        raise HpoError(
            f"{key} has an empty or inverted range low={low} high={high}; make low < high "
            f"(or fix the value: search_space.{name}={low})"
        )
    if log and low <= 0:
        raise HpoError(f"{key} is log-scaled, so low={low} must be positive")
    step = _parse_step(key, spec.get("step"), kind, low, high)
    if step is not None and log:
        raise HpoError(f"{key} cannot have both log and step")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def _parse_step(key: str, step: Any, kind: Kind, low: float, high: float) -> float | None:
    """The step of a range, checked as Optuna will use it: positive, no larger than the
    range, an integer for an integer range, and dividing the range (Optuna would otherwise
    lower `high` to the last multiple of the step, with a warning, and never sample it)."""
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise HpoError(f"{key}.step={step!r} must be a positive number (or leave it out)")
    if kind == "int":
        if isinstance(step, float) and not step.is_integer():
            raise HpoError(f"{key}.step={step!r} must be an integer, as low={low} and high={high} are")
        step = int(step)
    span = high - low
    if step > span:
        raise HpoError(
            f"{key}.step={step} is larger than the range high-low={span}; use a step of at most {span} "
            f"(or fix the value: {key}={low})"
        )
    multiples = span / step
    if abs(multiples - round(multiples)) > 1e-9 * max(1.0, multiples):
        last = low + math.floor(multiples + 1e-9) * step
        raise HpoError(
            f"{key}.step={step} does not divide the range {low}..{high} (Optuna would never sample {high}); "
            f"make high a multiple of the step above low, for example high={last:g}"
        )
    return step


def _parse_conditional(name: str, spec: Mapping[str, Any], parents: list[str]) -> Param:
    key = f"search_space.{name}"
    if len(spec) != 1:
        extra = sorted(set(spec) - {parents[0]}, key=str)[0]
        raise HpoError(
            f"{key} depends on {parents[0]} and also has {extra!r}; a conditional entry holds one spec per "
            f"choice of one parameter only: replace it whole (~{key} +{key}={{...}})"
        )
    parent = parents[0]
    branches = spec[parent]
    if not isinstance(branches, Mapping) or not branches:
        raise HpoError(f"{key}.{parent} must map each choice of search_space.{parent} to a spec")
    parsed = []
    for value, branch in branches.items():
        param = _parse_param(name, branch)
        if param.kind == "conditional":
            raise HpoError(f"{key}.{parent}.{value} is conditional itself; a branch is a value, a range or choices")
        parsed.append((value, param))
    return Param(name, "conditional", parent=parent, branches=tuple(parsed))


def _resolve_conditional(param: Param, params: Mapping[str, Param]) -> Param:
    """`param` with its branches keyed by its parent's values. The parent is an unconditional
    entry of the space with a list of values, and the branches are exactly those values.
    A key is matched by its JSON form, as a stored config has it: a choice 2 or true is the
    key "2" or "true" once the study has stored its config."""
    key = f"search_space.{param.name}"
    parent = params.get(param.parent or "")
    if parent is None or parent.kind not in ("categorical", "fixed"):
        raise HpoError(
            f"{key} depends on {param.parent}, which must be an entry of the search space with choices "
            f"(for example search_space.{param.parent}={{choices: [...]}})"
        )
    options = {_as_key(option): option for option in parent.options}
    keys = [_as_key(value) for value, _ in param.branches]
    if sorted(keys) != sorted(options):
        raise HpoError(
            f"{key}.{param.parent} has specs for {[value for value, _ in param.branches]}; give one for each "
            f"choice of search_space.{param.parent}: {list(parent.options)}"
        )
    branches = tuple((options[_as_key(value)], spec) for value, spec in param.branches)
    return dataclasses.replace(param, branches=branches)


def _as_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> SearchSpace:
        parsed = [_parse_param(name, value) for name, value in _flatten(spec, "search_space").items()]
        _check_distinct(parsed)
        by_name = {p.name: p for p in parsed}
        parsed = [_resolve_conditional(p, by_name) if p.kind == "conditional" else p for p in parsed]
        if all(p.kind == "fixed" or (p.kind == "conditional" and _all_fixed(p)) for p in parsed):
            raise HpoError("search_space has no searched parameter; give at least one a range or choices")
        # Conditional entries last: each is sampled after the parameter it depends on.
        return cls(tuple(sorted(parsed, key=lambda p: p.kind == "conditional")))

    def check_point(self, values: Mapping[str, Any], key: str) -> None:
        """HpoError unless `values` (a baseline) is a point of this space: Optuna would
        silently drop a name it never suggests, or crash on a value outside the choices."""
        params = {p.name: p for p in self.params}
        values = _flatten(values, key)
        for name, value in values.items():
            param = params.get(name)
            if param is None:
                raise HpoError(f"{key}.{name} is not in the search space; use {', '.join(params)}")
            if param.kind == "conditional":
                assert param.parent is not None
                if param.parent not in values:
                    raise HpoError(f"{key}.{name} depends on {param.parent}; give {key}.{param.parent} too")
                branch = param.branch(values[param.parent])
                if branch is None:
                    raise HpoError(
                        f"{key}.{param.parent}={values[param.parent]!r} is outside search_space.{param.parent}"
                    )
                param = branch
            if not param.contains(value):
                raise HpoError(f"{key}.{name}={value!r} is outside search_space.{name}")

    def check(self, base: RunSpec) -> None:
        """HpoError unless every value that some trial would take builds a valid RunSpec
        from `base`: each fixed value, each choice, each bound of a range, and each of these
        in every branch of a conditional entry (with its parent's value). A wrong one is a
        config error before the study exists, not a share of infeasible trials (or a trial
        that crashes). A value may be invalid beside some values of the other entries (a
        head count that does not divide the width): it must build beside one of them, with
        the fixed values and each value of one other entry in turn."""
        fixed = {p.name: p.value for p in self.params if p.kind == "fixed"}
        others = [
            (p.name, value) for p in self.params if p.kind in ("categorical", "int", "float") for _, value in _values(p)
        ]
        try:  # what every trial takes
            self._check_value(base, fixed, others, {}, "", "search_space", "")
        except HpoError as together:
            for name, value in fixed.items():  # the one to blame, if one fails alone
                self._check_value(base, {}, others, {}, name, f"search_space.{name}", value)
            raise HpoError(
                f"search_space's fixed values {fixed} cannot be trained together: {together.__cause__}"
            ) from None
        for param in self.params:
            if param.kind == "fixed":
                continue
            if param.kind != "conditional":
                for label, value in _values(param):
                    self._check_value(base, fixed, others, {}, param.name, f"search_space.{param.name}{label}", value)
                continue
            assert param.parent is not None
            for parent_value, branch in param.branches:
                where = f"search_space.{param.name}.{param.parent}.{_as_key(parent_value)}"
                for label, value in _values(branch):
                    chosen = {param.parent: parent_value}
                    self._check_value(base, fixed, others, chosen, param.name, f"{where}{label}", value)

    def _check_value(
        self,
        base: RunSpec,
        fixed: Mapping[str, Any],
        others: list[tuple[str, Any]],
        chosen: Mapping[str, Any],
        name: str,
        where: str,
        value: Any,
    ) -> None:
        """HpoError, naming `where`, unless entry `name` taking `value` (with the fixed
        values and the parent's `chosen` one) builds beside the others' values, one at a
        time. An empty `name` checks the fixed values alone."""
        point = {**fixed, **chosen, **({name: value} if name else {})}
        contexts = [{}, *({other: v} for other, v in others if other != name and other not in chosen)]
        first: HpoError | None = None
        for context in contexts:
            try:
                self.apply(base, {**point, **context})
                return
            except HpoError as exc:
                first = first or exc
        error = HpoError(f"{where}={value!r} cannot be trained: {first}")
        raise error from first

    def optuna_params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A point of the space (plain names, a baseline's) under Optuna's parameter names."""
        params = {p.name: p for p in self.params}
        values = _flatten(values, "point")
        return {
            params[name].optuna_name(values.get(params[name].parent or "")) if name in params else name: value
            for name, value in values.items()
        }

    def apply(self, base: RunSpec, values: Mapping[str, Any]) -> RunSpec:
        """`base` with the sampled values, re-validated; HpoError if they make it invalid."""
        merged = base.to_dict()
        n_head = next((v for name, v in values.items() if _target(name) == "model.n_head"), base.model.n_head)
        for name, value in values.items():
            section, key = PARAM_TARGETS.get(name, name).split(".")
            if name == "head_dim":
                if not (_number(n_head) and _number(value)):
                    raise HpoError(
                        f"search_space.head_dim={value!r} with model.n_head={n_head!r}: both must be integers "
                        "(n_embd = n_head * head_dim)"
                    )
                value = n_head * value
            merged[section][key] = value
        return build(RunSpec, merged)


def _check_distinct(params: list[Param]) -> None:
    """HpoError if two entries set one config key (`n_layer` and `model.n_layer`; `head_dim`
    and `n_embd`): one would silently overwrite the other in every trial."""
    names: dict[str, str] = {}
    for param in params:
        target = _target(param.name)
        assert target is not None, "_parse_param admits named entries only"
        if target in names:
            why = " (head_dim derives the width)" if "head_dim" in (names[target], param.name) else ""
            raise HpoError(
                f"search_space sets both {names[target]} and {param.name}, which both set {target}; keep one{why}"
            )
        names[target] = param.name


def _values(param: Param) -> list[tuple[str, Any]]:
    """The values of an unconditional entry that `SearchSpace.check` tries, each with where
    the entry gives it: the fixed value, each choice, or the two bounds of a range."""
    if param.kind == "fixed":
        return [("", param.value)]
    if param.kind == "categorical":
        return [(f".choices[{i}]", choice) for i, choice in enumerate(param.choices)]
    return [(".low", param.low), (".high", param.high)]


def _all_fixed(param: Param) -> bool:
    return all(branch.kind == "fixed" for _, branch in param.branches)
