"""One config loader for every command: dataclass defaults, then a YAML file, then CLI overrides.

Overrides are ``dotted.key=value`` strings whose values are parsed as YAML scalars
(``stage2.temperature=0.7``, ``stages=[1,2]``). Unknown keys fail with the closest known names.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from harness.common.errors import UserError
from harness.common.registry import did_you_mean

C = TypeVar("C")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    return data


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not KEY=VALUE (e.g. stage2.temperature=0.7)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = tree
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert YAML scalars to a field's declared scalar type.

    YAML 1.1 reads ``4e-4`` (no dot) as a string and CLI overrides may arrive as strings, so
    float/int/bool fields are converted here once instead of in every config class.
    """
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        return value
    if tp in (int, float) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"{where}: expected a {tp.__name__}, got {value!r}") from None
        if tp is int:
            if not number.is_integer():
                raise UserError(f"{where}: expected an integer, got {value!r}")
            return int(number)
        return number
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return value


def build_dataclass(cls: type[C], data: Mapping[str, Any], where: str = "config") -> C:
    """Instantiate ``cls`` from a mapping, recursing into nested dataclass fields."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(key, fields)
            raise UserError(f"{where}: unknown key {key!r}" + (f"; {hint}" if hint else f"; known: {', '.join(fields)}"))
        tp = _unwrap_optional(hints[key])
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            kwargs[key] = build_dataclass(tp, value, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Defaults of ``cls``, updated by the YAML at ``path``, updated by ``overrides``."""
    data: dict[str, Any] = {}
    where = "config"
    if path is not None:
        data = read_yaml(path)
        where = str(path)
    if overrides:
        data = deep_merge(data, parse_overrides(overrides))
    return build_dataclass(cls, data, where)
