"""Handlers for the tests, registered under `handlers:` by the test configuration.

They reach Redis through TASKEXEC_TEST_REDIS_URL, set by the harness, to record what ran.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

_clients: dict[int, redis.Redis] = {}


def _redis() -> redis.Redis:
    pid = os.getpid()
    if pid not in _clients:
        # Retries: the scenarios kill clients and pause writes; the record of what ran must
        # survive that, as the handler under test does.
        _clients[pid] = redis.Redis.from_url(
            os.environ["TASKEXEC_TEST_REDIS_URL"], retry=Retry(ExponentialBackoff(0.5, 0.01), 20),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    return _clients[pid]


def count(task: dict, ctx: Any) -> dict:
    """Record a start and a finish per task id (with times), sleeping `seconds` between."""
    r = _redis()
    key = f"test:runs:{task['id']}"
    r.rpush(key, f"start {time.time()} {os.getpid()}")
    seconds = float(task.get("seconds", 0))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancel()
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    r.rpush(key, f"finish {time.time()} {os.getpid()}")
    return {"pid": os.getpid()}


def hang(task: dict, ctx: Any) -> None:
    """Ignore cancellation and sleep `seconds`."""
    time.sleep(float(task.get("seconds", 3)))


def starts(r: redis.Redis, task_id: str) -> int:
    return sum(1 for e in r.lrange(f"test:runs:{task_id}", 0, -1) if e.startswith(b"start"))
