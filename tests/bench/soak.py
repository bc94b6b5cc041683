"""Soak test, run by hand: hosts' worth of supervisors, random worker kills, malformed input.

    python -m tests.bench.soak --minutes 10

For the whole run it submits counting tasks of random length, mixes in malformed stream
entries, and SIGKILLs a random worker every --kill-every seconds. Then it stops producing, waits
for the queue to drain and reports: tasks lost (never final), finished tasks run twice (a start
after a finish, or two finishes), tasks not done, messages left pending, dead letters.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from tests.support import Conf, Harness, RedisServer, poll, statuses

GROUP = "rag_flow_svr_task_broker"
MALFORMED = [
    {"other": "x"}, {"message": "{not json"}, {"message": "[1]"},
    {"message": '{"id": "zz"}'}, {"message": b"\xff\xfe"},
    {"message": '{"id": "%s", "task_type": "no_such_type"}' % ("a" * 32)},
]


def _workers(sups: list) -> list[int]:
    pids = []
    for sup in sups:
        try:
            pids += [c.pid for c in psutil.Process(sup.pid).children()]
        except psutil.NoSuchProcess:
            continue
    return pids


def _produce(h: Harness, r, stop: threading.Event, ids: list[str], bad: list[str],
             rate: float) -> None:
    client = h.client()
    rng = random.Random(1)
    last_bad = time.monotonic()
    while not stop.is_set():
        batch = [{"seconds": round(rng.expovariate(1 / 0.3), 3)} for _ in range(max(1, int(rate)))]
        try:
            ids += client.submit_many("count", batch)
            if time.monotonic() - last_bad > 5:
                last_bad = time.monotonic()
                bad.append(r.xadd("te.0.common", rng.choice(MALFORMED)).decode())
        except Exception as exc:  # the producer rides out what the workers ride out
            print(f"producer: {exc}", file=sys.stderr)
        stop.wait(1.0)


def _kill(sups: list, stop: threading.Event, every_s: float, kills: list[int]) -> None:
    rng = random.Random(2)
    while not stop.wait(every_s):
        pids = _workers(sups)
        if pids:
            victim = rng.choice(pids)
            try:
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)
            except ProcessLookupError:
                pass


def _runs(r, task_id: str) -> list[str]:
    return [e.decode().split()[0] for e in r.lrange(f"test:runs:{task_id}", 0, -1)]


def report(r, ids: list[str], bad: list[str], kills: list[int], seconds: float) -> dict:
    st = statuses(r, ids)
    twice = 0
    interrupted = 0
    for t in ids:
        events = _runs(r, t)
        if events.count("finish") > 1 or ("finish" in events and
                                          "start" in events[events.index("finish"):]):
            twice += 1
        if events.count("start") > 1:
            interrupted += 1
    try:
        pending = int(r.xpending("te.0.common", GROUP)["pending"])
    except Exception:
        pending = -1
    dead = r.xlen("te.dead.common") if r.exists("te.dead.common") else 0
    return {"seconds": round(seconds), "submitted": len(ids), "done": st.count("done"),
            "lost": sum(1 for s in st if s not in ("done", "failed", "cancelled", "dead")),
            "not_done": sum(1 for s in st if s != "done"), "finished_run_twice": twice,
            "rerun_after_kill": interrupted, "pending": pending, "malformed": len(bad),
            "dead_letters": dead, "workers_killed": len(kills)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=20)
    ap.add_argument("--rate", type=float, default=20, help="tasks submitted per second")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="taskexec-soak-"))
    server = RedisServer(tmp / "redis").start()
    h = Harness(tmp, Conf(tmp / "conf", server.url), server)
    r = server.client()
    ids: list[str] = []
    bad: list[str] = []
    kills: list[int] = []
    started = time.monotonic()
    try:
        sups = [h.start("run", "--host-id", f"soak{i}", "--procs", str(args.procs),
                        "--threads", str(args.threads)) for i in range(args.hosts)]
        stop = threading.Event()
        threads = [threading.Thread(target=_produce, args=(h, r, stop, ids, bad, args.rate)),
                   threading.Thread(target=_kill, args=(sups, stop, args.kill_every, kills))]
        for t in threads:
            t.start()
        deadline = started + args.minutes * 60
        while time.monotonic() < deadline:
            time.sleep(min(30, max(0.1, deadline - time.monotonic())))  # ok: the soak's clock
            done = statuses(r, ids).count("done")
            print(f"{time.monotonic() - started:6.0f} s: {len(ids)} submitted, {done} done, "
                  f"{len(kills)} workers killed", flush=True)
        stop.set()
        for t in threads:
            t.join()
        try:
            poll(lambda: all(s in ("done", "failed", "cancelled", "dead")
                             for s in statuses(r, ids)), 180, 1.0, "drain")
            poll(lambda: int(r.xpending("te.0.common", GROUP)["pending"]) == 0, 60, 1.0,
                 "nothing pending")
        except AssertionError as exc:
            print(f"soak: {exc}", file=sys.stderr)
        result = report(r, ids, bad, kills, time.monotonic() - started)
        for key, value in result.items():
            print(f"{key:>20}: {value}")
        ok = result["lost"] == 0 and result["finished_run_twice"] == 0 and \
            result["pending"] == 0 and result["not_done"] == 0
        print("soak: PASS" if ok else "soak: FAIL")
        return 0 if ok else 1
    finally:
        h.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
