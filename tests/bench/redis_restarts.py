"""Redis restarted three times (AOF on) while counting tasks flow (issue 4), run by hand:

    python -m tests.bench.redis_restarts --tasks 2000

It starts a private redis-server with `appendonly yes`, `taskexec run`, submits the counting
tasks, and restarts the server (SHUTDOWN, down for --down-s, start on the same socket and AOF)
each time another quarter of them is done. It reports the figures and whether the outcome holds:
every task `done`, each run once except runs cut by a restart, nothing pending, no worker died.
The suite runs a smaller version (tests/integration/test_redis_restarts_flow.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.redis_support import (
    HANDLERS,
    aof_server,
    crash_restart,
    pending,
    restart,
    safe,
    warnings_per_second,
    worker_pids,
)
from tests.support import Conf, Harness, heartbeats, poll, statuses

SLACK_S = 1.0  # a run counts as cut by a restart when it overlaps the outage within this


@dataclass
class Figures:
    tasks: int
    procs: int
    threads: int
    task_seconds: float
    restarts: list[dict[str, float]] = field(default_factory=list)  # at done count, downtime
    seconds: float = 0.0
    tasks_per_second: float = 0.0
    done: int = 0
    not_done: int = 0
    pending: int = 0
    kill: bool = False  # SIGKILL instead of SHUTDOWN
    fsync: str = "everysec"
    running_at_restarts: int = 0  # tasks whose run overlapped an outage
    run_twice: int = 0
    run_twice_outside_restarts: int = 0
    never_started: int = 0
    workers_died: bool = False
    worker_warnings_max_per_second: int = 0
    ok: bool = False


def _done(r: Any, ids: list[str]) -> int:
    return safe(lambda: statuses(r, ids).count("done"), 0)


def _runs(r: Any, ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    pipe = r.pipeline(transaction=False)
    for t in ids:
        pipe.lrange(f"test:runs:{t}", 0, -1)
    out = {}
    for t, rows in zip(ids, pipe.execute(), strict=True):
        out[t] = [(e.decode().split()[0], float(e.decode().split()[1])) for e in rows]
    return out


def _judge(fig: Figures, runs: dict[str, list[tuple[str, float]]],
           outages: list[tuple[float, float]]) -> None:
    def cut(start: float, end: float, slack: float = SLACK_S) -> bool:
        return any(start <= b + slack and end >= a - slack for a, b in outages)

    for events in runs.values():
        starts = [at for e, at in events if e == "start"]
        finishes = [at for e, at in events if e == "finish"]
        if not starts:
            fig.never_started += 1
            continue
        spans = [(s, min([f for f in finishes if f >= s] or [1e18])) for s in starts]
        overlapped = any(cut(s, f) for s, f in spans)
        fig.running_at_restarts += any(cut(s, f, 0.0) for s, f in spans)
        if len(starts) > 1:
            fig.run_twice += 1
            fig.run_twice_outside_restarts += not overlapped


def run(folder: Path, tasks: int, procs: int = 2, threads: int = 4, seconds: float = 0.1,
        restarts: int = 3, down_s: float = 1.0, timeout_s: float = 600, kill: bool = False,
        fsync: str = "everysec") -> Figures:
    """One run; `folder` holds the server, the configuration and the logs."""
    server = aof_server(folder / "redis", "--appendfsync", fsync).start()
    conf = Conf(folder / "conf", server.url, handlers=HANDLERS)
    h = Harness(folder, conf, server)
    fig = Figures(tasks, procs, threads, seconds, kill=kill, fsync=fsync)
    try:
        sup = h.start("run", "--procs", str(procs), "--threads", str(threads))
        r = server.client()
        poll(lambda: len(heartbeats(r)) == procs, 60, 0.1, "workers heartbeat")
        workers = worker_pids(sup.pid)
        began = time.monotonic()
        ids = h.client().submit_many("count", [{"seconds": seconds}] * tasks)
        outages = []
        for k in range(1, restarts + 1):
            poll(lambda k=k, r=r: _done(r, ids) >= tasks * k / (restarts + 1), timeout_s, 0.05,
                 f"{k}/{restarts + 1} done")
            at_done = statuses(r, ids).count("done")
            down = time.time()
            r = crash_restart(server, down_s) if kill else restart(server, down_s)
            outages.append((down, time.time()))
            fig.restarts.append({"at_done": at_done, "down_s": round(time.time() - down, 2)})
        poll(lambda: _done(r, ids) == tasks, timeout_s, 0.2, "all done")
        fig.seconds = round(time.monotonic() - began, 1)
        fig.tasks_per_second = round(tasks / fig.seconds, 1)
        poll(lambda: pending(r) == 0, 10, 0.1, "nothing pending")
        final = statuses(r, ids)
        fig.done, fig.not_done, fig.pending = final.count("done"), tasks - final.count("done"), \
            pending(r)
        _judge(fig, _runs(r, ids), outages)
        fig.workers_died = worker_pids(sup.pid) != workers
        sup.send(signal.SIGTERM)
        sup.wait(60)
        fig.worker_warnings_max_per_second = warnings_per_second(sup.stderr, workers)
    finally:
        h.close()
        server.stop()
    fig.ok = (fig.done == tasks and fig.pending == 0 and fig.run_twice_outside_restarts == 0
              and not fig.workers_died and fig.never_started == 0)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--seconds", type=float, default=0.2, help="length of each counting task")
    p.add_argument("--restarts", type=int, default=3)
    p.add_argument("--down-s", type=float, default=1.0, help="how long Redis stays down")
    p.add_argument("--kill", action="store_true", help="SIGKILL the server, not SHUTDOWN")
    p.add_argument("--fsync", choices=("everysec", "always"), default="everysec",
                   help="appendfsync of the server")
    p.add_argument("--timeout-s", type=float, default=600, help="give up waiting after this")
    p.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="taskexec-restarts-"))
    fig = run(folder, args.tasks, args.procs, args.threads, args.seconds, args.restarts,
              args.down_s, args.timeout_s, args.kill, args.fsync)
    print(json.dumps(asdict(fig), indent=2))
    if args.keep:
        print(f"logs: {folder}", file=sys.stderr)
    return 0 if fig.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
