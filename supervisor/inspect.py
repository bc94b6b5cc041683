"""What `taskexec executors`, `queues` and `status` read from Redis about the cluster."""

from __future__ import annotations

from typing import Any

import orjson
import redis

from supervisor.burst import _name


def server_time(client: redis.Redis) -> float:
    sec, usec = client.time()
    return sec + usec / 1e6


def executors(c: Any) -> tuple[list[dict[str, Any]], str]:
    """Each registered consumer with its last heartbeat, `alive` and `heartbeat_age_s`."""
    r = c.redis
    registry = c.keys.registry
    try:
        names = sorted(_name(n) for n in r.smembers(registry))
    except redis.ResponseError as exc:
        return [], f"{registry} is not a set ({exc}); executors cannot be listed"
    now = server_time(r)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.zrange(name, -1, -1, withscores=True)
    rows = []
    for name, last in zip(names, pipe.execute(raise_on_error=False), strict=True):
        row: dict[str, Any] = {"name": name}
        if isinstance(last, Exception) or not last:
            row.update(alive=False, heartbeat_age_s=None,
                       error=str(last) if isinstance(last, Exception) else "no heartbeat")
        else:
            body, score = last[0]
            try:
                row.update(orjson.loads(body))
            except orjson.JSONDecodeError:
                row["error"] = "heartbeat is not JSON"
            age = max(0.0, now - float(score))
            row.update(name=name, heartbeat_age_s=round(age, 3),
                       alive=age < c.settings.heartbeat.timeout_s)
        row["busy_threads"] = f"{row.get('busy', '-')}/{row.get('threads', '-')}"
        row["rss_mb"] = round(row["rss_bytes"] / 2**20, 1) if row.get("rss_bytes") else None
        cur = row.get("current") or {}
        row["current_text"] = ", ".join(sorted(cur))[:60] if cur else ""
        rows.append(row)
    return rows, ""


def _stream_row(r: redis.Redis, stream: str, group: str, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"stream": stream, "length": 0, "lag": 0, "pending": 0,
                           "consumers": 0, "oldest_pending_s": None}
    try:
        info = r.xinfo_stream(stream)
        groups = r.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" not in str(exc).lower():
            row["error"] = str(exc)
        return row
    row["length"] = int(info["length"])
    g = next((g for g in groups if _name(g["name"]) == group), None)
    if g is None:
        row["lag"] = row["length"]
        return row
    row["pending"] = int(g["pending"])
    row["consumers"] = int(g["consumers"])
    lag = g.get("lag")
    if lag is None:  # Redis before 7, or a lag Redis cannot tell: count what is undelivered
        last = _name(g["last-delivered-id"])
        lag = len(r.xrange(stream, f"({last}" if last != "0-0" else "-", "+", count=100000))
    row["lag"] = int(lag)
    if row["pending"]:
        oldest = r.xpending_range(stream, group, "-", "+", 1)
        if oldest:
            ms = int(_name(oldest[0]["message_id"]).split("-")[0])
            row["oldest_pending_s"] = round(max(0.0, now - ms / 1000), 1)
    return row


def queues(c: Any, names: list[str] | None) -> list[dict[str, Any]]:
    r = c.redis
    now = server_time(r)
    rows = []
    for q in names or c.settings.queue.names:
        dead = c.keys.dead(q)
        try:
            dead_count = r.xlen(dead)
        except redis.ResponseError:
            dead_count = None
        for p in sorted(c.settings.queue.priorities, reverse=True):
            row = _stream_row(r, c.keys.stream(q, p), c.keys.group, now)
            row.update(queue=q, priority=p, dead=dead_count)
            rows.append(row)
    return rows


def queue_has_live_consumer(c: Any, queue: str) -> bool:
    """Whether any live executor's heartbeat is recent (executors consume every queue they
    were started with; the heartbeat says which consumer it is, not its queues)."""
    rows, _ = executors(c)
    return any(row.get("alive") for row in rows)
