"""Takeover: find consumers that died holding messages, and claim those messages.

Three sources of orphaned messages, one mechanism (an owner-checked, idle-checked claim):
- a predecessor: the worker that died in this slot; the supervisor reaped it, so its messages
  are claimed at once;
- a dead consumer of any host: its heartbeat (scored with Redis server time) is older than
  `heartbeat.timeout_s`; its messages are claimed once idle that long, so a message whose lease
  is still being renewed is never taken;
- this consumer's own messages that it does not know it holds (a reply lost to a dropped
  connection after the read ran): claimed back to itself once idle a few intervals.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from workers.broker import Broker, Message, _s
from workers.witness import Witness

log = logging.getLogger("taskexec.takeover")


@dataclass
class Orphan:
    """Messages of a dead consumer on one stream, waiting for free slots here."""

    consumer: str
    stream: str
    min_idle_ms: int
    death: str = ""


def heartbeat_ages(client: redis.Redis, consumers: list[str]) -> dict[str, float | None]:
    """Seconds since each consumer's last heartbeat, by the server's clock (None: none)."""
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for name in consumers:
        pipe.zrange(name, -1, -1, withscores=True)
    replies = pipe.execute(raise_on_error=False)
    sec, usec = replies[0]
    now = sec + usec / 1e6
    ages: dict[str, float | None] = {}
    for name, last in zip(consumers, replies[1:], strict=True):
        if isinstance(last, Exception) or not last:
            ages[name] = None
        else:
            ages[name] = max(0.0, now - float(last[0][1]))
    return ages


class Takeover:
    """Kept by one worker: knows the orphans it may claim and claims up to its free slots."""

    def __init__(self, broker: Broker, streams: list[str], *, registry: str, timeout_s: float,
                 scan_every_s: float, own_idle_s: float,
                 running_ids: Callable[[], set[str]]) -> None:
        self.broker = broker
        self.streams = streams
        self.registry = registry
        self.timeout_s = timeout_s
        self.scan_every_s = scan_every_s
        self.own_idle_ms = int(own_idle_s * 1000)
        self.running_ids = running_ids
        self.orphans: list[Orphan] = []
        self._next_scan = 0.0
        self.witness = Witness(broker.client, broker.consumer, timeout_s)

    def add_predecessor(self, consumer: str, death: str) -> None:
        for stream in self.streams:
            self.orphans.append(Orphan(consumer, stream, 0, death))

    def scan_due(self) -> bool:
        return time.monotonic() >= self._next_scan

    def scan(self) -> None:
        """Look for dead consumers on our streams; jittered so hosts do not scan in step."""
        self._next_scan = time.monotonic() + self.scan_every_s * random.uniform(0.8, 1.2)
        known = {(o.consumer, o.stream) for o in self.orphans}
        candidates: dict[str, list[str]] = {}
        for stream in self.streams:
            try:
                consumers = self.broker.client.xinfo_consumers(stream, self.broker.group)
            except redis.ResponseError:
                continue  # no stream or no group yet; the read path reports broken streams
            for c in consumers:
                name = _s(c["name"])
                if int(c["pending"]) and name != self.broker.consumer and \
                        (name, stream) not in known:
                    candidates.setdefault(name, []).append(stream)
        if candidates:
            ages = heartbeat_ages(self.broker.client, list(candidates))
            old = [n for n in candidates if ages[n] is None or ages[n] > self.timeout_s]
            if old and not self._may_judge(old):
                old = []
            for name in old:
                streams, age = candidates[name], ages[name]
                death = "no heartbeat" if age is None else f"last heartbeat {age:.0f} s ago"
                log.info("Consumer %s looks dead (%s); taking over its messages on %s.",
                         name, death, ", ".join(streams))
                for stream in streams:
                    self.orphans.append(Orphan(name, stream, int(self.timeout_s * 1000),
                                               f"consumer {name} died ({death})"))
        self.orphans.append(Orphan(self.broker.consumer, "", self.own_idle_ms))

    def _may_judge(self, names: list[str]) -> bool:
        """False right after this worker's own heartbeats had a break (workers/witness.py)."""
        if self.witness.reliable():
            return True
        log.info("Not judging %s by heartbeat age yet: this worker's own heartbeats do not "
                 "cover the last %g s (a gap of %.1f s: Redis frozen, paused or away, or this "
                 "worker is new).", ", ".join(sorted(names)), self.timeout_s,
                 self.witness.widest_gap_s)
        return False

    def claim(self, free: int) -> list[Message]:
        """Claim up to `free` orphaned messages, oldest source first."""
        msgs: list[Message] = []
        while self.orphans and len(msgs) < free:
            orphan = self.orphans[0]
            got = self._claim_one(orphan, free - len(msgs))
            if got is None:
                self.orphans.pop(0)
                if orphan.consumer != self.broker.consumer and not any(
                        o.consumer == orphan.consumer for o in self.orphans):
                    self.forget(orphan.consumer)
                continue
            msgs += got
        return msgs

    def _claim_one(self, o: Orphan, count: int) -> list[Message] | None:
        """Some messages of this orphan, or None when it has nothing (more) for us."""
        if o.consumer == self.broker.consumer:
            return self._reclaim_own(o, count) or None
        try:
            ids = self.broker.pending_ids(o.stream, o.consumer, count, o.min_idle_ms)
        except redis.ResponseError:
            return None  # a broken stream: the read path reports it, with backoff
        if not ids:
            return None
        msgs, lost = self.broker.claim(o.stream, o.consumer, ids, o.min_idle_ms)
        for m in msgs:
            m.death = o.death
        if msgs:
            log.info("Took over %d message(s) of %s on %s: %s.", len(msgs), o.consumer,
                     o.stream, ", ".join(m.entry_id for m in msgs))
        if lost:
            log.warning("Messages %s of %s on %s were deleted from the stream; acknowledged.",
                        ", ".join(lost), o.consumer, o.stream)
        return msgs if msgs or lost else None

    def _reclaim_own(self, o: Orphan, count: int) -> list[Message]:
        running = self.running_ids()
        msgs: list[Message] = []
        for stream in self.streams:
            if len(msgs) >= count:
                break
            try:
                held = self.broker.pending_ids(stream, o.consumer, count + len(running),
                                               o.min_idle_ms)
            except redis.ResponseError:
                continue
            ids = [i for i in held if i not in running]
            if ids:
                got, _ = self.broker.claim(stream, o.consumer, ids[:count - len(msgs)],
                                           o.min_idle_ms)
                if got:
                    log.warning("Found %d message(s) on %s this worker held without knowing "
                                "(a reply lost in transit); running them now.", len(got), stream)
                msgs += got
        return msgs

    def forget(self, consumer: str) -> None:
        """Remove a dead consumer whose messages are all taken: from the group (only where
        it holds nothing, since deleting a consumer drops its pending entries), the registry
        and its heartbeat history."""
        client = self.broker.client
        for stream in self.streams:
            try:
                if self.broker.pending_ids(stream, consumer, 1):
                    return  # entries not idle long enough yet: a later scan comes back
            except redis.ResponseError:
                continue
        for stream in self.streams:
            self.broker.delete_consumer(stream, consumer)
        pipe = client.pipeline(transaction=False)
        pipe.srem(self.registry, consumer)
        pipe.delete(consumer)
        pipe.execute(raise_on_error=False)
        log.info("Removed dead consumer %s.", consumer)


def held_task_ids(client: redis.Redis, streams: list[str], group: str, consumer: str,
                  limit: int = 100) -> list[str]:
    """The ids of the tasks whose messages `consumer` holds (from its pending entries)."""
    import orjson

    ids: list[str] = []
    for stream in streams:
        try:
            rows = client.xpending_range(stream, group, "-", "+", limit, consumername=consumer)
            for row in rows:
                entry = client.xrange(stream, row["message_id"], row["message_id"])
                if entry:
                    ids.append(str(orjson.loads(entry[0][1][b"message"]).get("id", "?")))
        except (redis.RedisError, orjson.JSONDecodeError, KeyError, AttributeError):
            continue
    return sorted(ids)
