"""Burst mode's question: is every consumed queue empty with nothing in flight?"""

from __future__ import annotations

from typing import Any

import redis

from workers.keys import Keys


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
