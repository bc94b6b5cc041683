"""Configuration loading: defaults, YAML files, environment and flags merged into Settings."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from workers.config_schema import (
    BUILTIN_HANDLERS,
    RAGFLOW_SECTIONS,
    CleanupSettings,
    EmbeddedRedisSettings,
    ExecutorSettings,
    FrozenMap,
    HeartbeatSettings,
    KeysSettings,
    LoggingSettings,
    MemorySettings,
    QueueSettings,
    RedisSettings,
    Schema,
    Settings,
    Spec,
    StoreSettings,
    SupervisorSettings,
    check_handler_name,
    mask_url,
    schema,
)

__all__ = [
    "BUILTIN_HANDLERS",
    "CONF_DIR_VARIABLE",
    "CleanupSettings",
    "ConfigError",
    "EmbeddedRedisSettings",
    "ExecutorSettings",
    "FrozenMap",
    "HeartbeatSettings",
    "KeysSettings",
    "LoggingSettings",
    "MemorySettings",
    "QueueSettings",
    "RedisSettings",
    "Settings",
    "StoreSettings",
    "SupervisorSettings",
    "load_settings",
    "mask_url",
    "resolve_conf_dir",
]

log = logging.getLogger(__name__)

CONF_FILE = "service_conf.yaml"
LOCAL_CONF_FILE = "local.service_conf.yaml"
CONF_DIR_VARIABLE = "TASKEXEC_CONF_DIR"
ENV_PREFIX = "TASKEXEC_"
DEFAULTS_SOURCE = "built-in defaults"
FLAGS_SOURCE = "command line"
# RAGFlow's own variables for the same settings; a TASKEXEC_ variable for the key beats them.
RAGFLOW_ALIASES = {
    "MAX_CONCURRENT_TASKS": "executor.threads",
    "WORKER_HEARTBEAT_TIMEOUT": "heartbeat.timeout_s",
    "TRACE_MALLOC_ENABLED": "memory.trace_on_start",
}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_UNSET = object()


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the source and the dotted key."""


def resolve_conf_dir(
    conf_dir: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The conf folder: --conf-dir, else $TASKEXEC_CONF_DIR, else ./conf if present, else None."""
    environ = os.environ if environ is None else environ
    if conf_dir is not None and str(conf_dir) != "":
        return _existing_dir(Path(conf_dir), "--conf-dir")
    from_env = environ.get(CONF_DIR_VARIABLE, "")
    if from_env:
        return _existing_dir(Path(from_env), CONF_DIR_VARIABLE)
    default = Path("conf")
    return default if default.is_dir() else None


def load_settings(
    conf_dir: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from every source in order (last wins) and validate them once."""
    environ = os.environ if environ is None else environ
    folder = resolve_conf_dir(conf_dir, environ)
    layers = _Layers(schema())
    if folder is not None:
        for name in (CONF_FILE, LOCAL_CONF_FILE):
            _apply_file(layers, folder / name)
    _apply_environ(layers, environ)
    _apply_overrides(layers, overrides or {})
    if layers.values["redis.max_connections"] is None:
        # Every executor thread may hold a connection, plus the blocking read, the heartbeat
        # thread and a little headroom.
        layers.values["redis.max_connections"] = layers.values["executor.threads"] + 4
    _check_combinations(layers)
    return _build(Settings, "", layers.values, conf_dir=folder)


def _existing_dir(path: Path, source: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{source}: {path}: no such folder")
    if not path.is_dir():
        raise ConfigError(f"{source}: {path}: not a folder")
    return path


class _Layers:
    """The merged values so far, each remembering which source set it last."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.values: dict[str, Any] = dict(schema.defaults)
        self.sources: dict[str, str] = {}

    def set(self, key: str, value: Any, source: str, *, text: bool = False) -> None:
        """Validate one value from one source and let it win over the earlier ones."""
        spec = self.schema.lookup(key)
        if spec is None:
            raise ConfigError(f"{source}: {key}: unknown key{self._suggestion(key)}")
        if spec == "section":
            raise ConfigError(f"{source}: {key}: is a section; set the keys inside it")
        assert isinstance(spec, Spec)
        try:
            if key not in self.schema.specs:
                check_handler_name(key.rpartition(".")[2])
            if text:
                value = _from_text(spec, value)
                if value is _UNSET:
                    return
            value = _validate(spec, value)
        except ValueError as exc:
            raise ConfigError(f"{source}: {key}: {exc}") from None
        self.values[key] = value
        self.sources[key] = source

    def error(self, keys: tuple[str, ...], problem: str) -> ConfigError:
        """An error about keys that conflict, naming every source that set one of them."""
        named = dict.fromkeys(self.sources.get(k, DEFAULTS_SOURCE) for k in keys)
        if len(named) > 1:
            named.pop(DEFAULTS_SOURCE, None)
        return ConfigError(f"{', '.join(named)}: {keys[0]}: {problem}")

    def _suggestion(self, key: str) -> str:
        known = [*self.schema.specs, *self.schema.sections]
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        return f" (did you mean {close[0]}?)" if close else ""


def _apply_file(layers: _Layers, path: Path) -> None:
    tree = _read_yaml(path)
    if tree is None:
        return
    ignored: list[str] = []
    _flatten(layers, tree, "", str(path), ignored)
    if ignored:
        log.debug("Ignoring RAGFlow sections %s in %s.", ", ".join(ignored), path)


def _read_yaml(path: Path) -> Mapping[Any, Any] | None:
    """The file's top-level mapping, or None when the file is absent or empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where} not valid YAML: {problem}") from None
    if tree is not None and not isinstance(tree, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {_describe(tree)}")
    return tree


def _flatten(
    layers: _Layers, tree: Mapping[Any, Any], prefix: str, source: str, ignored: list[str]
) -> None:
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str):
            raise ConfigError(f"{source}: {key}: keys must be strings, got {_describe(name)}")
        spec = layers.schema.lookup(key)
        if spec == "section":
            if value is None:  # an empty section, e.g. "redis:" with nothing under it
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {key}: expected a section, got {_describe(value)}")
            _flatten(layers, value, key + ".", source, ignored)
        elif spec is None and not prefix and name in RAGFLOW_SECTIONS:
            ignored.append(name)
        else:
            layers.set(key, value, source)


def _apply_environ(layers: _Layers, environ: Mapping[str, str]) -> None:
    for name, key in RAGFLOW_ALIASES.items():
        if name in environ:
            layers.set(key, environ[name], name, text=True)
    for name in sorted(environ):
        rest = name[len(ENV_PREFIX) :]
        # Variables without "__" are not settings (TASKEXEC_CONF_DIR, or a test's own marker).
        if not name.startswith(ENV_PREFIX) or "__" not in rest:
            continue
        key = ".".join(rest.lower().split("__"))
        layers.set(key, environ[name], name, text=True)


def _apply_overrides(layers: _Layers, overrides: Mapping[str, object]) -> None:
    for key, value in overrides.items():
        if value is None:  # the flag was not given
            continue
        spec = layers.schema.lookup(key)
        if spec == "section" and isinstance(value, Mapping):
            _flatten(layers, value, key + ".", FLAGS_SOURCE, [])
            continue
        if isinstance(spec, Spec):
            # click passes () for a repeatable option that was not given.
            if spec.kind in ("names", "ints") and isinstance(value, list | tuple) and not value:
                continue
            # A string for a typed key (e.g. from a generic --set key=value) reads like a variable.
            text = isinstance(value, str) and spec.kind != "str"
            layers.set(key, value, FLAGS_SOURCE, text=text)
        else:
            layers.set(key, value, FLAGS_SOURCE)


def _check_combinations(layers: _Layers) -> None:
    v = layers.values
    if v["redis.url"] and v["redis.host"]:
        raise layers.error(
            ("redis.url", "redis.host"), "set either redis.url or RAGFlow's redis.host, not both"
        )
    if v["redis.sentinel"] and (v["redis.url"] or v["redis.host"]):
        other = "redis.url" if v["redis.url"] else "redis.host"
        raise layers.error(
            ("redis.sentinel", other), f"set either redis.sentinel or {other}, not both (the"
            " sentinels name the primary)",
        )
    timeout, block = v["redis.socket_timeout_s"], v["queue.block_s"]
    if timeout < block + 1:
        raise layers.error(
            ("redis.socket_timeout_s", "queue.block_s"),
            f"{timeout:g} s must be at least queue.block_s + 1 s = {block + 1:g} s, or idle"
            " blocking reads end in socket timeouts",
        )
    interval, timeout = v["heartbeat.interval_s"], v["heartbeat.timeout_s"]
    if timeout <= interval:
        raise layers.error(
            ("heartbeat.timeout_s", "heartbeat.interval_s"),
            f"{timeout:g} s must be above heartbeat.interval_s ({interval:g} s), or live consumers"
            " look dead (at least 2 intervals is wise)",
        )


def _build(cls: type, prefix: str, values: Mapping[str, Any], **extra: Any) -> Any:
    kwargs: dict[str, Any] = dict(extra)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if "section" in f.metadata:
            kwargs[f.name] = _build(f.metadata["section"], key + ".", values)
        elif "map" in f.metadata:
            start = len(key) + 1
            entries = {k[start:]: v for k, v in values.items() if k.startswith(key + ".")}
            kwargs[f.name] = FrozenMap(entries)
        elif "spec" in f.metadata:
            kwargs[f.name] = values[key]
    return cls(**kwargs)


def _from_text(spec: Spec, text: str) -> Any:
    """A value written as text (an environment variable), parsed by the key's type."""
    if text.strip() == "":
        return _UNSET  # VAR= means "not set", as shells and unit files make it easy to write
    if spec.kind == "str":
        return text
    word = text.strip()
    if spec.kind == "bool":
        if word.lower() in _TRUE | _FALSE:
            return word.lower() in _TRUE
        raise ValueError(f"expected a boolean (true/false, 1/0, yes/no, on/off), got {text!r}")
    if spec.kind in ("int", "float"):
        return _number(spec.kind, word)
    if spec.kind in ("names", "ints") and not word.startswith("["):
        items = [item.strip() for item in word.split(",") if item.strip()]
        return [_number("int", i) for i in items] if spec.kind == "ints" else items
    try:
        return json.loads(word)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at character {exc.pos}") from None


def _number(kind: str, word: str) -> int | float:
    if kind == "int":
        if not _INT.fullmatch(word):
            raise ValueError(f"expected an integer, got {word!r}")
        return int(word)
    if not _FLOAT.fullmatch(word):
        raise ValueError(f"expected a number, got {word!r}")
    return float(word)


def _validate(spec: Spec, value: Any) -> Any:
    """The value checked against the key's type, range and own check, normalised."""
    if value is None or (spec.nullable and value == ""):
        if spec.nullable:
            return None
        raise ValueError("must be set (null is not allowed here)")
    value = _typed(spec.kind, value)
    if spec.minimum is not None:
        low = value <= spec.minimum if spec.above else value < spec.minimum
        if low:
            bound = "above" if spec.above else "at least"
            why = f": {spec.why}" if spec.why else ""
            raise ValueError(f"must be {bound} {spec.minimum:g}, got {value:g}{why}")
    return spec.check(value) if spec.check else value


def _typed(kind: str, value: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_describe(value)} (quote it in YAML)")
        if value == "":
            raise ValueError("must not be empty")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe(value)}")
        return value
    if kind == "int":
        if not _is_int(value):
            raise ValueError(f"expected an integer, got {_describe(value)}")
        return value
    if kind == "float":
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number of seconds, got {_describe(value)}")
        return float(value)
    if kind == "mapping":
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {_describe(value)}")
        return dict(value)
    item_ok, item_name = (_is_int, "integers") if kind == "ints" else (_is_str, "strings")
    if not isinstance(value, list | tuple) or not all(item_ok(i) for i in value):
        raise ValueError(f"expected a list of {item_name}, got {_describe(value)}")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    kind = {str: "a string", int: "an integer", float: "a number", list: "a list"}
    for cls, name in kind.items():
        if isinstance(value, cls):
            return f"{value!r} ({name})"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"{value!r} ({type(value).__name__})"
