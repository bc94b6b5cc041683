"""What `taskexec executors`, `queues` and `status` read from Redis about the cluster.

Liveness is judged as the takeover judges it: a consumer is alive while its last heartbeat,
scored with Redis server time, is younger than `heartbeat.timeout_s`.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis

from supervisor.burst import _name

# Entries of a stream after the group's last delivered id, up to an end id ('+' or '(id'),
# counted on the server in batches so a long backlog is never sent to the client.
# KEYS: stream. ARGV: group, end, most to count. Returns the count.
COUNT_UNDELIVERED = """
local last = '-'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
for i, g in ipairs(groups) do
  local name, delivered
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
  end
  if name == ARGV[1] and delivered ~= '0-0' then last = '(' .. delivered end
end
local n, cap = 0, tonumber(ARGV[3])
while n < cap do
  local batch = redis.call('XRANGE', KEYS[1], last, ARGV[2], 'COUNT', 1000)
  n = n + #batch
  if #batch < 1000 then break end
  last = '(' .. batch[#batch][1]
end
return n
"""
COUNT_CAP = 1_000_000


def server_time(client: redis.Redis) -> float:
    sec, usec = client.time()
    return sec + usec / 1e6


def registry_problem(c: Any) -> str:
    """Why the registry cannot be read, in words ('' when it can)."""
    kind = _name(c.redis.type(c.keys.registry))
    if kind in ("set", "none"):
        return ""
    return (f"{c.keys.registry} is a {kind}, expected a set of consumer names; executors cannot "
            f"be listed until it is deleted (workers register again within one heartbeat)")


def executors(c: Any) -> tuple[list[dict[str, Any]], str]:
    """Each registered consumer with its last heartbeat, `alive` and `heartbeat_age_s`."""
    r = c.redis
    try:
        names = sorted(_name(n) for n in r.smembers(c.keys.registry))
    except redis.ResponseError as exc:
        return [], registry_problem(c) or f"{c.keys.registry} cannot be read: {exc}"
    now = server_time(r)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.zrange(name, -1, -1, withscores=True)
    rows = [_executor_row(c, name, last, now)
            for name, last in zip(names, pipe.execute(raise_on_error=False), strict=True)]
    _add_progress(c, rows)
    return rows, ""


def _executor_row(c: Any, name: str, last: Any, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    if isinstance(last, Exception) or not last:
        row.update(alive=False, heartbeat_age_s=None,
                   error=f"heartbeat key is not a zset: {last}" if isinstance(last, Exception)
                   else "no heartbeat")
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
    return row


def _add_progress(c: Any, rows: list[dict[str, Any]]) -> None:
    """Fill in each current task's progress from its record (the heartbeat has no room for it)."""
    tasks = [(row["current"][tid], tid) for row in rows if isinstance(row.get("current"), dict)
             for tid in row["current"]]
    if tasks:
        pipe = c.redis.pipeline(transaction=False)
        for _, tid in tasks:
            pipe.hget(c.keys.task_record(tid), "progress")
        for (cur, _), value in zip(tasks, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(cur, dict) and isinstance(value, bytes) and value:
                cur["progress"] = float(value)
    for row in rows:
        row["current_text"] = _current_text(row.get("current"))


def _current_text(current: Any) -> str:
    if not isinstance(current, dict):
        return ""
    parts = []
    for tid, cur in sorted(current.items()):
        progress = cur.get("progress") if isinstance(cur, dict) else None
        parts.append(f"{tid} {progress:.0%}" if isinstance(progress, float) else tid)
    return ", ".join(parts)[:80]


def _stream_row(c: Any, stream: str, now: float) -> dict[str, Any]:
    r, group = c.redis, c.keys.group
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
        lag = undelivered(c, stream, "+")
    row["lag"] = int(lag)
    if row["pending"]:
        oldest = r.xpending_range(stream, group, "-", "+", 1)
        if oldest:
            ms = int(_name(oldest[0]["message_id"]).split("-")[0])
            row["oldest_pending_s"] = round(max(0.0, now - ms / 1000), 1)
    return row


def undelivered(c: Any, stream: str, end: str) -> int:
    """Entries of `stream` not yet delivered to the group, up to `end` ('+' or '(id')."""
    script = c.redis.register_script(COUNT_UNDELIVERED)
    return int(script(keys=[stream], args=[c.keys.group, end, COUNT_CAP]))


def queues(c: Any, names: list[str] | None) -> list[dict[str, Any]]:
    """One row per stream: length, lag, pending, consumers, oldest pending age, dead letters.

    Works whatever state the registry is in: it reads only the streams.
    """
    r = c.redis
    now = server_time(r)
    rows = []
    for q in names or c.settings.queue.names:
        live, problem = live_consumers(c, q)
        dead = c.keys.dead(q)
        try:
            dead_count = r.xlen(dead)
        except redis.ResponseError:
            dead_count = None
        for p in sorted(c.settings.queue.priorities, reverse=True):
            row = _stream_row(c, c.keys.stream(q, p), now)
            row.update(queue=q, priority=p, dead=dead_count,
                       live_consumers=None if problem else len(live))
            rows.append(row)
    return rows


def ahead(c: Any, rec: dict[str, Any]) -> int | None:
    """Messages read before a queued task: those undelivered before it in its own stream, plus
    every undelivered message of the queue's higher priorities (read first)."""
    entry = rec.get("entry_id")
    if rec.get("status") != "queued" or not entry:
        return None
    stream = c.keys.stream(rec["queue"], rec["priority"])
    if not c.redis.xrange(stream, entry, entry):
        return None  # its message is elsewhere (waiting for a retry with a delay)
    total = undelivered(c, stream, f"({entry}")
    for p in c.settings.queue.priorities:
        if p > rec["priority"]:
            total += undelivered(c, c.keys.stream(rec["queue"], p), "+")
    return total


def live_consumers(c: Any, queue: str) -> tuple[list[str], str]:
    """Names of live executors that consume `queue`, and a problem that prevents knowing.

    A heartbeat names its queues; a heartbeat without them (an older version) counts when
    its consumer is in the group of one of the queue's streams.
    """
    rows, problem = executors(c)
    if problem:
        return [], problem
    members: set[str] | None = None
    live = []
    for row in rows:
        if not row.get("alive"):
            continue
        if isinstance(row.get("queues"), list):
            if queue in row["queues"]:
                live.append(row["name"])
            continue
        if members is None:
            members = _group_members(c, queue)
        if row["name"] in members:
            live.append(row["name"])
    return live, ""


def _group_members(c: Any, queue: str) -> set[str]:
    names: set[str] = set()
    for p in c.settings.queue.priorities:
        try:
            names |= {_name(x["name"]) for x in c.redis.xinfo_consumers(
                c.keys.stream(queue, p), c.keys.group)}
        except redis.ResponseError:
            continue
    return names


def consumer_alive(c: Any, consumer: str) -> tuple[bool, float | None]:
    """Whether one consumer's last heartbeat is younger than the timeout, and its age."""
    try:
        last = c.redis.zrange(consumer, -1, -1, withscores=True)
    except redis.ResponseError:
        return False, None
    if not last:
        return False, None
    age = max(0.0, server_time(c.redis) - float(last[0][1]))
    return age < c.settings.heartbeat.timeout_s, round(age, 3)


def annotate(c: Any, rec: dict[str, Any]) -> None:
    """Add what a task record cannot say itself: a waiting task's position and whether anyone
    live consumes its queue; whether a running task's consumer still lives."""
    q = rec.get("queue")
    if rec.get("status") == "queued":
        rec["ahead"] = ahead(c, rec)
        live, problem = live_consumers(c, q)
        rec["live_consumers"] = live
        rec["consumed"] = None if problem else bool(live)
        if problem:
            rec["warning"] = f"cannot tell whether a live executor consumes queue {q}: {problem}"
        elif not live:
            rec["warning"] = f"no live executor consumes queue {q}"
    elif rec.get("status") == "running" and rec.get("consumer"):
        alive, age = consumer_alive(c, rec["consumer"])
        rec["consumer_alive"] = alive
        rec["consumer_heartbeat_age_s"] = age
        if not alive:
            rec["warning"] = (
                f"its consumer {rec['consumer']} is presumed dead (" +
                ("no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago") +
                "); a live executor of its queue takes the task over and runs it again")
