"""Handlers of the Redis connectivity scenarios, registered by tests/redis_support.HANDLERS."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tests.handlers import _redis

_sentinel_clients: dict[int, redis.Redis] = {}


def _record(r: redis.Redis, task: dict, event: str) -> None:
    r.rpush(f"test:runs:{task['id']}", f"{event} {time.time()} {os.getpid()}")


def reporter(task: dict, ctx: Any) -> dict:
    """Report progress every `every_s` for `seconds` (S30), recording start and finish."""
    _record(_redis(), task, "start")
    seconds, every = float(task.get("seconds", 10)), float(task.get("every_s", 0.5))
    began = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - began) < seconds:
        n += 1
        ctx.progress(min(elapsed / seconds, 0.99), f"step {n}")
        time.sleep(every)  # the handler's own pace
    _record(_redis(), task, "finish")
    return {"steps": n}


def quiet(task: dict, ctx: Any) -> dict:
    """Work `seconds` without touching Redis, then report progress once and return (S32)."""
    time.sleep(float(task.get("seconds", 8)))  # work that does not touch Redis
    ctx.progress(0.9, "worked without Redis")
    return {"pid": os.getpid()}


def chatty(task: dict, ctx: Any) -> dict:
    """Report progress and check for cancellation `steps` times (S33)."""
    steps = int(task.get("steps", 20))
    for i in range(steps):
        ctx.progress((i + 1) / (steps + 1), f"step {i + 1}")
        ctx.check_cancel()
    return {"steps": steps}


def _sentinel_redis() -> redis.Redis:
    pid = os.getpid()
    if pid not in _sentinel_clients:
        from redis.sentinel import Sentinel

        nodes, master = os.environ["TASKEXEC_TEST_SENTINEL"].split(";")
        sentinel = Sentinel([(n.split(":")[0], int(n.split(":")[1])) for n in nodes.split(",")],
                            socket_timeout=1)
        # Retries ride out the failover, so the record of what ran survives it.
        _sentinel_clients[pid] = sentinel.master_for(
            master, socket_timeout=2, retry=Retry(ExponentialBackoff(1, 0.05), 40),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    return _sentinel_clients[pid]


def sentinel_count(task: dict, ctx: Any) -> dict:
    """`count` for the Sentinel test: records starts and finishes on the current primary."""
    r = _sentinel_redis()
    _record(r, task, "start")
    deadline = time.monotonic() + float(task.get("seconds", 0))
    while time.monotonic() < deadline:
        ctx.check_cancel()
        time.sleep(0.05)  # ok: the handler's own pace, not a wait
    _record(r, task, "finish")
    return {"pid": os.getpid()}
