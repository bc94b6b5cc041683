"""Redis clients built from the settings: embedded socket, URL or RAGFlow's host:port."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Errors that mean "Redis is away for now": the loops back off and try again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    ConnectionError,
    OSError,
)


def embedded_socket(settings: Any) -> Path:
    """The unix socket of the embedded redis-server for these settings."""
    return Path(settings.redis.embedded.dir).resolve() / "redis.sock"


def describe(settings: Any) -> str:
    """The Redis address in words, without secrets, for error messages."""
    r = settings.redis
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


def _keepalive_options() -> dict[int, int]:
    opts = {}
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            opts[getattr(socket, name)] = value
    return opts


def connection_kwargs(settings: Any, *, name: str, blocking_read: bool = False) -> dict[str, Any]:
    """Keyword arguments for a redis-py ConnectionPool of this process."""
    r = settings.redis
    # The blocking read waits up to queue.block_s; its socket must outlast that.
    timeout = float(r.socket_timeout_s)
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 5.0),
        "client_name": name,
        "health_check_interval": 0 if blocking_read else 30,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.embedded:
        kwargs.update(connection_class=redis.UnixDomainSocketConnection,
                      path=str(embedded_socket(settings)))
        return kwargs
    if r.url:
        parsed = redis.connection.parse_url(r.url)
        kwargs.update(parsed)
        kwargs.setdefault("db", r.db)
    else:
        host, port = r.address
        kwargs.update(host=host, port=port, db=r.db)
    if r.username:
        kwargs["username"] = r.username
    if r.password:
        kwargs["password"] = r.password
    if kwargs.get("connection_class") is not redis.UnixDomainSocketConnection:
        kwargs.update(socket_keepalive=True, socket_keepalive_options=_keepalive_options())
    return kwargs


def connect(settings: Any, *, name: str, max_connections: int | None = None,
            blocking_read: bool = False) -> redis.Redis:
    """A client whose connections are named `name` in CLIENT LIST.

    The pool blocks (up to the socket timeout) instead of failing when every connection is in
    use, so a burst of threads waits its turn within the connection budget.
    """
    kwargs = connection_kwargs(settings, name=name, blocking_read=blocking_read)
    pool = redis.BlockingConnectionPool(
        max_connections=max_connections or settings.redis.max_connections,
        timeout=float(settings.redis.socket_timeout_s),
        **kwargs,
    )
    pool.pid = os.getpid()
    return redis.Redis(connection_pool=pool)


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except TRANSIENT_ERRORS:
        return False
    except redis.ResponseError:
        return False
