"""Stage configs: one dataclass per stage; CLI options, YAML files and the TUI form derive from it.

Each field carries ``metadata={"help": ...}`` and optionally ``"group"`` (``"lora"`` fields are
inherited from a parent adapter's recorded config when not given). Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

from .errors import UsageError


def fields(config_class: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_class) if not f.name.startswith("_")]


def field_help(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


def field_type(config_class: type, field: dataclasses.Field) -> Any:
    """The field's type with ``Optional[...]`` removed (``int | None`` -> ``int``)."""
    hints = typing.get_type_hints(config_class)
    tp = hints.get(field.name, str)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def coerce(config_class: type, key: str, value: Any) -> Any:
    """Turn a string from ``--set`` or the command line into the field's type."""
    field = _field(config_class, key)
    tp = field_type(config_class, field)
    if value is None or not isinstance(value, str):
        return value
    try:
        if tp is bool:
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        if tp in (int, float):
            return tp(value)
        if typing.get_origin(tp) is list or tp is list:
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        if value.lower() == "none" and default_of(field) is None:
            return None
        return value
    except (ValueError, json.JSONDecodeError):
        raise UsageError(f"{key}={value!r} is not a valid {getattr(tp, '__name__', tp)}",
                         f"see `--help` for what {key} takes") from None


def _field(config_class: type, key: str) -> dataclasses.Field:
    known = {f.name: f for f in fields(config_class)}
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the stage's --help for its keys"
        raise UsageError(f"unknown config key {key!r} for this stage", hint)
    return known[key]


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found", "check the path given to --config") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML ({exc})".replace("\n", " "),
                         "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values",
                         "write it as `key: value` lines")
    return data


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r} is not key=value", "write e.g. --set learning_rate=1e-4")
        out[key.strip()] = value
    return out


def build(config_class: type, *layers: dict) -> Any:
    """Instantiate ``config_class`` from layered dicts (later layers win); refuse unknown keys."""
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            values[key] = coerce(config_class, key, value)
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid config: {exc}", "check the values given") from None


def to_dict(config: Any) -> dict:
    return {f.name: getattr(config, f.name) for f in fields(type(config))}


def group_keys(config_class: type, group: str) -> list[str]:
    return [f.name for f in fields(config_class) if f.metadata.get("group") == group]
