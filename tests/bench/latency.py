"""Latency of tasks sent one at a time to idle workers, and the memory of the processes."""

from __future__ import annotations

import statistics
import time
from typing import Any

import redis

from tests.bench.env import Bench, BenchError

# Pause after boot and between tasks, so each task finds the workers idle in their blocking read.
IDLE_S = 0.5
GAP_S = 0.002
# The producer's poll of the record: short enough to see `done` within a tenth of a millisecond,
# long enough to leave the CPU to Redis and the workers on a two-core machine.
POLL_S = 0.00005
TASK_TIMEOUT_S = 10.0


def wait_done(r: redis.Redis, task_id: str) -> None:
    key = f"te:task:{task_id}"
    deadline = time.monotonic() + TASK_TIMEOUT_S
    while time.monotonic() < deadline:
        status = r.hget(key, "status")
        if status == b"done":
            return
        if status in (b"failed", b"cancelled", b"dead"):
            raise BenchError(f"task {task_id} ended {status.decode()}")
        time.sleep(POLL_S)
    raise BenchError(f"task {task_id} not done within {TASK_TIMEOUT_S:.0f} s")


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def latency(bench: Bench, n: int) -> dict[str, float]:
    """p50/p99 from submit to done, seen by the producer and by the record's timestamps.

    The supervisor's and the idle workers' RSS are taken here too, before the first task.
    """
    bench.flush()
    seen: list[float] = []
    seen_at: list[float] = []
    ids: list[str] = []
    with bench.service(2, 8) as svc:
        svc.wait_booted()
        time.sleep(IDLE_S)
        sup_mb, workers_mb = svc.rss_mb()
        for _ in range(n):
            start = time.perf_counter()
            task_id = bench.client.submit("noop")
            wait_done(bench.r, task_id)
            seen.append(time.perf_counter() - start)
            seen_at.append(time.time())
            ids.append(task_id)
            time.sleep(GAP_S)
        # The same through the producer API: Client.wait, told of `done` by the server.
        waited: list[float] = []
        for _ in range(n):
            start = time.perf_counter()
            rec = bench.client.wait(bench.client.submit("noop"), TASK_TIMEOUT_S)
            waited.append(time.perf_counter() - start)
            if rec["status"] != "done":
                raise BenchError(f"task {rec['id']} ended {rec['status']}")
            time.sleep(GAP_S)
    recs = [{k: float(v) for k, v in r.items()}
            for r in bench.records(ids, "created_at", "begin_at", "finished_at")]
    # Where the time goes: queued -> begun (the wake-up of the blocking read and its begin,
    # stamped with Redis's clock), begun -> finished (the reply reaching the woken task
    # thread, the handler), finished -> seen (FINISH's round trip and the producer's poll).
    segments = {
        "rec": [r["finished_at"] - r["created_at"] for r in recs],
        "wake": [r["begin_at"] - r["created_at"] for r in recs],
        "run": [r["finished_at"] - r["begin_at"] for r in recs],
        "ack": [at - r["finished_at"] for r, at in zip(recs, seen_at, strict=True)],
    }
    out = {
        "latency.p50_ms": percentile(seen, 50) * 1000,
        "latency.p99_ms": percentile(seen, 99) * 1000,
        "latency.max_ms": max(seen) * 1000,
        "latency.wait_p50_ms": percentile(waited, 50) * 1000,
        "latency.wait_p99_ms": percentile(waited, 99) * 1000,
        "memory.supervisor_mb": sup_mb,
        "memory.idle_worker_mb": max(workers_mb),
    }
    for name, values in segments.items():
        out[f"latency.{name}_p50_ms"] = percentile(values, 50) * 1000
        out[f"latency.{name}_p99_ms"] = percentile(values, 99) * 1000
    for slot, mb in enumerate(workers_mb):
        out[f"memory.idle_worker{slot}_mb"] = mb
    return out


def memory(bench: Bench, n: int) -> dict[str, Any]:
    """RSS of one worker idle, after n no-op tasks and after n more."""
    bench.flush()
    with bench.service(1, 8) as svc:
        svc.wait_booted()
        time.sleep(IDLE_S)
        idle = svc.rss_mb()[1][0]
        marks = []
        for round_ in (1, 2):
            bench.client.submit_many("noop", [{}] * n)
            bench.drained(round_ * n, max(60, n / 200))
            time.sleep(IDLE_S)  # let the last batch's objects go before measuring
            marks.append(svc.rss_mb()[1][0])
    return {"memory.worker_after_mb": marks[0], "memory.growth_mb": marks[0] - idle,
            "memory.growth_2nd_mb": marks[1] - marks[0]}
