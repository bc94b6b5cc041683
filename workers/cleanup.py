"""The cluster clean-up duty, run by one worker at a time under the `clean_task_executor` lock.

The lock is a token lock (the token names the holder's consumer plus a random part), renewed
between steps and released by token from whichever thread holds the object. It doubles as the
rate limit: at the end of a pass it is left to expire one `cleanup.interval_s` after the pass
began, so the cluster runs one pass per interval however many workers compete.
"""

from __future__ import annotations

import logging
import time
import uuid

import redis

from workers import scripts
from workers.broker import Broker, _s
from workers.keys import Keys
from workers.takeover import heartbeat_ages
from workers.witness import Witness

log = logging.getLogger("taskexec.cleanup")

MAX_EXECUTORS_PER_PASS = 500


class LockLost(Exception):
    """The lock expired or another holder took it; the pass ends at once."""


class CleanupLock:
    """A token lock; any thread may renew or release it, the token decides."""

    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_s * 1000)
        self.token = f"{holder}:{uuid.uuid4().hex[:12]}"
        self._renew = client.register_script(scripts.LOCK_RENEW)
        self._release = client.register_script(scripts.LOCK_RELEASE)

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self, keep_s: float = 0.0) -> bool:
        return bool(self._release(keys=[self.key], args=[self.token, int(keep_s * 1000)]))


class Cleanup:
    """One worker's share of the clean-up: competes for the lock each interval."""

    def __init__(self, broker: Broker, keys: Keys, streams: list[str], *, interval_s: float,
                 lock_ttl_s: float, timeout_s: float) -> None:
        self.broker = broker
        self.client = broker.client
        self.keys = keys
        self.streams = streams
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.lock = CleanupLock(self.client, keys.cleanup_lock, broker.consumer, lock_ttl_s)
        self.passes = 0
        self._kinds: dict[str, str] = {}  # heartbeat keys found of the wrong type
        self._next = 0.0
        self.witness = Witness(self.client, broker.consumer, timeout_s)

    def maybe_run(self) -> bool:
        """Run a pass if this worker's turn came and it wins the lock; True if it ran."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s / 2
        if not self.lock.acquire():
            return False
        started = time.monotonic()
        try:
            self.run_pass()
        except LockLost:
            log.warning("Cleanup lock %s was lost mid-pass; pass ended, the new holder's "
                        "lock is left alone.", self.keys.cleanup_lock)
            return True
        keep = self.interval_s - (time.monotonic() - started)
        self.lock.release(keep_s=max(keep, 0.001))
        return True

    def _check(self) -> None:
        if not self.lock.renew():
            raise LockLost()

    def run_pass(self) -> None:
        self.passes += 1
        log.info("Cleanup pass %d by %s.", self.passes, self.broker.consumer)
        removed = self.remove_dead_executors()
        self._check()
        trimmed = sum(max(self.broker.trim(s), 0) for s in self.streams)
        if removed or trimmed:
            log.info("Cleanup removed %d dead executor(s) and trimmed %d acknowledged "
                     "entr(ies).", removed, trimmed)

    def remove_dead_executors(self) -> int:
        """Drop registered executors whose heartbeat is older than heartbeat.timeout_s and
        that hold no message; those holding messages are left to the takeover."""
        try:
            names = sorted(_s(n) for n in self.client.smembers(self.keys.registry))
        except redis.ResponseError:
            return 0  # the heartbeat reports a registry of the wrong type, once a minute
        names = [n for n in names if n != self.broker.consumer][:MAX_EXECUTORS_PER_PASS]
        if not names:
            return 0
        ages = self._ages(names)
        stale = [n for n, age in ages.items() if age is None or not 0 <= age <= self.timeout_s]
        if stale and not self.witness.reliable():
            return 0  # every heartbeat looks old after our own break; judge once it is over
        removed = 0
        for name, age in ages.items():
            if age is not None and 0 <= age <= self.timeout_s:
                continue
            self._check()
            if self._holds_messages(name):
                continue
            self._remove(name, broken=age == -1.0)
            removed += 1
        return removed

    def _ages(self, names: list[str]) -> dict[str, float | None]:
        """Heartbeat age per name; -1 marks a heartbeat key of the wrong type."""
        ages = heartbeat_ages(self.client, names)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.type(name)
        for name, kind in zip(names, pipe.execute(), strict=True):
            if _s(kind) not in ("zset", "none"):
                self._kinds[name] = _s(kind)
                ages[name] = -1.0
        return ages

    def _holds_messages(self, name: str) -> bool:
        for stream in self.streams:
            try:
                if self.broker.pending_ids(stream, name, 1):
                    return True
            except redis.ResponseError:
                continue
        return False

    def _remove(self, name: str, broken: bool) -> None:
        if broken:
            # Logged here, once, when the executor is dropped; not at every look.
            log.error("Heartbeat key %s of executor %s is a %s, expected a zset; dropping "
                      "the executor from %s and leaving the key alone.", name, name,
                      self._kinds.pop(name, "?"), self.keys.registry)
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(self.keys.registry, name)
        if not broken:
            pipe.delete(name)
        for stream in self.streams:
            pipe.xgroup_delconsumer(stream, self.keys.group, name)
        pipe.execute(raise_on_error=False)
        log.info("Cleanup removed dead executor %s.", name)
