"""Configuration in and out: YAML file + ``--set a.b=c`` overrides -> a validated
:class:`~fcl_ray.config.Config`, and a Config -> dict, flat dict or YAML (and back).

Values are type-checked against the dataclass annotations while the Config is built; an
unknown key or a value of the wrong type is a :class:`~fcl_ray.config.ConfigError` naming
the key. The cross-field checks are :func:`fcl_ray.config.validate`.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from fcl_ray.config import Config, ConfigError, shown, validate


# ----------------------------------------------------------------------------- coercion
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    return {type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` checked against the annotation ``tp``; raise ConfigError naming key."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif origin is dict:
        if isinstance(value, dict):
            key_tp, value_tp = typing.get_args(tp)
            return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}")
                    for k, v in value.items()}
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item_tp,) = typing.get_args(tp)
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        # A scalar where a list is expected: accept it as a one-element list (--set a=1).
        return [_coerce(value, typing.get_args(tp)[0], key)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {shown(value)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got "
                          f"{shown(raw)}")
    named = [k for k in raw if not isinstance(k, str)]
    if named:   # YAML keys may be numbers, lists, null...: sorting and messages need names
        raise ConfigError(f"config key '{prefix or '<root>'}': {shown(named[0])} is not a key "
                          f"name (type {type(named[0]).__name__})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{where}'; allowed keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, {} if raw[name] is None else raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], tp, key)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- loading
def set_dotted(tree: dict, key: str | list[str], value: Any, what: str = "key") -> None:
    """``tree["a"]["b"]["c"] = value`` for the key ``"a.b.c"`` (or ``["a", "b", "c"]``),
    making the sections on the way. A part of the way that holds a value, not a section, is
    one ConfigError: ``<what>: 'a.b' is not a section``."""
    keys = key.split(".") if isinstance(key, str) else list(key)
    node = tree
    for depth, k in enumerate(keys[:-1]):
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{what}: '{'.'.join(keys[:depth + 1])}' is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into (["a", "b"], value), the value read as YAML (1, 0.5, [1,2], x)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected key=value, e.g. pretrain.rounds=3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError, RecursionError):   # ValueError: a date like 2024-13-01
        value = raw
    if too_large(value):
        raise ConfigError(f"override '{key.strip()}': more than {MAX_NODES} values once its "
                          f"YAML aliases are expanded")
    return key.strip().split("."), value


MAX_NODES = 100_000   # values in one YAML document, aliases expanded; configs hold ~100


def too_large(tree: Any, limit: int = MAX_NODES) -> bool:
    """True when ``tree`` holds more than ``limit`` values once YAML aliases are expanded
    (a "billion laughs" file is a few lines that expand to 10^9); stops counting early."""
    stack, seen = [tree], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False


def read_yaml_mapping(path: str | Path, what: str, of: str) -> dict:
    """A YAML file that must hold a mapping with names as keys; any problem (a folder, not
    UTF-8, not YAML, not a mapping, a key that is a number) is one ConfigError naming the
    file. An empty file is an empty mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} '{path}': is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} '{path}': " + ("not a regular file" if path.exists()
                                                  else "not found"))
    try:
        text = path.read_text(encoding="utf-8-sig")   # -sig: a byte-order mark is fine
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} '{path}': not UTF-8 text (byte {err.start}); a YAML file "
                          f"is expected") from None
    except OSError as err:
        raise ConfigError(f"{what} '{path}': cannot be read ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} '{path}'{where}: not valid YAML") from None
    except (ValueError, RecursionError) as err:   # a date such as 2024-13-01; deep nesting
        raise ConfigError(f"{what} '{path}': not valid YAML ({type(err).__name__}: "
                          f"{str(err)[:80]})") from None
    if raw is None:
        return {}
    if too_large(raw):
        raise ConfigError(f"{what} '{path}': more than {MAX_NODES} values once its YAML "
                          f"aliases are expanded")
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping of {of}, got a "
                          f"{type(raw).__name__}")
    named = [k for k in raw if not isinstance(k, str)]
    if named:
        raise ConfigError(f"{what} '{path}': top-level key {shown(named[0])} is not a name "
                          f"(type {type(named[0]).__name__}); expected a mapping of {of}")
    return raw


def load_config(path: str | Path | Config | dict | None = None,
                overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults), apply overrides, validate, and return it.
    ``path`` may also be a Config or a dict of sections (the Python API's
    ``fcl_ray.run(config)``): a copy of it gets the overrides."""
    if isinstance(path, Config):
        raw = to_dict(path)
    elif isinstance(path, dict):
        raw = copy.deepcopy(path)
    elif path is None or isinstance(path, (str, Path)):
        raw = {} if path is None else read_yaml_mapping(path, "config file", "sections")
    else:
        raise ConfigError(f"config: expected a YAML file's path, a Config or a dict of "
                          f"sections, got {type(path).__name__}")
    for text in overrides:
        if not isinstance(text, str):
            raise ConfigError(f"override {text!r}: expected key=value text, e.g. "
                              f"pretrain.rounds=3")
        keys, value = parse_override(text)
        set_dotted(raw, keys, value, f"override '{text}'")
    return validate(_build(Config, raw, ""))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: the form MLflow params and Tune search spaces use."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        # Sections are non-empty string-keyed dicts; a mapping-typed value such as
        # faults.delay_seconds ({1: 2.5}, or {}) is a leaf.
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict:
    """Inverse of :func:`flatten`."""
    tree: dict = {}
    for name, value in flat.items():
        set_dotted(tree, name, value)
    return tree


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(tree: dict, cross_checks: bool = True) -> Config:
    """Rebuild a validated Config from :func:`to_dict` output (e.g. inside a Ray actor).
    ``cross_checks=False``: types only, without :func:`~fcl_ray.config.validate` (a config an
    earlier version saved, read back to compare with)."""
    cfg = _build(Config, tree, "")
    return validate(cfg) if cross_checks else cfg
