"""The producer API: submit tasks, read their status, wait for them, cancel them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from workers import messages
from workers.errors import RedisUnavailable, SubmitError, TaskNotFound
from workers.keys import FINAL_STATUSES, Keys
from workers.redisconn import TRANSIENT_ERRORS, connect, describe
from workers.store import TaskStore
from workers.waiter import RECHECK_S, Subscription

# submit_many writes this many tasks per round trip.
BATCH = 500
# Waits at once that are told of the final status by the server, each on a connection of its
# own; any beyond them poll.
WAIT_CONNECTIONS = 8


class Client:
    """A producer's handle on the queues and records, configured like the CLI."""

    def __init__(self, settings: Any, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys.from_settings(settings.keys)
        self.redis = client or connect(settings, name=f"taskexec_client_{os.getpid()}",
                                       max_connections=4)
        self.store = TaskStore(self.redis, self.keys, group=self.keys.group,
                               max_log_chars=settings.store.max_log_chars,
                               cancel_ttl_s=settings.store.cancel_ttl_s,
                               result_ttl_s=settings.store.result_ttl_s)
        self._wait_pool: redis.ConnectionPool | None = None  # opened by the first wait
        self._wait_slots = threading.BoundedSemaphore(WAIT_CONNECTIONS)
        self._wait_lock = threading.Lock()

    @classmethod
    def from_config(cls, conf_dir: str | None = None,
                    overrides: Mapping[str, object] | None = None) -> Client:
        from workers.config import load_settings

        return cls(load_settings(conf_dir, overrides))

    def check(self) -> None:
        """Raise RedisUnavailable (naming the address) when Redis does not answer."""
        try:
            self.redis.ping()
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(f"cannot reach {describe(self.settings)}: {exc}") from None

    def _prepare(self, task_type: str, data: Mapping[str, Any] | None, task_id: str | None,
                 queue: str, priority: int, rerun: bool) -> tuple[str, tuple[list, list]]:
        if priority not in self.settings.queue.priorities:
            raise SubmitError(f"priority {priority} is not one of queue.priorities "
                              f"{list(self.settings.queue.priorities)}")
        if not messages.NAME_RE.match(queue):
            raise SubmitError(f"queue name {queue!r} is not letters, digits or _.:-")
        try:
            task, raw = messages.encode(task_type, data, task_id=task_id,
                                        max_bytes=self.settings.queue.max_message_bytes)
        except ValueError as exc:
            raise SubmitError(str(exc)) from None
        record = {**task, "queue": queue, "priority": priority}
        stream = self.keys.stream(queue, priority)
        return task["id"], self.store.submit_args(record, raw, stream, rerun)

    def submit(self, task_type: str, data: Mapping[str, Any] | None = None, *,
               id: str | None = None, queue: str = "common", priority: int = 0,
               rerun: bool = False) -> str:
        """Queue one task and return its id; its record and message are written together."""
        return self.submit_many(task_type, [data or {}], ids=[id], queue=queue,
                                priority=priority, rerun=rerun)[0]

    def submit_many(self, task_type: str, items: Iterable[Mapping[str, Any] | None], *,
                    ids: Iterable[str | None] | None = None, queue: str = "common",
                    priority: int = 0, rerun: bool = False) -> list[str]:
        """Queue many tasks of one type, pipelined; every item is checked before any is sent."""
        items = list(items)
        id_list = list(ids) if ids is not None else [None] * len(items)
        prepared = [self._prepare(task_type, d, i, queue, priority, rerun)
                    for d, i in zip(items, id_list, strict=True)]
        seen: set[str] = set()
        for task_id, _ in prepared:
            if task_id in seen:
                raise SubmitError(f"task id {task_id} appears twice in one submission")
            seen.add(task_id)
        refused = []
        for start in range(0, len(prepared), BATCH):
            chunk = prepared[start:start + BATCH]
            replies = self.store.submit_many(args for _, args in chunk)
            for (task_id, _), reply in zip(chunk, replies, strict=True):
                if reply[0] != b"ok":
                    refused.append(f"{task_id} ({reply[1].decode() or 'exists'})")
        if refused:
            raise SubmitError(f"task id(s) already exist and are not re-run: "
                              f"{', '.join(refused[:10])}"
                              + (" ..." if len(refused) > 10 else ""))
        return [task_id for task_id, _ in prepared]

    def status(self, id: str) -> dict[str, Any]:
        rec = self.store.status(id)
        if rec is None:
            raise TaskNotFound(id)
        return rec

    def wait(self, id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The record once final; TaskNotFound if it vanishes, TimeoutError at the timeout.
        Redis unavailable is waited out, until the timeout: then its error is raised.

        The server tells the wait of the final status as it is written (workers/waiter.py);
        with Redis unavailable, or WAIT_CONNECTIONS waits already at once, it polls."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        sub = self._subscribe(self.keys.task_record(id))
        try:
            delay = 0.002
            while True:
                try:
                    rec = self.status(id)
                except TRANSIENT_ERRORS:
                    # Redis restarting: keep waiting until it answers or the timeout comes.
                    if deadline is not None and time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)
                    continue
                if rec["status"] in FINAL_STATUSES:
                    return rec
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {id} is still {rec['status']} after {timeout_s} s")
                if sub is not None and sub.ok:
                    sub.wait(RECHECK_S if left is None else min(left, RECHECK_S))
                else:
                    time.sleep(delay if left is None else min(delay, left))
                    delay = min(delay * 1.5, 0.2)
        finally:
            if sub is not None:
                sub.close()
                self._wait_slots.release()

    def _subscribe(self, channel: str) -> Subscription | None:
        if not self._wait_slots.acquire(blocking=False):
            return None
        try:
            with self._wait_lock:
                if self._wait_pool is None:
                    self._wait_pool = connect(
                        self.settings, name=f"taskexec_client_{os.getpid()}",
                        max_connections=WAIT_CONNECTIONS).connection_pool
            return Subscription(self._wait_pool, channel)
        except (*TRANSIENT_ERRORS, redis.ResponseError):
            self._wait_slots.release()  # polled instead; Redis tells why at the first read
            return None

    def cancel(self, id: str) -> str:
        """'cancelled' (was queued), 'requested' (running; it stops at its next check) or
        'already <status>'; TaskNotFound for an unknown id."""
        outcome, status = self.store.cancel(id)
        if outcome == "missing":
            raise TaskNotFound(id)
        if outcome == "final":
            return f"already {status}"
        return outcome

    def ahead(self, id: str) -> int | None:
        """How many messages of its stream are queued before a queued task, if it is queued."""
        rec = self.status(id)
        if rec["status"] != "queued":
            return None
        stream = self.keys.stream(rec["queue"], rec["priority"])
        entry = rec.get("entry_id")
        try:
            groups = self.redis.xinfo_groups(stream)
        except redis.ResponseError:
            return None
        last = next((g["last-delivered-id"] for g in groups
                     if g["name"] in (self.keys.group, self.keys.group.encode())), b"0-0")
        last = last.decode() if isinstance(last, bytes) else last
        if not entry:
            return None
        return len(self.redis.xrange(stream, f"({last}" if last != "0-0" else "-",
                                     f"({entry}", count=100000))
