"""Build typed, frozen config dataclasses from plain nested dicts, with user-facing errors.

Hydra gives untyped dicts; checkpoints and study attributes store plain dicts. Both become
the same dataclasses through `build`, which rejects unknown keys and wrong types with the
dotted key in the message, and leaves value checks to each dataclass's `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from hpo.errors import HpoError

T = TypeVar("T")


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two nested dicts, sorted. Compared through
    JSON, as a database stores them: tuples and lists compare equal."""
    flat_a, flat_b = _flatten(json.loads(json.dumps(a))), _flatten(json.loads(json.dumps(b)))
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


def build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass `cls` from `data`; `prefix` is the dotted path for messages."""
    if not isinstance(data, Mapping):
        raise HpoError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise HpoError(f"unknown config key {where}; known keys: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(hints[name], value, f"{prefix}.{name}" if prefix else name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except HpoError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if value not in get_args(hint):
            allowed = ", ".join(str(a) for a in get_args(hint))
            raise HpoError(f"{key}={value!r} is not allowed; use one of {allowed}")
        return value
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise HpoError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise HpoError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(hint)[:1] or (Any,)
        return tuple(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, key)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise HpoError(f"{key}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise HpoError(f"{key}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HpoError(f"{key}={value!r} must be a number")
        number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(number):
            # No setting means anything at infinity, and a NaN learning rate would train
            # until the loss is NaN too: both are typos (null is a setting's "none").
            raise HpoError(f"{key}={value!r} must be a finite number")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise HpoError(f"{key}={value!r} must be a string")
        return value
    raise AssertionError(f"unsupported config type {hint!r} for {key}")
