"""Burst mode's question: is every consumed queue empty with nothing in flight?"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from workers.keys import Keys
from workers.redisconn import TRANSIENT_ERRORS

log = logging.getLogger("taskexec.supervisor")

CHECK_EVERY_S = 0.2


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_drained(client: redis.Redis, stream: str, group: str) -> bool:
    """No entry left undelivered to the group and none pending (works on Redis 6.2 and 7)."""
    try:
        info = client.xinfo_stream(stream)
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return True  # no stream: nothing to do
    g = next((g for g in groups if _name(g["name"]) == group), None)
    if g is None:
        return info["length"] == 0
    if int(g["pending"]):
        return False
    return _name(g["last-delivered-id"]) == _name(info["last-generated-id"]) or info["length"] == 0


def drained(client: redis.Redis, settings: Any, keys: Keys) -> bool:
    for q in settings.queue.names:
        for stream in keys.streams(q, settings.queue.priorities):
            if not stream_drained(client, stream, keys.group):
                return False
    return True


class BurstWatch:
    """Asked by the supervisor's loop; looks at Redis at most every CHECK_EVERY_S."""

    def __init__(self, client: redis.Redis, settings: Any) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys.from_settings(settings.keys)
        self._next = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def drained(self) -> bool:
        self._next = time.monotonic() + CHECK_EVERY_S
        try:
            return drained(self.client, self.settings, self.keys)
        except TRANSIENT_ERRORS as exc:
            log.debug("Burst check failed: %s.", exc)
            return False
