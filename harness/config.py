"""Typed configs: dataclass schema -> YAML -> ``key=value`` overrides, validated and frozen before work.

The pattern is DINOv3's eval helpers: no inheritance between config files, every value type-checked,
unknown keys rejected with a did-you-mean, and a canonical hash of everything that changes a result.
Fields whose value cannot change a number (device, workspace, ...) carry ``metadata={"hash": False}``.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union, get_args, get_origin

import yaml

from harness.errors import UserError

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A config value or key is wrong; the message names it."""


def field(default: Any = dataclasses.MISSING, *, help: str = "", hash: bool = True,
          must_exist: bool = False, default_factory: Any = dataclasses.MISSING,
          min: float | None = None, max: float | None = None, min_open: bool = False,
          max_open: bool = False, nonempty: bool = False) -> Any:
    """A dataclass field with a help text (shown by ``--help``), hashing/existence rules and a range.

    ``min``/``max`` bound a number, or every element of a list/tuple (``min_open``/``max_open`` exclude
    the bound itself); ``nonempty`` refuses an empty list. ``build`` checks them before any work, so each
    schema states its ranges once.
    """
    md = {"help": help, "hash": hash, "must_exist": must_exist, "min": min, "max": max,
          "min_open": min_open, "max_open": max_open, "nonempty": nonempty}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to ``tp`` or raise ConfigError."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: None is not allowed")
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, prefix=f"{where}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = _yaml_value(value, where) if value.strip().startswith("[") else [
                v for v in value.split(",") if v.strip() != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        elem = args[0] if args else Any
        out = [_coerce(v, elem, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out)  # frozen configs hold tuples
    if origin in (dict, Mapping) or tp is dict:
        if isinstance(value, str):
            value = _yaml_value(value, where)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = (get_args(tp) or (Any, Any))
        return types.MappingProxyType({_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}")
                                       for k, v in value.items()})
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def _yaml_value(text: str, where: str) -> Any:
    """A list/mapping written on the command line (``[0.1,0.01]``); a parse error names the key."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{where}: {text!r} is not valid YAML ({first})") from None


def build(cls: type[C], data: Mapping[str, Any] | None = None, *, prefix: str = "") -> C:
    """Validate ``data`` against dataclass ``cls``: unknown keys, types, required keys, paths."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{prefix}{k}'{hint}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}{name}"
        if name in data:
            value = _coerce(data[name], hints[name], where)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ConfigError(f"missing required config key '{where}'")
        if f.metadata.get("must_exist") and value is not None and not Path(value).exists():
            raise ConfigError(f"{where}: path '{value}' does not exist")
        check_range(value, f.metadata, where)
        kwargs[name] = value
    return cls(**kwargs)


def check_range(value: Any, md: Mapping[str, Any], where: str) -> None:
    """Apply a field's ``min``/``max``/``nonempty`` rules to a number or to each element of a list."""
    lo, hi = md.get("min"), md.get("max")
    if isinstance(value, (list, tuple)):
        if md.get("nonempty") and not value:
            raise ConfigError(f"{where}: must not be empty")
        items = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(where, value)]
    for w, v in items:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if lo is not None and (v < lo or (md.get("min_open") and v == lo)):
            raise ConfigError(f"{w}={v!r}: must be {'>' if md.get('min_open') else '>='} {lo}")
        if hi is not None and (v > hi or (md.get("max_open") and v == hi)):
            raise ConfigError(f"{w}={v!r}: must be {'<' if md.get('max_open') else '<='} {hi}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict. Values stay strings; ``build`` types them."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
    return data


def to_dict(cfg: Any, *, hashed_only: bool = False) -> Any:
    """Plain JSON-able view of a config (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name), hashed_only=hashed_only)
                for f in dataclasses.fields(cfg)
                if not (hashed_only and not f.metadata.get("hash", True))}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v, hashed_only=hashed_only) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v, hashed_only=hashed_only) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def config_hash(cfg: Any, *extra: Any) -> str:
    """Canonical sha256 (16 hex) over the result-changing fields of ``cfg`` plus ``extra`` values."""
    payload = json.dumps([to_dict(cfg, hashed_only=True), *[to_dict(e) for e in extra]],
                         sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) rows for ``--help`` and docs; nested defaults come from their factory."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if instance is not None:
            default = getattr(instance, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, f"{prefix}{f.name}.", default if dataclasses.is_dataclass(default) else None)
            continue
        rows.append((prefix + f.name, _type_name(tp), to_dict(default), f.metadata.get("help", "")))
    return rows
