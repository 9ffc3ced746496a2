"""Typed configs: dataclasses loaded from YAML, unknown keys rejected.

``load_config(Cls, path)`` / ``config_from_dict(Cls, data, source=...)`` build a
(possibly nested) dataclass, checking every key and value type, so a typo in a
YAML file is an error that names the file, the field and the allowed keys,
never a silently ignored setting. ``override(cfg, **flags)`` applies CLI flags
(``None`` means "not given").
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edgekd.device.errors import EdgekdError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError("config file not found", file=path, fix="check the path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EdgekdError(f"not valid YAML: {exc}", file=path, fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise EdgekdError("top level must be a mapping of keys to values", file=path)
    return data


def load_config(cls: type[T], path: str | os.PathLike | None, **overrides: Any) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None), then apply overrides."""
    data = load_yaml(path) if path is not None else {}
    cfg = config_from_dict(cls, data, source=str(path) if path else "<defaults>")
    return override(cfg, **overrides)


def config_from_dict(cls: type[T], data: dict, *, source: str = "<config>", prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise EdgekdError(f"expected a mapping for {cls.__name__}", file=source, field=prefix or None)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = unknown[0]
        raise EdgekdError(f"unknown key '{key}'", file=source, field=_join(prefix, key),
                          fix=f"allowed keys for {cls.__name__}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, source, _join(prefix, name)) for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise EdgekdError(str(exc), file=source, field=prefix or None) from None
    return obj


def override(cfg: T, **flags: Any) -> T:
    """Return a copy of ``cfg`` with every non-None flag applied (type-checked)."""
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return cfg
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(typing.cast(Any, cfg))}
    for key in given:
        if key not in names:
            raise EdgekdError(f"unknown option '{key}' for {type(cfg).__name__}",
                              fix=f"allowed: {', '.join(sorted(names))}")
    coerced = {k: _coerce(hints[k], v, "<command line>", k) for k, v in given.items()}
    return typing.cast(T, dataclasses.replace(typing.cast(Any, cfg), **coerced))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _coerce(tp: Any, value: Any, source: str, field: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, source, field)
            except EdgekdError as exc:
                errors.append(exc.what)
        raise EdgekdError(f"invalid value {value!r} ({'; '.join(errors)})", file=source, field=field)
    if origin is typing.Literal:
        if value not in args:
            raise EdgekdError(f"invalid value {value!r}", file=source, field=field,
                              fix=f"choose one of: {', '.join(map(repr, args))}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, value, source=source, prefix=field)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise EdgekdError(f"expected a list, got {value!r}", file=source, field=field)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source, f"{field}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise EdgekdError(f"expected {len(args)} values, got {len(value)}", file=source, field=field)
            return tuple(_coerce(a, v, source, f"{field}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, source, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise EdgekdError(f"expected a mapping, got {value!r}", file=source, field=field)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, source, f"{field}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise EdgekdError(f"expected true/false, got {value!r}", file=source, field=field)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EdgekdError(f"expected an integer, got {value!r}", file=source, field=field)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EdgekdError(f"expected a number, got {value!r}", file=source, field=field)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise EdgekdError(f"expected a string, got {value!r}", file=source, field=field)
        return value
    return value


def require_positive(obj: Any, *names: str, source: str = "<config>") -> None:
    """Raise if any named numeric field of ``obj`` is <= 0 (use in ``__post_init__`` callers)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise EdgekdError(f"must be positive, got {value!r}", file=source, field=name,
                              fix=f"set {name} to a value > 0")
