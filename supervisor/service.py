"""`taskexec run`: Redis first (embedded or configured), then the supervisor, Redis last."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from supervisor.arbiter import Supervisor
from supervisor.embedded import EmbeddedRedis
from workers.backoff import Backoff
from workers.errors import RedisUnavailable
from workers.exitcodes import ExitCode
from workers.logs import setup_logging
from workers.redisconn import connect, describe, ping

log = logging.getLogger("taskexec.supervisor")


def wait_for_redis(settings: Any, client: redis.Redis,
                   status: Callable[[str], None] | None = None) -> bool:
    """Retry for redis.connect_timeout_s; one warning, not one per attempt."""
    deadline = time.monotonic() + settings.redis.connect_timeout_s
    backoff = Backoff(0.1, 2.0)
    warned = False
    while not ping(client):
        if time.monotonic() >= deadline:
            return False
        if not warned:
            warned = True
            log.warning("Waiting up to %.0f s for %s.", settings.redis.connect_timeout_s,
                        describe(settings))
            if status:
                status(f"STATUS=Waiting for {describe(settings)}")
        time.sleep(backoff.next_delay())
    return True


class RedisSession:
    """The embedded server (if any) and the supervisor's own named client."""

    def __init__(self, settings: Any, host_id: str) -> None:
        self.settings = settings
        self.embedded = EmbeddedRedis(settings) if settings.embedded else None
        self.host_id = host_id
        self.client: redis.Redis | None = None

    def __enter__(self) -> redis.Redis:
        if self.embedded:
            self.embedded.start()
        name = f"taskexec_supervisor_{self.host_id}_{os.getpid()}"
        self.client = connect(self.settings, name=name, max_connections=2)
        if not wait_for_redis(self.settings, self.client):
            self.close()
            raise RedisUnavailable(f"cannot reach {describe(self.settings)} after "
                                   f"{self.settings.redis.connect_timeout_s:.0f} s")
        return self.client

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
    try:
        with RedisSession(settings, host_id) as client:
            sup = Supervisor(settings, host_id=host_id, client=client, burst=burst,
                             on_tick=on_tick, reload=reload)
            return sup.run()
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return int(ExitCode.REDIS_UNAVAILABLE)
