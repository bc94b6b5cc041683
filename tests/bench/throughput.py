"""Throughput scenarios: noop enqueue and drain, io (sleeping) and cpu (pure-Python) tasks.

Every drain is of tasks queued before the supervisor starts. Its rate is measured from the
earliest first heartbeat of a worker (the moment a booted worker starts reading) to the last
`finished_at` of a record, both on this host's clock; the wall rate from the supervisor's start
is reported beside it.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from tests.bench import reference
from tests.bench.counters import redis_stats, stats_delta
from tests.bench.env import Bench, BenchError
from tests.bench.handlers import best_time

IO_SLEEP_S = 0.01


@dataclass
class Drain:
    """What one drain by a fresh `taskexec run` measured."""

    n: int
    started_at: float  # supervisor started (epoch s)
    booted_at: float  # earliest first heartbeat
    first_begin: float
    last_done: float
    redis: dict[str, Any]  # server counters over the run, the bench's own commands removed
    worker_cpu_s: float  # from the first heartbeat on
    records: list[dict[str, str]]

    @property
    def rate(self) -> float:
        return self.n / (self.last_done - self.booted_at)

    @property
    def task_rate(self) -> float:
        return self.n / (self.last_done - self.first_begin)

    @property
    def wall_rate(self) -> float:
        return self.n / (self.last_done - self.started_at)


def drain(bench: Bench, ids: list[str], *, procs: int, threads: int, timeout_s: float) -> Drain:
    """Start a service on the queued ids, wait until all are done, stop it."""
    before = redis_stats(bench.r)
    bench.polls = 0
    with bench.service(procs, threads) as svc:
        booted = svc.wait_booted()
        cpu_booted = svc.cpu_s()  # their imports and boot left out
        bench.drained(len(ids), timeout_s)
        counters = stats_delta(before, redis_stats(bench.r))
        cpu = svc.cpu_s() - cpu_booted
    # The bench's polls and its closing INFO were one read and one command each.
    counters["reads"] -= bench.polls + 1
    counters["commands"] -= bench.polls + 1
    recs = bench.records(ids, "status", "begin_at", "finished_at", "consumer")
    bad = [r["status"] for r in recs if r["status"] != "done"]
    if bad:
        raise BenchError(f"{len(bad)} of {len(ids)} tasks not done (e.g. {bad[0]!r})")
    return Drain(len(ids), svc.started_at, booted, min(float(r["begin_at"]) for r in recs),
                 max(float(r["finished_at"]) for r in recs), counters, cpu, recs)


def noop(bench: Bench, n: int) -> dict[str, Any]:
    """Enqueue n no-op tasks with Client.submit_many, drain them; then the CLI's enqueue."""
    bench.flush()
    start = time.perf_counter()
    ids = bench.client.submit_many("noop", [{}] * n)
    out: dict[str, Any] = {"noop.submit_many_per_s": n / (time.perf_counter() - start)}
    d = drain(bench, ids, procs=2, threads=8, timeout_s=max(60, n / 200))
    out.update({
        "noop.drain_per_s": d.rate, "noop.drain_task_per_s": d.task_rate,
        "noop.drain_wall_per_s": d.wall_rate, "noop.boot_s": d.booted_at - d.started_at,
        "noop.rt_per_task": d.redis["reads"] / n, "noop.cmds_per_task": d.redis["commands"] / n,
        "noop.redis_cpu_ms_per_1k": d.redis["cpu_s"] * 1e6 / n,
        "noop.worker_cpu_ms_per_1k": d.worker_cpu_s * 1e6 / n,
        "_calls": {name: (calls / n, usec / calls) for name, (calls, usec)
                   in d.redis["calls"].items()},
    })
    bench.flush()
    path = bench.tmp / "noop.jsonl"
    path.write_text("{}\n" * n)
    out["noop.cli_submit_per_s"] = n / bench.run_cli("submit", "noop", "--jsonl", str(path))
    out["noop.cli_startup_s"] = bench.run_cli("submit", "noop")
    return out


def sleep_ms(threads: int = 8, sleeps: int = 50) -> float:
    """Mean length of time.sleep(IO_SLEEP_S) here, in `threads` threads at once: the part of an
    io task's time that is the machine's, not the executor's."""
    taken: list[float] = []

    def sleeper() -> None:
        for _ in range(sleeps):
            start = time.perf_counter()
            time.sleep(IO_SLEEP_S)
            taken.append(time.perf_counter() - start)

    pool = [threading.Thread(target=sleeper) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return statistics.mean(taken) * 1000


def io(bench: Bench, n: int) -> dict[str, float]:
    """n tasks sleeping 10 ms on 2 x 8 threads: the rate as a fraction of 16 / 10 ms."""
    alone = sleep_ms()
    bench.flush()
    ids = bench.client.submit_many("sleep", [{"seconds": IO_SLEEP_S}] * n)
    d = drain(bench, ids, procs=2, threads=8, timeout_s=max(60, n / 100))
    ideal = 2 * 8 / IO_SLEEP_S
    runs = [float(r["finished_at"]) - float(r["begin_at"]) for r in d.records]
    return {"io.rate_per_s": d.rate, "io.fraction": d.rate / ideal, "io.sleep_ms": alone,
            "io.run_ms": statistics.mean(runs) * 1000, "io.cycle_ms": 2 * 8 / d.rate * 1000}


def cpu(bench: Bench, n: int, iterations: int, task_s: float) -> dict[str, float]:
    """n pure-Python tasks of task_s each on 2 x 1 threads: the share of two cores' time that
    went into the tasks' work.

    That share is the CPU time the handlers' threads spent in the work over twice the drain's
    span: what the executor, its supervisor and Redis took, and every gap between tasks, count
    against it, and so does time the virtual machine's host took (the kernel leaves steal out of
    a thread's CPU time). The work's wall time alone is no measure of a core here: the same
    work took 15 to 29 ms within four seconds in one process. That older measure, the work
    timed alone just before and after the drain (best of 5 each, their mean), is still printed
    (`cpu.best_fraction`). Just before the drain the same tasks run in 2 bare processes:
    `cpu.vs_bare` is the drain's speed as a fraction of theirs.
    """
    bare = reference.measure_cpu(bench, n, iterations, task_s)["ref.cpu_span_s"]
    bench.flush()
    ids = bench.client.submit_many("spin", [{"iterations": iterations}] * n)
    before = best_time(iterations)
    d = drain(bench, ids, procs=2, threads=1, timeout_s=max(60, n * task_s * 2))
    task_s = (before + best_time(iterations)) / 2
    span = d.last_done - d.booted_at
    runs = [float(r["finished_at"]) - float(r["begin_at"]) for r in d.records]
    inside = [orjson.loads(r["result"]) for r in bench.records(ids, "result")]
    return {"cpu.rate_per_s": d.rate, "cpu.task_ms": task_s * 1000,
            "cpu.vs_bare": bare / span * n / (n // 2 * 2),
            "cpu.fraction": sum(r["cpu_s"] for r in inside) / (2 * span),
            "cpu.best_fraction": n * task_s / (2 * span),
            "cpu.handler_ms": statistics.mean(r["wall_s"] for r in inside) * 1000,
            "cpu.handler_cpu_ms": statistics.mean(r["cpu_s"] for r in inside) * 1000,
            "cpu.run_ms": statistics.mean(runs) * 1000,
            "cpu.gap_ms": statistics.mean(slot_gaps(d.records)) * 1000,
            "cpu.redis_cpu_ms": d.redis["cpu_s"] / n * 1000,
            "cpu.other_cpu_ms": (d.worker_cpu_s - sum(r["cpu_s"] for r in inside)) / n * 1000}


def slot_gaps(records: list[dict[str, str]]) -> list[float]:
    """Per consumer of one thread: seconds from each task's finish to the next one's begin."""
    by_consumer: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        by_consumer.setdefault(r["consumer"], []).append(
            (float(r["begin_at"]), float(r["finished_at"])))
    gaps = []
    for runs in by_consumer.values():
        runs.sort()
        gaps += [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False)]
    return gaps or [0.0]
