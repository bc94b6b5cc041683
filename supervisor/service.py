"""`taskexec run`: Redis first (embedded or configured), then the supervisor, Redis last."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import redis

from supervisor.arbiter import Supervisor
from supervisor.embedded import EmbeddedRedis
from supervisor.hostlock import HostIdInUse, HostLock, leftover_consumers
from supervisor.notify import Notifier
from supervisor.signals import defer_stops
from workers.backoff import Backoff
from workers.errors import RedisUnavailable
from workers.exitcodes import ExitCode
from workers.keys import Keys
from workers.logs import setup_logging
from workers.redisconn import TRANSIENT_ERRORS, connect, describe, ping

log = logging.getLogger("taskexec.supervisor")

# The supervisor's loop must keep turning (reaping, watchdog pings) when Redis stops
# answering, so its own commands give up sooner than the workers' blocking reads.
SUPERVISOR_SOCKET_TIMEOUT_S = 2.0


class StoppedWaiting(Exception):
    """A stop signal came while `taskexec run` waited for Redis at start."""


def wait_for_redis(settings: Any, client: redis.Redis,
                   status: Callable[[str], None] | None = None,
                   stops: list[int] | None = None) -> bool:
    """Retry for redis.connect_timeout_s; one warning, not one per attempt. A stop signal
    recorded in `stops` (see defer_stops) ends the wait: StoppedWaiting."""
    deadline = time.monotonic() + settings.redis.connect_timeout_s
    backoff = Backoff(0.1, 2.0)
    warned = False
    while not ping(client):
        if stops:
            raise StoppedWaiting(signal.Signals(stops[0]).name)
        if time.monotonic() >= deadline:
            return False
        if not warned:
            warned = True
            log.warning("Waiting up to %.0f s for %s.", settings.redis.connect_timeout_s,
                        describe(settings))
            if status:
                status(f"Waiting for {describe(settings)}")
        # In slices: a stop signal only sets `stops`, and must not wait out a whole backoff.
        pause_until = time.monotonic() + backoff.next_delay()
        while not stops and time.monotonic() < pause_until:
            time.sleep(min(0.05, max(0.0, pause_until - time.monotonic())))
    return True


class RedisSession:
    """The embedded server (if any) and the supervisor's own named client."""

    def __init__(self, settings: Any, host_id: str,
                 status: Callable[[str], None] | None = None,
                 stops: list[int] | None = None) -> None:
        self.settings = settings
        self.embedded = EmbeddedRedis(settings) if settings.embedded else None
        self.host_id = host_id
        self.status = status
        self.stops = stops
        self.client: redis.Redis | None = None

    def __enter__(self) -> redis.Redis:
        if self.embedded:
            self.embedded.start()
        name = f"taskexec_supervisor_{self.host_id}_{os.getpid()}"
        r = self.settings.redis
        quick = dataclasses.replace(self.settings, redis=dataclasses.replace(
            r, socket_timeout_s=min(r.socket_timeout_s, SUPERVISOR_SOCKET_TIMEOUT_S)))
        self.client = connect(quick, name=name, max_connections=2)
        try:
            answered = wait_for_redis(self.settings, self.client, self.status, self.stops)
        except StoppedWaiting:
            self.close()
            raise
        if not answered:
            self.close()
            raise RedisUnavailable(f"cannot reach {describe(self.settings)} after "
                                   f"{self.settings.redis.connect_timeout_s:.0f} s")
        return self.client

    @property
    def embedded_pid(self) -> int | None:
        return self.embedded.pid if self.embedded else None

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.embedded:
            self.embedded.stop()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(settings: Any, *, host_id: str, burst: bool = False,
          reload: Callable[[], Any] | None = None,
          on_tick: Callable[[Supervisor], None] | None = None) -> int:
    """Run a supervisor until it stops; returns its exit code."""
    setup_logging(settings, "supervisor")
    early = defer_stops()
    notifier = Notifier.from_environ()
    try:
        session = RedisSession(settings, host_id, notifier.status, early)
        with session as client:
            lock = HostLock(client, settings.keys.registry, host_id,
                            ttl_s=settings.heartbeat.timeout_s,
                            renew_every_s=min(settings.heartbeat.interval_s,
                                              settings.heartbeat.timeout_s / 3))
            try:
                lock.claim()
            except HostIdInUse as exc:
                log.error("Not starting: %s.", exc)
                return int(ExitCode.USAGE)
            except TRANSIENT_ERRORS as exc:
                raise RedisUnavailable(f"lost {describe(settings)} while claiming host id "
                                       f"{host_id}: {exc}") from exc
            try:
                sup = Supervisor(settings, host_id=host_id, client=client, burst=burst,
                                 on_tick=on_tick, reload=reload, notifier=notifier,
                                 host_lock=lock, leftovers=_leftovers(client, settings, lock))
                if session.embedded_pid:
                    sup.known_children[session.embedded_pid] = "the embedded redis-server"
                return sup.run(early)
            finally:
                lock.release()
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return int(ExitCode.REDIS_UNAVAILABLE)
    except StoppedWaiting as exc:
        # Asked to stop before anything started: a clean stop, as it would be a moment later.
        log.info("Stopped by %s while waiting for %s; nothing had started.", exc,
                 describe(settings))
        return int(ExitCode.OK)


def _leftovers(client: redis.Redis, settings: Any, lock: HostLock) -> list[Any]:
    keys = Keys.from_settings(settings.keys)
    streams = [s for q in settings.queue.names for s in keys.streams(q, settings.queue.priorities)]
    try:
        found = leftover_consumers(client, lock, streams, keys.group, keys.registry,
                                   settings.heartbeat.timeout_s)
    except TRANSIENT_ERRORS as exc:
        log.warning("Could not look for consumers an earlier supervisor left: %s.", exc)
        return []
    if found:
        log.info("Taking over %d consumer(s) an earlier supervisor of host %s left: %s.",
                 len(found), lock.host_id, ", ".join(p.consumer for _, p in found))
    return found
