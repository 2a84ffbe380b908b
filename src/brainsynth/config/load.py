"""Dataclass configs: from/to dicts, YAML files and ``--set a.b=c`` overrides with type checks."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml

from brainsynth.errors import InputError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = (
            to_dict(v) if dataclasses.is_dataclass(v) else list(v) if isinstance(v, tuple) else v
        )
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(None, f"config key {key!r} must be a mapping")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise InputError(
                None, f"config key {key!r} must be one of {list(get_args(tp))}, got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except (InputError, ValueError, TypeError):
                continue
        raise InputError(None, f"config key {key!r}: cannot use {value!r} as {tp}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise InputError(None, f"config key {key!r} needs {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "1", "yes", "on"):
                return True
            if value.lower() in ("false", "0", "no", "off"):
                return False
            raise InputError(None, f"config key {key!r} must be true or false, got {value!r}")
        return bool(value)
    if tp in (int, float):
        try:
            out = (
                tp(float(value))
                if tp is int and isinstance(value, str) and "e" in value.lower()
                else tp(value)
            )
        except (TypeError, ValueError) as e:
            raise InputError(
                None, f"config key {key!r} must be {tp.__name__}, got {value!r}"
            ) from e
        if tp is int and isinstance(value, float) and value != int(value):
            raise InputError(None, f"config key {key!r} must be an integer, got {value!r}")
        return out
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            None,
            f"unknown config key(s) {[prefix + u for u in unknown]}; valid: {sorted(prefix + n for n in names)}",
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["train.lr=1e-4", "model.preset=small"]`` -> nested dict updates (values parsed as YAML)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise InputError(None, f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(None, f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict | None = None,
) -> T:
    """Schema defaults <- ``base`` <- YAML file <- overrides."""
    data = dict(base or {})
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(path, f"cannot read YAML config ({e})") from e
        if not isinstance(loaded, dict):
            raise InputError(path, "config must be a mapping")
        data = _merge(data, loaded)
    return from_dict(cls, apply_overrides(data, overrides or []))


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
