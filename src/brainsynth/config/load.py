"""Dataclass configs: from/to dicts, YAML files and ``--set a.b=c`` overrides with type checks.

Precedence, lowest first: schema defaults < ``base`` dict < YAML file < overrides. Values are
coerced to the annotated field types (bool, int, float, str, Path, Literal, ``X | None``,
``tuple[...]``, ``list[...]``, ``dict[str, ...]``, nested dataclasses); anything that does not fit
is an :class:`~brainsynth.errors.InputError` naming the dotted key. Unknown keys are errors that
list the valid ones (and the closest match), so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml

from brainsynth.errors import InputError

T = TypeVar("T")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null", "~")


class _Raw(str):
    """An override value as typed on the command line: parsed by the field type, not by YAML
    (so ``--set name=yes`` stays the string "yes" for a str field)."""


def _err(key: str, problem: str) -> InputError:
    return InputError(None, f"config key {key!r}: {problem}")


# -- dict <-> dataclass -----------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict:
    """A dataclass instance -> plain nested dict (tuples as lists, Paths as str): YAML/JSON-ready."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def from_dict(cls: type[T], data: Mapping | None, prefix: str = "") -> T:
    """Build ``cls`` from a (partial) nested dict; missing keys keep their defaults."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise InputError(None, _unknown_message(unknown, fields, prefix))
    defaults = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for k, v in data.items():
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping):
            # a partial section keeps the *field's* defaults (which may differ from the section
            # class's own), e.g. ToyConfig.train = TrainConfig(steps=300) plus --set train.lr=...
            default = _field_default(defaults[k])
            if dataclasses.is_dataclass(default) and not isinstance(default, type):
                v = _merge(to_dict(default), v)
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(None, f"invalid config: {_qualified(str(e), fields, prefix)}") from None


def _qualified(message: str, fields: list[str], prefix: str) -> str:
    """A section's check names its own field (``batch_size must be > 0``); say which section it
    is (``train_ae.batch_size``): one schema class serves several sections."""
    first = message.split(" ", 1)[0]
    return prefix + message if first in fields else message


def known_keys(cls: type, data: Mapping, prefix: str = "") -> tuple[dict, list[str]]:
    """``data`` without the keys (at any depth) that ``cls`` does not have, and those keys' dotted
    names: for configs stored by an older version (an option since removed)."""
    hints = typing.get_type_hints(cls)
    kept, dropped = {}, []
    for k, v in data.items():
        if k not in hints:
            dropped.append(prefix + k)
        elif dataclasses.is_dataclass(hints[k]) and isinstance(v, Mapping):
            kept[k], sub = known_keys(hints[k], v, f"{prefix}{k}.")
            dropped += sub
        else:
            kept[k] = v
    return kept, dropped


def config_from_meta(cls: type[T], meta: Mapping) -> T:
    """The ``cls`` config stored in a checkpoint's resolved config (the run's other keys, such as
    ``method`` or ``cache``, ignored). Keys this version does not know (an option since removed)
    are dropped with a warning: if they changed a network, loading its weights then fails on the
    shapes, which the loader reports."""
    own = {k: meta[k] for k in to_dict(cls()) if k in meta}
    base, dropped = known_keys(cls, own)
    if dropped:
        warnings.warn(
            f"checkpoint config keys {dropped} are unknown to this version; ignored", stacklevel=3
        )
    return load_config(cls, base=base)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _unknown_message(unknown: list[str], valid: list[str], prefix: str) -> str:
    msg = f"unknown config key(s) {[prefix + u for u in unknown]}"
    close = difflib.get_close_matches(unknown[0], valid, n=1)
    if close:
        msg += f" (did you mean {prefix + close[0]!r}?)"
    return msg + f"; valid: {[prefix + v for v in valid]}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    raw = isinstance(value, _Raw)
    origin = get_origin(tp)
    if tp is Any:
        return yaml.safe_load(value) if raw else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            sub = [f.name for f in dataclasses.fields(tp)]
            raise _err(key, f"is a section, not a value; set one of {[f'{key}.{s}' for s in sub]}")
        return from_dict(typing.cast(type, tp), value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is typing.Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c and type(value) is type(c) or (raw and str(c) == str(value)):
                return c
        raise _err(key, f"must be one of {list(choices)}, got {_show(value)}")
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(value, tp, key)
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping(yaml.safe_load(value) if raw else value, tp, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _err(key, f"must be true or false, got {_show(value)}")
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        if isinstance(value, bool):
            raise _err(key, f"must be float, got {_show(value)}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise _err(key, f"must be float, got {_show(value)}") from None
        if not math.isfinite(f):  # no config value means anything as NaN or inf (lr=nan trains NaN)
            raise _err(key, f"must be a finite number, got {_show(value)}")
        return f
    if tp is str:
        if isinstance(value, (Mapping, list, tuple)) or value is None:
            raise _err(key, f"must be a string, got {_show(value)}")
        return str(value)
    if tp is Path:
        return Path(str(value))
    return value


def _coerce_union(value: Any, tp: Any, key: str) -> Any:
    """The first member of the union ``tp`` that takes ``value``; None for an empty value when
    the union is Optional."""
    args = [a for a in get_args(tp) if a is not type(None)]
    if _is_none(value):
        if len(args) < len(get_args(tp)):
            return None
        raise _err(key, "may not be empty")
    errors = []
    for a in args:
        try:
            return _coerce(value, a, key)
        except InputError as e:
            errors.append(e.problem)
    raise _err(key, f"cannot use {value!r} as {_type_name(tp)} ({'; '.join(errors)})")


def _coerce_mapping(value: Any, tp: Any, key: str) -> dict:
    if not isinstance(value, Mapping):
        raise _err(key, f"must be a mapping, got {_show(value)}")
    kv = get_args(tp)
    vt = kv[1] if len(kv) == 2 else Any
    return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise _err(key, f"must be int, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:  # "1e3", "2.0": fine when integral
            f = float(s)
        except ValueError:
            f = float("nan")
        if f == f and f.is_integer():
            return int(f)
    raise _err(key, f"must be int, got {_show(value)}")


def _coerce_sequence(value: Any, tp: Any, key: str) -> Any:
    origin = get_origin(tp) or tp
    if isinstance(value, str):
        s = value.strip()
        if s[:1] in "[(" and s[-1:] in "])":
            s = s[1:-1]
        items: list = [_Raw(v.strip()) for v in s.split(",") if v.strip()] if s else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]  # a scalar for a variable-length tuple: one element
    args = get_args(tp)
    if origin is list:
        et = args[0] if args else Any
        return [_coerce(v, et, f"{key}[{i}]") for i, v in enumerate(items)]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        et = args[0] if args else Any
        return tuple(_coerce(v, et, f"{key}[{i}]") for i, v in enumerate(items))
    if len(items) != len(args):
        raise _err(key, f"needs {len(args)} values, got {len(items)}: {_show(value)}")
    return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args)))


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, _Raw) else repr(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# -- overrides, files ---------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], str]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], "1e-4")."""
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise InputError(None, f"override {item!r} must look like key.sub=value")
    return [p.strip() for p in parts], raw.strip()


def apply_overrides(data: Mapping, overrides: Sequence[str] | None) -> dict:
    """Apply ``["train.lr=1e-4", "model.preset=small"]`` to a nested dict (a new dict is returned).

    Values stay strings here and are converted by the field type in :func:`from_dict`, so
    ``--set train.amp=off`` is the string "off" (YAML would have made it ``False``).
    """
    out = _copy(data)
    for item in overrides or ():
        parts, raw = parse_override(item)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise InputError(None, f"override {item!r}: {where!r} is a value, not a section")
            node = child
        node[parts[-1]] = _Raw(raw)
    return out


def _copy(d: Mapping) -> dict:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def _merge(a: Mapping, b: Mapping) -> dict:
    out = _copy(a)
    for k, v in b.items():
        out[k] = (
            _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
        )
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as e:
        raise InputError(path, f"cannot read config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise InputError(path, f"not valid YAML ({e})") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(path, f"config must be a mapping of sections, got {type(loaded).__name__}")
    return loaded


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    base: Mapping | None = None,
) -> T:
    """Schema defaults <- ``base`` <- YAML file ``path`` <- ``overrides`` (``"a.b=c"`` strings)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    data = _copy(base or {})
    if path is not None:
        data = _merge(data, read_yaml(path))
    return from_dict(cls, apply_overrides(data, overrides))


def dump_yaml(cfg: Any) -> str:
    """YAML text of a dataclass config (or of an already plain dict), in field order."""
    data = cfg if isinstance(cfg, Mapping) else to_dict(cfg)
    return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False)


def write_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically."""
    from brainsynth.io.atomic import write_text_atomic

    path = Path(path)
    write_text_atomic(path, dump_yaml(cfg))
    return path
