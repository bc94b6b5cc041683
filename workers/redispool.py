"""Connection and pool classes: connections that survive idle closes, a blocking Sentinel pool."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import redis
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

log = logging.getLogger("taskexec.redis")

# How often the sentinels are asked where the primary is, between reconnects.
PRIMARY_CHECK_S = 2.0


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

    def check_primary(self) -> tuple[Any, Any] | None:
        """Ask the sentinels where the primary is; after a switch, idle connections to the old
        one are closed at once and busy ones when they come back (owns_connection).

        Returns (old address, new address) when it moved, else None.
        """
        before = self.master_address
        after = self.get_master_address()
        return (before, after) if before is not None and after != before else None


class WatchedSentinel(Sentinel):
    """Sentinels whose pools check the primary every PRIMARY_CHECK_S on a thread of their own.

    A pool otherwise asks only when it opens a connection, and a primary demoted by a manual
    failover keeps its clients (and takes their writes) until the sentinels reconfigure it,
    which can take 10 s. The thread starts with the first pool, in the process that uses it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pools: weakref.WeakSet[BlockingSentinelPool] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)
        except MasterNotFoundError:
            # redis-py's message carries the repr of every sentinel client; name them instead.
            asked = ", ".join(f"{s.connection_pool.connection_kwargs.get('host')}:"
                              f"{s.connection_pool.connection_kwargs.get('port')}"
                              for s in self.sentinels)
            raise MasterNotFoundError(f"no sentinel names a healthy primary {service_name!r} "
                                      f"(asked {asked})") from None

    def watch(self, pool: BlockingSentinelPool) -> None:
        with self._lock:
            self._pools.add(pool)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sentinel-watch",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(PRIMARY_CHECK_S)  # a fixed pace; the thread lives as long as the process
            moves = set()
            for pool in list(self._pools):
                try:
                    moves.add((pool.service_name, pool.check_primary()))
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass  # no sentinel answers: the connections' own errors tell the loops
            for name, move in moves:
                if move:
                    log.info("Redis primary %s moved from %s:%s to %s:%s; connections follow.",
                             name, *move[0], *move[1])
