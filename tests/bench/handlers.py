"""Handlers of the benchmark, registered under `handlers:` by the bench's configuration.

`count` reaches Redis through TASKEXEC_BENCH_REDIS_URL, set by the bench, to record each run.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis

_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def _redis() -> redis.Redis:
    # One client per process: a worker forked from a process that had one must not share it.
    pid = os.getpid()
    with _lock:
        if pid not in _clients:
            _clients[pid] = redis.Redis.from_url(os.environ["TASKEXEC_BENCH_REDIS_URL"],
                                                 socket_timeout=10)
        return _clients[pid]


def work(iterations: int) -> int:
    """Pure-Python arithmetic that holds the GIL all along: the `cpu` scenario's load."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) % 1000003
    return acc


def spin(task: dict, ctx: Any) -> dict:
    # Its own wall and CPU time in the result: a gap between them is time without the GIL.
    wall, cpu = time.perf_counter(), time.thread_time()
    acc = work(int(task["iterations"]))
    return {"acc": acc, "wall_s": time.perf_counter() - wall, "cpu_s": time.thread_time() - cpu}


def count(task: dict, ctx: Any) -> dict:
    """Record every start and finish of a task id, sleeping `seconds` in between."""
    r = _redis()
    key = f"bench:runs:{task['id']}"
    r.rpush(key, f"start {time.time()!r} {os.getpid()}")
    time.sleep(float(task.get("seconds", 0)))
    r.rpush(key, f"finish {time.time()!r} {os.getpid()}")
    return {}


def calibrate(target_s: float = 0.02, tries: int = 5) -> tuple[int, float]:
    """Iterations of work() that take about target_s here, and their best measured time."""
    probe = 100_000
    per_iteration = min(_timed(probe) for _ in range(tries)) / probe
    iterations = max(1, round(target_s / per_iteration))
    return iterations, best_time(iterations, tries)


def best_time(iterations: int, tries: int = 5) -> float:
    """The best of `tries` timings of work(iterations) in this process, in seconds."""
    return min(_timed(iterations) for _ in range(tries))


def _timed(iterations: int) -> float:
    start = time.perf_counter()
    work(iterations)
    return time.perf_counter() - start
