"""The references: what this machine does with no executor at all, in the same run.

The latency reference: one bare process that answers each item pushed to a list by pushing it
to another (BRPOP, LPUSH), the producer polling for the answer as the latency scenario polls
for `done`; the machine's floor for "a process on a Redis wakes, the producer sees its reply".

The Redis-only loop: a bare LPUSH/BRPOP in 2 processes, no record, no ack, no lease; one BRPOP
per task, a JSON decode and a no-op call. It is the practical ceiling the issue compares the
noop drain with. The CPU reference: the `cpu` scenario's work in 2 bare processes, the ceiling
of "a fraction of two cores" on this machine. Run as a module, it is one such process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
import redis

from tests.bench.env import Bench, BenchError, poll

KEY = "bench:ref"
READY = "bench:ref:ready"
GO = "bench:ref:go"
STOP = b"stop"
PING = "bench:ref:ping"
PONG = "bench:ref:pong"


def noop(task: dict[str, Any]) -> dict[str, Any]:
    return {}


def consume(url: str, deadline_s: float = 120) -> dict[str, Any]:
    """Pop and run until the stop item; the times of the first and last pop."""
    r = redis.Redis.from_url(url, socket_timeout=30)
    r.rpush(READY, os.getpid())
    if r.blpop([GO], timeout=30) is None:
        raise SystemExit("no go signal within 30 s")
    n, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        item = r.brpop([KEY], timeout=5)
        if item is None or item[1] == STOP:
            break
        noop(orjson.loads(item[1]))
        last = time.time()
        if n == 0:
            first = last
        n += 1
    return {"n": n, "first": first, "last": last}


def spin(iterations: int, count: int) -> dict[str, float]:
    from tests.bench.handlers import work

    start, cpu = time.time(), time.thread_time()
    for _ in range(count):
        work(iterations)
    return {"first": start, "last": time.time(), "cpu_s": time.thread_time() - cpu}


def measure_cpu(bench: Bench, n: int, iterations: int, task_s: float) -> dict[str, float]:
    """The cpu scenario's n tasks in 2 bare processes: the share of two cores' time their work
    took (its CPU time over twice the span), and the seconds they took (`ref.cpu_span_s`)."""
    procs = [bench.procs.start([sys.executable, "-m", "tests.bench.reference", "cpu",
                                str(iterations), str(n // 2)], cwd=bench.tmp, env=bench.env,
                               stdout=subprocess.PIPE) for _ in range(2)]
    reports = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(60, n * task_s * 4))
            reports.append(json.loads(out))
    except (subprocess.TimeoutExpired, ValueError):
        raise BenchError("the CPU reference did not finish") from None
    finally:
        for proc in procs:
            bench.procs.kill(proc)
    span = max(r["last"] for r in reports) - min(r["first"] for r in reports)
    return {"ref.cpu_fraction": sum(r["cpu_s"] for r in reports) / (2 * span),
            "ref.cpu_best_fraction": (n // 2) * 2 * task_s / (2 * span),
            "ref.cpu_task_ms": sum(r["cpu_s"] for r in reports) / ((n // 2) * 2) * 1000,
            "ref.cpu_span_s": span}


def measure(bench: Bench, n: int, procs: int = 2) -> dict[str, float]:
    """One run of the reference loop on the bench's Redis; its drain rate."""
    bench.flush()
    pipe = bench.r.pipeline(transaction=False)
    for _ in range(n):
        pipe.lpush(KEY, orjson.dumps({"id": uuid.uuid4().hex, "task_type": "noop"}))
    for _ in range(procs):
        pipe.lpush(KEY, STOP)  # LPUSH/BRPOP is first in, first out: the stops come last
    pipe.execute()
    consumers = [bench.procs.start([sys.executable, "-m", "tests.bench.reference",
                                    bench.server.url], cwd=bench.tmp, env=bench.env,
                                   stdout=subprocess.PIPE)
                 for _ in range(procs)]
    try:
        poll(lambda: bench.r.llen(READY) >= procs, 30, 0.005, "reference consumers ready")
        bench.r.rpush(GO, *["go"] * procs)
        reports = []
        for proc in consumers:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BenchError(f"reference consumer exited with status {proc.returncode}")
            reports.append(json.loads(out))
    finally:
        for proc in consumers:
            bench.procs.kill(proc)
    done = sum(rep["n"] for rep in reports)
    if done != n:
        raise BenchError(f"reference loop ran {done} of {n} items")
    span = max(rep["last"] for rep in reports) - min(rep["first"] for rep in reports if rep["n"])
    return {"ref.drain_per_s": n / span}


def answer(url: str, n: int) -> dict[str, Any]:
    """Answer n pings: each item popped from PING is pushed to PONG."""
    r = redis.Redis.from_url(url, socket_timeout=30)
    r.rpush(READY, os.getpid())
    for _ in range(n):
        item = r.brpop([PING], timeout=30)
        if item is None:
            raise SystemExit("no ping within 30 s")
        r.lpush(PONG, item[1])
    return {"n": n}


def measure_latency(bench: Bench, n: int) -> dict[str, float]:
    """p50 and p99 of ping -> pong seen, one at a time, paced as the latency scenario."""
    from tests.bench.latency import GAP_S, POLL_S, percentile

    bench.flush()
    proc = bench.procs.start([sys.executable, "-m", "tests.bench.reference", "answer",
                              bench.server.url, str(n)], cwd=bench.tmp, env=bench.env,
                             stdout=subprocess.PIPE)
    seen = []
    try:
        poll(lambda: bench.r.llen(READY) >= 1, 30, 0.005, "reference answerer ready")
        time.sleep(0.5)  # ok: paced as the latency scenario, the answerer idle in its read
        for i in range(n):
            start = time.perf_counter()
            bench.r.lpush(PING, i)
            deadline = time.monotonic() + 10
            while bench.r.lpop(PONG) is None:
                if time.monotonic() > deadline:
                    raise BenchError("the latency reference did not answer within 10 s")
                time.sleep(POLL_S)
            seen.append(time.perf_counter() - start)
            time.sleep(GAP_S)
        proc.communicate(timeout=30)
    finally:
        bench.procs.kill(proc)
    return {"ref.latency_p50_ms": percentile(seen, 50) * 1000,
            "ref.latency_p99_ms": percentile(seen, 99) * 1000}


if __name__ == "__main__":
    if sys.argv[1] == "answer":
        print(json.dumps(answer(sys.argv[2], int(sys.argv[3]))))
    elif sys.argv[1] == "cpu":
        print(json.dumps(spin(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(consume(sys.argv[1])))
