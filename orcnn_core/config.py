"""Configs as data: dataclasses filled from YAML/dicts, where an unknown key is an error naming it."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Type, TypeVar

import yaml

from orcnn_core.errors import ConfigError

T = TypeVar("T")
_UNION_TYPES = (typing.Union, getattr(types, "UnionType", typing.Union))  # Optional[X] and X | None


def from_dict(cls: Type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; nested (also ``Optional``) dataclass fields recurse;
    unknown keys raise."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' "
                          f"(known keys of {cls.__name__}: {', '.join(sorted(fields))})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints.get(name)
        key = f"{where}.{name}" if where else name
        optional = _optional_dataclass(hint)
        if optional is not None:  # Optional[Spec]: None stays None, a mapping becomes a Spec
            kwargs[name] = None if value is None else from_dict(optional, value, key)
        elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
            kwargs[name] = from_dict(hint, value, key)
        else:
            kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def _optional_dataclass(hint: Any) -> type | None:
    """``Spec`` for an ``Optional[Spec]`` (``Spec | None``) hint of a dataclass ``Spec``, else None."""
    if typing.get_origin(hint) not in _UNION_TYPES:
        return None
    args = typing.get_args(hint)
    others = [a for a in args if a is not type(None)]
    if len(others) == 1 and len(args) == 2 and dataclasses.is_dataclass(others[0]) \
            and isinstance(others[0], type):
        return others[0]
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (for YAML, JSON sidecars, logs)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or unreadable file is a ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    return data
