"""The configuration schema: the frozen settings sections, their defaults and per-key checks."""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "******"
DEFAULT_REDIS_PORT = 6379


class FrozenMap(Mapping[str, Any]):
    """A read-only mapping that, unlike MappingProxyType, can be pickled and hashed."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


BUILTIN_HANDLERS: Mapping[str, str] = FrozenMap(
    {
        "noop": "workers.handlers.builtin:noop",
        "sleep": "workers.handlers.builtin:sleep",
        "fail": "workers.handlers.builtin:fail",
        "chunk": "workers.handlers.chunk:run",
    }
)

# Sections of RAGFlow's service_conf.yaml that taskexec accepts and ignores, so that it can be
# pointed at a RAGFlow conf folder as it is.
RAGFLOW_SECTIONS = frozenset(
    {
        "ragflow", "mysql", "postgres", "minio", "es", "os", "infinity", "s3", "oss", "azure",
        "opendal", "user_default_llm", "oauth", "authentication", "permission", "smtp",
    }
)  # fmt: skip

_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_HANDLER_NAME = re.compile(r"[A-Za-z0-9_-]+")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_HANDLER_TARGET = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
_HOST = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\](:(?P<p6>\d+))?|(?P<name>[^:\s\[\]/@]+)(:(?P<port>\d+))?"
)
_SECRET_QUERY = re.compile(r"pass|secret|token|credential|auth", re.IGNORECASE)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Spec:
    """How one key is typed and checked.

    kind is one of str, int, float, bool, names (list of strings), ints (list of integers),
    mapping; minimum is inclusive unless above is set; why explains a range error.
    """

    kind: str
    nullable: bool = False
    minimum: float | None = None
    above: bool = False
    check: Callable[[Any], Any] | None = None
    why: str = ""


def _key(default: Any, kind: str, **spec: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(kind, **spec)})


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": cls})


def check_host(value: str) -> str:
    """Normalise RAGFlow's 'host:port' (port optional) to 'host:port'."""
    match = _HOST.fullmatch(value)
    if not match:
        raise ValueError(f"expected 'host:port' (port optional), got {value!r}")
    port = int(match["p6"] or match["port"] or DEFAULT_REDIS_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    host = f"[{match['v6']}]" if match["v6"] else match["name"]
    return f"{host}:{port}"


def split_host(value: str) -> tuple[str, int]:
    """Split a normalised 'host:port' into the host (without IPv6 brackets) and the port."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"the scheme must be redis://, rediss:// or unix://, got {value!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL needs the socket path, e.g. unix:///run/redis.sock")
    return value


def _check_level(value: str) -> str:
    if value.upper() not in LEVELS:
        raise ValueError(f"must be one of {', '.join(LEVELS)}, got {value!r}")
    return value.upper()


def _check_format(value: str) -> str:
    if value not in ("text", "json"):
        raise ValueError(f"must be text or json, got {value!r}")
    return value


def _check_names(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("needs at least one queue name")
    for name in value:
        if not _NAME.fullmatch(name):
            raise ValueError(f"queue name {name!r} may use only letters, digits and _ . : -")
    # A queue named twice (e.g. by repeating --queue) is still one queue.
    return tuple(dict.fromkeys(value))


def _check_priorities(value: tuple[int, ...]) -> tuple[int, ...]:
    if not value:
        raise ValueError("needs at least one priority")
    if any(p < 0 for p in value):
        raise ValueError(f"priorities must be 0 or more, got {list(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"priorities must be distinct, got {list(value)}")
    # Stored high to low because the consumer reads them in this order.
    return tuple(sorted(value, reverse=True))


def _check_sentinel(value: Mapping[str, Any]) -> Mapping[str, Any]:
    unknown = set(value) - {"master", "nodes", "password"}
    if unknown:
        raise ValueError(f"unknown sentinel field(s) {', '.join(sorted(map(str, unknown)))}")
    master, nodes, password = value.get("master"), value.get("nodes"), value.get("password")
    if not isinstance(master, str) or not master:
        raise ValueError("sentinel needs 'master', the name of the monitored master")
    if (
        not isinstance(nodes, list | tuple)
        or not nodes
        or not all(isinstance(n, str) for n in nodes)
    ):
        raise ValueError("sentinel needs 'nodes', a non-empty list of 'host:port' strings")
    if password is not None and not isinstance(password, str):
        raise ValueError("sentinel 'password' must be a string")
    return FrozenMap(
        {
            "master": master,
            "nodes": tuple(check_host(n) for n in nodes),
            "password": password or None,
        }
    )


def check_handler(value: str) -> str:
    if not _HANDLER_TARGET.fullmatch(value):
        raise ValueError(f"expected 'package.module:function', got {value!r}")
    return value


def check_handler_name(name: str) -> str:
    if not _HANDLER_NAME.fullmatch(name):
        raise ValueError("handler names may use only letters, digits, _ and -")
    return name


def _template(*placeholders: str) -> Callable[[str], str]:
    wanted = set(placeholders)

    def check(value: str) -> str:
        try:
            found = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"malformed template {value!r}: {exc}") from None
        if found != wanted:
            need = ", ".join(f"{{{p}}}" for p in sorted(wanted)) or "no placeholders"
            raise ValueError(f"template {value!r} must contain {need} and nothing else in braces")
        return value

    return check


@dataclass(frozen=True)
class EmbeddedRedisSettings:
    dir: str = _key("./data", "str")
    binary: str | None = _key(None, "str", nullable=True)


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = _key(None, "str", nullable=True, check=check_url)
    host: str | None = _key(None, "str", nullable=True, check=check_host)
    db: int = _key(0, "int", minimum=0)
    username: str | None = _key(None, "str", nullable=True)
    password: str | None = _key(None, "str", nullable=True)
    socket_timeout_s: float = _key(10.0, "float", minimum=0, above=True)
    connect_timeout_s: float = _key(30.0, "float", minimum=0, above=True)
    max_connections: int | None = _key(
        None, "int", nullable=True, minimum=2, why="a blocking read needs its own connection"
    )
    embedded: EmbeddedRedisSettings = _section(EmbeddedRedisSettings)
    sentinel: Mapping[str, Any] | None = _key(None, "mapping", nullable=True, check=_check_sentinel)

    @property
    def address(self) -> tuple[str, int] | None:
        """redis.host as (host, port), or None when it is not set."""
        return split_host(self.host) if self.host else None


@dataclass(frozen=True)
class QueueSettings:
    names: tuple[str, ...] = _key(("common",), "names", check=_check_names)
    priorities: tuple[int, ...] = _key((1, 0), "ints", check=_check_priorities)
    block_s: float = _key(
        1.0, "float", minimum=0, above=True, why="0 would mean an endless blocking read"
    )
    max_attempts: int = _key(3, "int", minimum=1)
    max_message_bytes: int = _key(1048576, "int", minimum=1)


@dataclass(frozen=True)
class ExecutorSettings:
    procs: int = _key(1, "int", minimum=1)
    threads: int = _key(5, "int", minimum=1)
    graceful_timeout_s: float = _key(30.0, "float", minimum=0, above=True)
    max_tasks_per_worker: int = _key(0, "int", minimum=0)
    task_time_limit_s: float = _key(0.0, "float", minimum=0)


@dataclass(frozen=True)
class SupervisorSettings:
    worker_timeout_s: float = _key(300.0, "float", minimum=0, above=True)
    restart_backoff_max_s: float = _key(30.0, "float", minimum=0, above=True)
    boot_failures_max: int = _key(5, "int", minimum=1)


@dataclass(frozen=True)
class HeartbeatSettings:
    interval_s: float = _key(10.0, "float", minimum=0, above=True)
    timeout_s: float = _key(120.0, "float", minimum=0, above=True)
    retention_s: float = _key(1800.0, "float", minimum=0, above=True)


@dataclass(frozen=True)
class CleanupSettings:
    interval_s: float = _key(30.0, "float", minimum=0, above=True)
    lock_ttl_s: float = _key(60.0, "float", minimum=0, above=True)


@dataclass(frozen=True)
class StoreSettings:
    max_log_chars: int = _key(3000, "int", minimum=1)
    cancel_ttl_s: float = _key(86400.0, "float", minimum=0, above=True)
    result_ttl_s: float = _key(604800.0, "float", minimum=0, above=True)


@dataclass(frozen=True)
class MemorySettings:
    snapshot_dir: str = _key("./logs", "str")
    trace_on_start: bool = _key(False, "bool")
    max_rss_mb: int = _key(0, "int", minimum=0)


@dataclass(frozen=True)
class LoggingSettings:
    level: str = _key("INFO", "str", check=_check_level)
    format: str = _key("text", "str", check=_check_format)
    dir: str | None = _key(None, "str", nullable=True)


@dataclass(frozen=True)
class KeysSettings:
    queue_stream: str = _key("te.{priority}.{queue}", "str", check=_template("priority", "queue"))
    dead_stream: str = _key("te.dead.{queue}", "str", check=_template("queue"))
    task: str = _key("te:task:{id}", "str", check=_template("id"))
    cancel: str = _key("{id}-cancel", "str", check=_template("id"))
    group: str = _key("rag_flow_svr_task_broker", "str", check=_template())
    registry: str = _key("TASKEXE", "str", check=_template())
    cleanup_lock: str = _key("clean_task_executor", "str", check=_template())
    delayed: str = _key("te:delayed", "str", check=_template())


HANDLER_SPEC = Spec("str", check=check_handler)


@dataclass(frozen=True)
class Settings:
    """The effective configuration, built once by workers.config.load_settings."""

    redis: RedisSettings = _section(RedisSettings)
    queue: QueueSettings = _section(QueueSettings)
    executor: ExecutorSettings = _section(ExecutorSettings)
    supervisor: SupervisorSettings = _section(SupervisorSettings)
    heartbeat: HeartbeatSettings = _section(HeartbeatSettings)
    cleanup: CleanupSettings = _section(CleanupSettings)
    store: StoreSettings = _section(StoreSettings)
    memory: MemorySettings = _section(MemorySettings)
    logging: LoggingSettings = _section(LoggingSettings)
    keys: KeysSettings = _section(KeysSettings)
    handlers: Mapping[str, str] = field(default=BUILTIN_HANDLERS, metadata={"map": HANDLER_SPEC})
    conf_dir: Path | None = None

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured, so `taskexec run` starts its own."""
        return not self.redis.url and not self.redis.host and self.redis.sentinel is None

    def to_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """The settings as nested plain lists and dicts, secrets masked unless told otherwise."""
        data = _plain(self)
        if mask_secrets:
            redis = data["redis"]
            if redis["password"]:
                redis["password"] = MASK
            if redis["url"]:
                redis["url"] = mask_url(redis["url"])
            if redis["sentinel"] and redis["sentinel"]["password"]:
                redis["sentinel"]["password"] = MASK
        return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.metadata  # conf_dir is where the settings came from, not a setting
        }
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or the query) replaced by the mask."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, hostport = netloc.rpartition("@")
        name, colon, _ = user.partition(":")
        if colon:
            netloc = f"{name}:{MASK}@{hostport}"
    pairs = []
    for pair in parts.query.split("&") if parts.query else ():
        name = pair.partition("=")[0]
        pairs.append(f"{name}={MASK}" if _SECRET_QUERY.search(name) else pair)
    masked = urlunsplit(parts._replace(netloc=netloc, query="&".join(pairs)))
    prefix = parts.scheme + "://"
    if url.startswith(prefix) and not masked.startswith(prefix):
        masked = prefix + masked[len(parts.scheme) + 1:].lstrip("/")  # unix:///p, not unix:/p
        if not parts.netloc:
            masked = prefix + "/" + masked[len(prefix):]
    return masked


@dataclass(frozen=True)
class Schema:
    """Every key by dotted name, the section paths, and the free-form mapping sections."""

    specs: Mapping[str, Spec]
    defaults: Mapping[str, Any]
    sections: frozenset[str]
    maps: Mapping[str, Spec]

    def lookup(self, key: str) -> Spec | str | None:
        """The key's Spec, "section" when the key names a section, or None when it is unknown."""
        if key in self.specs:
            return self.specs[key]
        if key in self.sections or key in self.maps:
            return "section"
        for prefix, spec in self.maps.items():
            if key.startswith(prefix + ".") and len(key) > len(prefix) + 1:
                return spec
        return None


def schema() -> Schema:
    """The schema, derived from the settings dataclasses so defaults live in one place."""
    specs: dict[str, Spec] = {}
    defaults: dict[str, Any] = {}
    sections: set[str] = set()
    maps: dict[str, Spec] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = prefix + f.name
            if "section" in f.metadata:
                sections.add(key)
                walk(f.metadata["section"], key + ".")
            elif "map" in f.metadata:
                maps[key] = f.metadata["map"]
                defaults.update({f"{key}.{n}": v for n, v in f.default.items()})
            elif "spec" in f.metadata:
                specs[key] = f.metadata["spec"]
                defaults[key] = f.default

    walk(Settings, "")
    return Schema(MappingProxyType(specs), MappingProxyType(defaults), frozenset(sections), maps)
