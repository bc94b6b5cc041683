"""Helpers for the delivery scenario tests: hosts, kills, and what the counting handler saw."""

from __future__ import annotations

import os
import signal
from typing import Any

import psutil
import redis

from tests.delivery_handlers import HANDLERS
from tests.support import Harness, Proc, heartbeats, poll

GROUP = "rag_flow_svr_task_broker"


def with_handlers(h: Harness, **sections: Any) -> None:
    h.conf.update(handlers=HANDLERS, **sections)


def start_host(h: Harness, host: str, procs: int = 1, threads: int | None = 1, *extra: str,
               env: dict[str, str] | None = None) -> Proc:
    """`taskexec run` as host `host`; threads None leaves executor.threads to configuration."""
    flags = ["--threads", str(threads)] if threads is not None else []
    return h.start("run", "--host-id", host, "--procs", str(procs), *flags, *extra, env=env)


def wait_workers(r: redis.Redis, host: str, n: int, timeout: float = 20) -> list[dict]:
    def ready() -> list[dict]:
        hbs = [hb for hb in heartbeats(r).values() if hb["host"] == host]
        return hbs if len(hbs) >= n else []

    return poll(ready, timeout, message=f"{n} worker(s) of {host} heartbeat")


def kill_host(proc: Proc) -> None:
    """SIGKILL the supervisor and all its workers in the same instant."""
    pids = [proc.pid]
    try:
        pids += [c.pid for c in psutil.Process(proc.pid).children()]
    except psutil.NoSuchProcess:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


def runs(r: redis.Redis, task_id: str) -> list[tuple[str, float, int]]:
    """(event, time, pid) for each start and finish the counting handler recorded."""
    out = []
    for raw in r.lrange(f"test:runs:{task_id}", 0, -1):
        event, at, pid = raw.decode().split()
        out.append((event, float(at), int(pid)))
    return out


def start_count(r: redis.Redis, task_id: str) -> int:
    return sum(1 for e, _, _ in runs(r, task_id) if e == "start")


def pending(r: redis.Redis, stream: str = "te.0.common") -> int:
    try:
        return int(r.xpending(stream, GROUP)["pending"])
    except redis.ResponseError:
        return 0


def pending_by_consumer(r: redis.Redis, stream: str = "te.0.common") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in r.xpending_range(stream, GROUP, "-", "+", 1000):
        out.setdefault(row["consumer"].decode(), []).append(row)
    return out


def field(r: redis.Redis, task_id: str, name: str) -> str:
    value = r.hget(f"te:task:{task_id}", name)
    return value.decode() if value is not None else ""
