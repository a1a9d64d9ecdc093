"""One config loader for every command: dataclass defaults, then a YAML file, then CLI overrides.

Overrides are ``dotted.key=value`` strings whose values are parsed as YAML scalars
(``stage2.temperature=0.7``, ``stages=[1,2]``). Unknown keys fail with the closest known names;
every value is checked against its field's type, nested and list fields included (``stage3: 5``
or ``max_prompts: [1, 2]`` stop with one line naming the file, the field, the expected type and
the value), choice fields (``field(metadata={"choices": ...})``) against their choices, and numbers
against the ranges in ``_check_range``.
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


def type_name(tp: Any) -> str:
    """``list[str]`` -> "a list of strings" (for error messages)."""
    if tp is Any:
        return "any value"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin in (dict, Mapping) or tp is dict:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1])}" if args else "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    name = type_name(tp)
    for article in ("a ", "an "):
        if name.startswith(article):
            name = name[len(article):]
            break
    return {"true or false": "booleans", "any value": "values"}.get(name, name + "s" if " " not in name else name)


class _Mismatch(Exception):
    pass


# Numeric config fields are counts, sizes, rates, probabilities or durations: never negative,
# except these. Fields named below must be at least 1 (> 0 for durations).
_MAY_BE_NEGATIVE = frozenset({"seed", "logit_bias"})
_POSITIVE_SUFFIXES = ("batch_size", "chunk_size", "concurrency", "parse_attempts", "_per_prompt", "max_new_tokens",
                      "max_tokens", "max_length", "_rounds", "timeout_s", "num_requests", "epochs", "lora_r")


def _check_range(name: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    if name.endswith(_POSITIVE_SUFFIXES):
        if value <= 0 or (isinstance(value, int) and value < 1):
            raise UserError(f"{where}: must be {'at least 1' if isinstance(value, int) else '> 0'}, got {value!r}")
    elif name not in _MAY_BE_NEGATIVE and value < 0:
        raise UserError(f"{where}: must be >= 0, got {value!r}")


def _convert(value: Any, tp: Any, where: str, name: str, ranges: list[tuple[str, Any, str]]) -> Any:
    """``value`` as the declared type ``tp`` (YAML scalars coerced), or a UserError naming both."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where, name, ranges)
            except UserError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise UserError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if value is None:
        raise UserError(f"{where}: expected {type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected {type_name(tp)}, got {value!r}")
        item = args[0] if args else Any
        return [_convert(v, item, f"{where}[{i}]", name, ranges) for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected {type_name(tp)}, got {value!r}")
        k_tp, v_tp = args if args else (Any, Any)
        return {_convert(k, k_tp, where, name, []): _convert(v, v_tp, f"{where}.{k}", name, ranges) for k, v in value.items()}
    try:
        out = _scalar(value, tp)
    except _Mismatch:
        raise UserError(f"{where}: expected {type_name(tp)}, got {value!r}") from None
    ranges.append((name, out, where))
    return out


def _scalar(value: Any, tp: Any) -> Any:
    """YAML 1.1 reads ``4e-4`` (no dot) as a string and overrides may arrive as strings."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise _Mismatch
    if tp in (int, float):
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
        if not isinstance(value, (int, float)):
            raise _Mismatch
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise _Mismatch
            return int(value)
        return float(value)
    if tp is str:
        # Numbers are accepted as their text (YAML reads `name: 2024` or `stages: 3` as ints).
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _Mismatch
    return value


def build_dataclass(cls: type[C], data: Mapping[str, Any], where: str = "config") -> C:
    """Instantiate ``cls`` from a mapping, recursing into nested dataclass fields.

    Every field is checked against its annotation, nested and list fields included; a field
    whose metadata says ``comma_separated`` also takes ``"a,b"`` for a list of strings, and one
    with ``choices`` takes only those values.
    """
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: expected a mapping of {cls.__name__} fields, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    ranges: list[tuple[str, Any, str]] = []  # checked after the class's own validation, which names its fields
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(str(key), fields)
            raise UserError(f"{where}: unknown key {key!r}" + (f"; {hint}" if hint else f"; known: {', '.join(fields)}"))
        if fields[key].metadata.get("comma_separated") and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}", key, ranges)
        choices = fields[key].metadata.get("choices")
        if choices is not None and kwargs[key] not in choices:
            hint = did_you_mean(str(value), choices)
            raise UserError(f"{where}.{key}: expected one of {', '.join(choices)}, got {value!r}" + (f"; {hint}" if hint else ""))
    try:
        built = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None
    for name, value, at in ranges:
        _check_range(name, value, at)
    return built


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
