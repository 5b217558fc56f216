"""Stage configs: one dataclass per stage; CLI options, YAML files and the TUI form derive from it.

Each field carries ``metadata={"help": ...}`` and optionally ``"group"`` (``"lora"`` fields are
inherited from a parent adapter's recorded config when not given). Unknown keys are errors.

A stage may also accept every field of a library's config class (its ``passthrough``: TRL's
``SFTConfig`` for the sft stage): such keys land in the config's ``trainer_options`` field,
typed and range-checked by that class's own annotations; the library validates them when the
class is constructed in the stage's check. The options a config class owns itself are named in
its ``owned_options`` (key -> the adaptr option to use instead) and refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from .errors import UsageError


def fields(config_class: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_class) if not f.name.startswith("_")]


def shown_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields the CLI makes options of and the TUI makes form fields of (not ``hidden`` ones)."""
    return [f for f in fields(config_class) if not f.metadata.get("hidden")]


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
    """The value of ``key`` in the field's type: parsed from a string (``--set``, the command
    line), or checked as given (YAML, the TUI); then range-checked. Raises UsageError."""
    field = _field(config_class, key)
    tp = field_type(config_class, field)
    if value is None:
        if default_of(field) is not None:
            raise UsageError(f"{key} cannot be empty", f"give a value, or drop {key} to keep its default")
        return None
    value = _parse(key, tp, field, value) if isinstance(value, str) else _typed(key, tp, value)
    check_value(field, key, value)
    return value


def _is_list(tp) -> bool:
    return typing.get_origin(tp) is list or tp is list


def _item_type(tp):
    return (typing.get_args(tp) or (str,))[0]


def _type_name(tp) -> str:
    if _is_list(tp):
        return "list of " + {float: "numbers", int: "whole numbers"}.get(_item_type(tp), "names")
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(member) for member in typing.get_args(tp))
    return {bool: "true/false value", int: "whole number", float: "number", str: "text",
            dict: "mapping"}.get(tp, str(tp))


def _parse(key: str, tp, field: dataclasses.Field, value: str) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _parse_union(key, tp, field, value)
    try:
        if tp is bool:
            lowered = value.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return lowered in ("1", "true", "yes", "on")
        if tp in (int, float):
            return tp(value)
        if _is_list(tp):
            text = value.strip()
            if text.startswith("["):
                return _typed(key, tp, json.loads(text))
            item = _item_type(tp)
            return _typed(key, tp, [item(v.strip()) if item in (int, float) else v.strip()
                                    for v in text.split(",") if v.strip()])
        if value.lower() == "none" and default_of(field) is None:
            return None
        return value
    except (ValueError, json.JSONDecodeError):
        raise UsageError(f"{key}={value!r} is not a valid {_type_name(tp)}",
                         f"see `--help` for what {key} takes") from None


def _parse_union(key: str, tp, field: dataclasses.Field, value: str) -> Any:
    """A string for a field of several types (``int | str``): the first that parses it."""
    members = [m for m in typing.get_args(tp) if m is not type(None)]
    text = value.strip()
    if text[:1] in "[{" and any(_is_list(m) or m is dict or typing.get_origin(m) is dict for m in members):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    for member in (m for m in members if m in (bool, int, float)):
        try:
            return _parse(key, member, field, value)
        except UsageError:
            continue
    if value.lower() == "none" and type(None) in typing.get_args(tp):
        return None
    if str in members or any(isinstance(m, type) and issubclass(m, str) for m in members):
        return value
    raise UsageError(f"{key}={value!r} is not a valid {_type_name(tp)}", f"see `--help` for what {key} takes")


def _typed(key: str, tp, value: Any) -> Any:
    """A non-string value (from YAML or the TUI) checked against the field's type."""
    if _is_list(tp):
        if not isinstance(value, list):
            raise UsageError(f"{key}={value!r} is not a valid {_type_name(tp)}",
                             f"see `--help` for what {key} takes")
        return [_typed(key, _item_type(tp), item) for item in value]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # e.g. bool | str
        ok = lambda v: any(_CHECKS.get(member, lambda _: True)(v) for member in typing.get_args(tp))  # noqa: E731
    else:
        ok = _CHECKS.get(tp)
    if ok is not None and not ok(value):
        raise UsageError(f"{key}={value!r} is not a valid {_type_name(tp)}",
                         f"see `--help` for what {key} takes")
    return int(value) if tp is int else value  # an int given for a float field stays as given


_CHECKS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    dict: lambda v: isinstance(v, dict),
}


def check_value(field: dataclasses.Field, key: str, value: Any) -> None:
    """Refuse a value outside the field's declared range (``metadata``: ``min``, ``max``,
    ``above``, ``below``, ``also`` for allowed exceptions, ``choices``); floats must be finite."""
    meta = field.metadata
    if value is None or value in meta.get("also", ()):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{key}={value} is not a finite number", f"give {key} a real value")
    if "choices" in meta and value not in meta["choices"]:
        raise UsageError(f"{key}={value!r} is not one of {', '.join(map(str, meta['choices']))}",
                         f"see `--help` for what {key} takes")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = [(meta.get("min"), lambda v, b: v >= b, ">="), (meta.get("max"), lambda v, b: v <= b, "<="),
              (meta.get("above"), lambda v, b: v > b, ">"), (meta.get("below"), lambda v, b: v < b, "<")]
    for bound, holds, sign in bounds:
        if bound is not None and not holds(value, bound):
            also = " (or " + ", ".join(map(str, meta["also"])) + ")" if meta.get("also") else ""
            raise UsageError(f"{key}={value} is out of range: it must be {sign} {bound}{also}",
                             f"see `--help` for what {key} takes")


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
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found", "check the path given to --config") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path} ({exc.strerror})", "check the path and its permissions") from None
    try:
        data = yaml.safe_load(decode_utf8(raw, path)) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"config file {path} is not valid YAML ({exc})".replace("\n", " "),
                         "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values",
                         "write it as `key: value` lines")
    if not all(isinstance(key, str) for key in data):
        raise UsageError(f"config file {path}: every key must be a name", "write it as `key: value` lines")
    return data


def decode_utf8(raw: bytes, path: Path, line: int | None = None) -> str:
    """``raw`` as text, or a UsageError naming the line (counted in ``raw`` unless given)."""
    try:
        return raw.decode("utf-8-sig" if line in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        where = line if line is not None else raw[:exc.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {where} is not valid UTF-8 (byte {raw[exc.start:exc.start + 1]!r})",
                         "save the file as UTF-8") from None


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r} is not key=value", "write e.g. --set learning_rate=1e-4")
        out[key.strip()] = value
    return out


OPTIONS_FIELD = "trainer_options"


def build(config_class: type, *layers: dict, passthrough=None) -> Any:
    """Instantiate ``config_class`` from layered dicts (later layers win); refuse unknown keys.

    ``passthrough`` is the library config class whose fields are accepted too (a class, a
    ``"module:attribute"`` string, or None); it is imported only when such a key is given.
    """
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key == OPTIONS_FIELD:
                options.update(value or {})
            elif key in {f.name for f in fields(config_class)}:
                values[key] = coerce(config_class, key, value)
            else:
                options[key] = value
    if options:
        values[OPTIONS_FIELD] = {k: coerce_option(config_class, passthrough, k, v) for k, v in options.items()}
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid config: {exc}", "check the values given") from None


def coerce_any(config_class: type, passthrough, key: str, value: Any) -> Any:
    """``coerce`` for a field of the stage's config, or :func:`coerce_option` for any other key."""
    if key in {f.name for f in fields(config_class)}:
        return coerce(config_class, key, value)
    return coerce_option(config_class, passthrough, key, value)


def coerce_option(config_class: type, passthrough, key: str, value: Any) -> Any:
    """A key of the passthrough class, typed by its annotation; an owned or unknown key refused."""
    owned = getattr(config_class, "owned_options", {})
    if key in owned:
        raise UsageError(f"{key} is set by adaptr", owned[key])
    library = resolve_class(passthrough) if passthrough else None
    known = {f.name for f in fields(library)} if library else set()
    if key not in known or key == OPTIONS_FIELD:
        candidates = [f.name for f in fields(config_class) if f.name != OPTIONS_FIELD] + sorted(known)
        close = difflib.get_close_matches(key, candidates, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the stage's --help for its keys"
        raise UsageError(f"unknown config key {key!r} for this stage", hint)
    return coerce(library, key, value)


def resolve_class(target: str | type) -> type:
    """A class given as ``"module:attribute"`` (imported now), or the class itself."""
    if not isinstance(target, str):
        return target
    import importlib

    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def to_dict(config: Any) -> dict:
    return {f.name: getattr(config, f.name) for f in fields(type(config))}


def group_keys(config_class: type, group: str) -> list[str]:
    return [f.name for f in fields(config_class) if f.metadata.get("group") == group]
