"""The crash scenario: SIGKILL of the busiest worker at 25% done; what was lost or run twice.

The `count` handler records each start and finish of a task id in Redis, so runs are counted
by the tasks themselves, not inferred from the records.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.bench.env import GROUP, STREAM, Bench, BenchError, Service, poll

GIVE_UP_S = 60.0  # after the kill: a task not done by then counts as lost


def done_count(bench: Bench, ids: list[str]) -> int:
    pipe = bench.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(f"te:task:{task_id}", "status")
    return sum(1 for s in pipe.execute() if s == b"done")


def busiest(bench: Bench) -> str:
    """The consumer holding the most unacknowledged messages."""
    summary = bench.r.xpending(STREAM, GROUP)
    consumers = summary.get("consumers") or []
    if not consumers:
        raise BenchError("no consumer holds a message at 25% done")
    top = max(consumers, key=lambda c: int(c["pending"]))
    name = top["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def kill_busiest(bench: Bench, svc: Service) -> tuple[str, float]:
    victim = busiest(bench)
    pid = int(victim.rsplit("_", 1)[1])
    if pid not in svc.worker_pids():
        raise BenchError(f"consumer {victim} is not a worker of this service")
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    return victim, killed_at


def crash(bench: Bench, n: int, seconds: float) -> dict[str, float]:
    bench.flush()
    ids = bench.client.submit_many("count", [{"seconds": seconds}] * n)
    task_of = {r["entry_id"]: task_id
               for task_id, r in zip(ids, bench.records(ids, "entry_id"), strict=True)}
    with bench.service(2, 4) as svc:
        svc.wait_booted()
        poll(lambda: done_count(bench, ids) >= n // 4, 60, 0.005, "25% of the tasks done")
        before = set(svc.first_heartbeats())
        victim, killed_at = kill_busiest(bench, svc)
        # Dead now: what it still holds is exactly what it held when it died.
        held = [task_of[p["message_id"].decode()] for p in bench.r.xpending_range(
            STREAM, GROUP, "-", "+", 1000, consumername=victim)]
        deadline = time.monotonic() + GIVE_UP_S
        while done_count(bench, ids) < n and time.monotonic() < deadline:
            time.sleep(0.01)  # ok: poll interval of the deadline loop above
        respawned = [t for c, t in svc.first_heartbeats().items() if c not in before]
    return analyse(bench, ids, held, killed_at, respawned)


def analyse(bench: Bench, ids: list[str], held: list[str], killed_at: float,
            respawned: list[float]) -> dict[str, Any]:
    recs = dict(zip(ids, bench.records(ids, "status", "finished_at"), strict=True))
    pipe = bench.r.pipeline(transaction=False)
    for task_id in ids:
        pipe.lrange(f"bench:runs:{task_id}", 0, -1)
    runs = dict(zip(ids, pipe.execute(), strict=True))
    lost = [t for t in ids if recs[t]["status"] != "done"]
    starts = {t: [float(e.split()[1]) for e in runs[t] if e.startswith(b"start")] for t in ids}
    twice = [t for t in ids if len(starts[t]) > 1]
    after_done = [t for t in ids if recs[t]["finished_at"]
                  and any(s > float(recs[t]["finished_at"]) for s in starts[t])]
    held_done = [float(recs[t]["finished_at"]) for t in held if recs[t]["finished_at"]]
    recover = (max(held_done) - killed_at if len(held_done) == len(held) and held
               else float("inf"))
    return {
        "crash.lost": len(lost), "crash.rerun_after_done": len(after_done),
        "crash.started_twice": len(twice), "crash.held": len(held),
        "crash.recover_s": recover,
        "crash.respawn_s": min(respawned) - killed_at if respawned else float("inf"),
    }
