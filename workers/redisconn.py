"""Redis clients built from the settings: embedded socket, URL, RAGFlow's host:port or Sentinel.

Every client has a bounded pool that waits for a free connection instead of failing, names its
connections (CLIENT SETNAME), keeps TCP connections alive and health-checks idle ones. A worker's
connections are split within `redis.max_connections` (see connect_worker).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from workers.config_schema import split_host
from workers.redispool import CONNECTION_CLASSES, BlockingSentinelPool, WatchedSentinel

# Errors that mean "Redis is away for now": the loops back off and try again. READONLY (a
# demoted primary) and MASTERDOWN (a replica that lost its primary) are outages like a dropped
# connection: the data is still there and writes come back once a primary answers.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    OSError,
)

# The same conditions when a script reports them as text (an error caught by pcall in Lua), or
# a reply redis-py does not know (UNBLOCKED).
_TRANSIENT_REPLIES: dict[str, type[redis.RedisError]] = {
    "READONLY": redis.exceptions.ReadOnlyError,
    "LOADING": redis.exceptions.BusyLoadingError,
    "MASTERDOWN": redis.exceptions.MasterDownError,
    "TRYAGAIN": redis.exceptions.TryAgainError,
    # A blocking read cut short because the server changed role (primary -> replica).
    "UNBLOCKED": redis.ConnectionError,
}

# The error code of such a text: its first word, or (Redis 6 wraps errors caught by pcall:
# '=[C]: -1: -READONLY You can't ...') the word after ' -'.
_ERROR_CODE = re.compile(r"(?:^|\s-)([A-Z]+) ")

# Idle pool connections are checked with a PING before use after this long; a connection the
# server closed is noticed earlier still, when the pool hands it out (redis-py looks for EOF).
HEALTH_CHECK_INTERVAL_S = 30
# Sentinels answer from memory; one that does not answer quickly is skipped for the next.
SENTINEL_TIMEOUT_S = 2.0


def embedded_socket(settings: Any) -> Path:
    """The unix socket of the embedded redis-server for these settings."""
    return Path(settings.redis.embedded.dir).resolve() / "redis.sock"


def describe(settings: Any) -> str:
    """The Redis address in words, without secrets, for error messages."""
    r = settings.redis
    if r.sentinel:
        return f"redis master {r.sentinel['master']} via sentinels {', '.join(r.sentinel['nodes'])}"
    if settings.embedded:
        return f"embedded redis at unix://{embedded_socket(settings)}"
    if r.url:
        return redis.connection.parse_url(r.url).get("path") or _strip_password(r.url)
    return f"redis at {r.host}"


def _strip_password(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url


def raise_if_transient(text: str, client: redis.Redis | None = None) -> None:
    """Raise what a plain command would have raised, when a script's error text means the
    server cannot serve for now; otherwise return.

    A READONLY seen this way also drops the pool's idle connections, as a READONLY reply to a
    plain command does on a Sentinel connection: the next connection asks again where the
    primary is, instead of reusing one that still points at the demoted server.
    """
    found = _ERROR_CODE.search(text)
    cls = _TRANSIENT_REPLIES.get(found.group(1)) if found else None
    if cls is None:
        return
    if cls is redis.exceptions.ReadOnlyError and client is not None:
        client.connection_pool.disconnect(inuse_connections=False)
    raise cls(text)


def _keepalive_options() -> dict[int, int]:
    # Idle 30 s, then 3 probes 10 s apart: a connection a middlebox dropped without a word is
    # closed within about a minute, long before the heartbeat timeout of a whole host.
    opts = {}
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            opts[getattr(socket, name)] = value
    return opts


def connection_kwargs(settings: Any, *, name: str, blocking_read: bool = False) -> dict[str, Any]:
    """Keyword arguments for a redis-py ConnectionPool of this process."""
    r = settings.redis
    # The blocking read waits up to queue.block_s; its socket must outlast that (config checks).
    timeout = float(r.socket_timeout_s)
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 5.0),
        "client_name": name,
        # The blocking read is busy every queue.block_s; a PING before it would only add a trip.
        "health_check_interval": 0 if blocking_read else HEALTH_CHECK_INTERVAL_S,
        # No blind retries: a command that may have run is not sent twice; the loops retry
        # whole operations, with backoff, where that is safe.
        "retry": Retry(NoBackoff(), 0),
    }
    if r.sentinel:
        kwargs["db"] = r.db
    elif settings.embedded:
        kwargs.update(connection_class=redis.UnixDomainSocketConnection,
                      path=str(embedded_socket(settings)))
    elif r.url:
        kwargs.update(redis.connection.parse_url(r.url))
        kwargs.setdefault("db", r.db)
    else:
        host, port = r.address
        kwargs.update(host=host, port=port, db=r.db)
    if r.username:
        kwargs["username"] = r.username
    if r.password:
        kwargs["password"] = r.password
    if r.sentinel:
        return kwargs  # BlockingSentinelPool brings its own connection class
    cls = kwargs.get("connection_class", redis.Connection)
    kwargs["connection_class"] = CONNECTION_CLASSES.get(cls, cls)
    if cls is not redis.UnixDomainSocketConnection:
        kwargs.update(socket_keepalive=True, socket_keepalive_options=_keepalive_options())
    return kwargs


def sentinel_manager(settings: Any) -> WatchedSentinel | None:
    """The sentinels of `redis.sentinel`, or None without Sentinel; one per process is enough."""
    conf = settings.redis.sentinel
    if not conf:
        return None
    timeout = min(float(settings.redis.socket_timeout_s), SENTINEL_TIMEOUT_S)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                       "retry": Retry(NoBackoff(), 0)}
    if conf.get("password"):
        sentinel_kwargs["password"] = conf["password"]
    return WatchedSentinel([split_host(n) for n in conf["nodes"]],
                           sentinel_kwargs=sentinel_kwargs)


def connect(settings: Any, *, name: str, max_connections: int | None = None,
            blocking_read: bool = False, sentinel: WatchedSentinel | None = None) -> redis.Redis:
    """A client whose connections are named `name` in CLIENT LIST.

    The pool blocks (up to the socket timeout) instead of failing when every connection is in
    use, so a burst of threads waits its turn within the connection budget. With Sentinel, every
    new connection goes to the primary the sentinels name (`sentinel` shares one set of sentinel
    connections between the clients of a process).
    """
    kwargs = connection_kwargs(settings, name=name, blocking_read=blocking_read)
    size = max_connections or settings.redis.max_connections
    wait_s = float(settings.redis.socket_timeout_s)
    if settings.redis.sentinel:
        manager = sentinel or sentinel_manager(settings)
        sentinel_pool = BlockingSentinelPool(
            settings.redis.sentinel["master"], manager, max_connections=size, timeout=wait_s,
            **kwargs)
        manager.watch(sentinel_pool)
        pool: redis.ConnectionPool = sentinel_pool
    else:
        pool = redis.BlockingConnectionPool(max_connections=size, timeout=wait_s, **kwargs)
    pool.pid = os.getpid()
    return redis.Redis(connection_pool=pool)


@dataclass
class WorkerClients:
    """A worker's clients, together within `redis.max_connections` connections."""

    client: redis.Redis  # the consume loop, the task threads and their final statuses
    blocking: redis.Redis  # the blocking read alone, so it never holds up the rest
    heartbeat: redis.Redis | None  # its own connection, or None to share `client`


def split_budget(total: int) -> tuple[int, bool]:
    """(connections of the shared pool, whether the heartbeat gets its own) for a budget.

    One connection always goes to the blocking read. The heartbeat gets its own from 3 on, so
    busy task threads never delay a beat; with 2 it waits its turn in the shared pool.
    """
    if total < 2:
        raise ValueError("redis.max_connections must be at least 2: the blocking read needs its "
                         "own connection")
    own_beat = total >= 3
    return total - 1 - int(own_beat), own_beat


def connect_worker(settings: Any, *, name: str) -> WorkerClients:
    """The clients of one worker process, never more than `redis.max_connections` connections."""
    shared, own_beat = split_budget(settings.redis.max_connections)
    manager = sentinel_manager(settings)
    return WorkerClients(
        client=connect(settings, name=name, max_connections=shared, sentinel=manager),
        blocking=connect(settings, name=name, max_connections=1, blocking_read=True,
                         sentinel=manager),
        heartbeat=connect(settings, name=f"{name}_heartbeat", max_connections=1,
                          sentinel=manager) if own_beat else None,
    )


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except TRANSIENT_ERRORS:
        return False
    except redis.ResponseError:
        return False
