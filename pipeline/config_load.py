"""Build a `Config` from one precedence chain: defaults < `steertui.toml` < `STEERTUI_*` env < flags.

Unknown keys, wrong types and impossible values raise `ConfigError` with one line naming the key and
where it was set. Nothing here writes anything.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from pipeline.config import Config, ModelSpec
from pipeline.errors import ConfigError
from pipeline.workspace import CONFIG_NAME

ENV_PREFIX = "STEERTUI_"
# STEERTUI_* variables that are not config keys.
NON_CONFIG_ENV = {"STEERTUI_WORKSPACE", "STEERTUI_CACHE", "STEERTUI_HOME", "STEERTUI_LOG_LEVEL"}

T = TypeVar("T")
LayerCount = Callable[[str], "int | None"]


def load_config(
    root: Path,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    layer_count: LayerCount | None = None,
    require_file: bool = True,
) -> Config:
    """Resolve the workspace config; `overrides` are dotted keys from CLI flags the user typed."""
    path = root / CONFIG_NAME
    data: dict[str, Any] = read_toml(path) if path.exists() else {}
    if require_file and not path.exists():
        raise ConfigError(f"{path}: no steertui.toml here; run `steertui init {root}` or pass --workspace")
    sources: dict[str, str] = {}
    for key, raw in env_overrides(env or {}).items():
        _set_dotted(data, key, _coerce_text(raw, _field_type(key), f"{_env_name(key)}"))
        sources[key] = _env_name(key)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        flag = "--" + key.split(".")[-1].replace("_", "-")
        _set_dotted(data, key, value)
        sources[key] = flag
    try:
        config = build(Config, data, "")
    except ConfigError as exc:
        key = exc.message.split(":", 1)[0]
        raise ConfigError(f"{sources.get(key, path.name)}: {exc.message}") from None
    if layer_count is not None:
        check_layers(config, layer_count, path.name)
    return config


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}; fix the file and retry") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def check_layers(config: Config, layer_count: LayerCount, where: str) -> None:
    """Refuse a layer the model does not have (when the model's depth is known without loading it)."""
    for spec in config.models:
        n = layer_count(spec.name)
        if n is None:
            continue
        bad = [layer for layer in spec.layers if layer >= n]
        if bad:
            raise ConfigError(
                f"{where}: models[{spec.name}].layers: layer {bad[0]} does not exist; "
                f"{spec.short} has layers 0..{n - 1}"
            )


def env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """`STEERTUI_TRAIN_EPOCHS=3` -> {"train.epochs": "3"}; unknown keys of known sections are errors."""
    sections = {f.name for f in dataclasses.fields(Config) if dataclasses.is_dataclass(_hint(Config, f.name))}
    scalars = {f.name for f in dataclasses.fields(Config)} - sections - {"models", "prices"}
    out: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in NON_CONFIG_ENV:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest in scalars:
            out[rest] = value
            continue
        section, _, key = rest.partition("_")
        if section not in sections:
            continue
        if key not in {f.name for f in dataclasses.fields(_hint(Config, section))}:
            raise ConfigError(f"{name}: {section}.{key} is not a config key; unset it or fix the name")
        out[f"{section}.{key}"] = value
    return out


def build(cls: type[T], data: Any, prefix: str) -> T:
    """Convert a TOML table into dataclass `cls`, checking keys and types against its hints."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key; allowed keys here: {', '.join(sorted(names))}")
    kwargs = {key: convert(value, _hint(cls, key), f"{prefix}.{key}" if prefix else key) for key, value in data.items()}
    return cls(**kwargs)


def convert(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one TOML value against a type hint."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        if args[0] is ModelSpec:
            return tuple(build(ModelSpec, v, f"models[{i}]") for i, v in enumerate(value))
        return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {_show(value)}")
        return {str(k): convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return _scalar(value, hint, key)


def _scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_show(value)}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _coerce_text(raw: str, hint: Any, name: str) -> Any:
    """Parse an env var's text into the type the key expects."""
    origin, args = get_origin(hint), get_args(hint)
    try:
        if origin is tuple:
            parts = [p.strip() for p in raw.split(",") if p.strip()]
            return [_coerce_text(p, args[0], name) for p in parts]
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes"}
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: cannot parse {raw!r} as {getattr(hint, '__name__', hint)}") from None
    return raw


def _field_type(dotted: str) -> Any:
    cls: Any = Config
    parts = dotted.split(".")
    for part in parts[:-1]:
        cls = _hint(cls, part)
    return _hint(cls, parts[-1])


def _hint(cls: Any, name: str) -> Any:
    hints = typing.get_type_hints(cls)
    hint = hints[name]
    if isinstance(hint, types.UnionType):
        return get_args(hint)[0]
    return hint


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
