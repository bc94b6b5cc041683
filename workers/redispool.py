"""Connection and pool classes: connections that survive idle closes, a blocking Sentinel pool."""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection


class _HealthChecked:
    """A connection whose health check replaces a connection closed while it was idle.

    redis-py's own check gives up when its PING fails and the retry policy allows no retries
    (ours allows none, because retrying a command that may have run is not safe). A PING is
    always safe to repeat, so a PING that finds the connection closed (by the server's
    `timeout`, a proxy or a load balancer) is sent once more on a fresh connection. A PING that
    times out is not repeated: a hung server must be noticed within one socket timeout.
    """

    health_check_interval: float
    next_health_check: float

    def check_health(self) -> None:
        if not self.health_check_interval or time.monotonic() <= self.next_health_check:
            return
        try:
            self._send_ping()  # type: ignore[attr-defined]
        except (redis.ConnectionError, ConnectionError):
            self.disconnect()  # type: ignore[attr-defined]
            self._send_ping()  # type: ignore[attr-defined]


class Connection(_HealthChecked, redis.Connection):
    pass


class SSLConnection(_HealthChecked, redis.SSLConnection):
    pass


class UnixConnection(_HealthChecked, redis.UnixDomainSocketConnection):
    pass


class SentinelConnection(_HealthChecked, SentinelManagedConnection):
    """Asks the sentinels for the primary on every (re)connect; READONLY drops the connection."""


# redis-py's classes (as parse_url names them) and ours.
CONNECTION_CLASSES: dict[type, type] = {
    redis.Connection: Connection,
    redis.SSLConnection: SSLConnection,
    redis.UnixDomainSocketConnection: UnixConnection,
}


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool, but bounded and waiting for a free connection.

    SentinelConnectionPool derives from the plain pool, which raises when every connection is in
    use; this one takes BlockingConnectionPool's get/release (cooperative inheritance), so a
    burst of threads waits its turn within the connection budget. A connection to a former
    primary is not given back to the pool (owns_connection), so the pool moves to the new one.
    """

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        kwargs.setdefault("connection_class", SentinelConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)
