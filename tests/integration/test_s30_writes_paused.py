"""S30: writes paused (CLIENT PAUSE WRITE) while four tasks report progress.

Scaled: tasks report every 0.5 s for 12 s (not 30), the pause starts at t = 3 s and lasts 6 s
(not 5 s and 20 s); `heartbeat.timeout_s` stays 30, `cleanup.lock_ttl_s` is 4 so the lock's
lifetime after the pause can be watched.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from tests.delivery_support import start_count
from tests.redis_support import HANDLERS, log_lines, safe, wait_until, worker_pids
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)

PAUSE_S = 6.0
LOCK_TTL_S = 4.0


class Watch(threading.Thread):
    """Samples (with reads only, which the pause lets through) what the scenario checks."""

    def __init__(self, r, ids):
        super().__init__(daemon=True)
        self.r, self.ids = r, ids
        self.stop = threading.Event()
        self.progress: dict[str, list[float]] = {t: [] for t in ids}
        self.statuses: set[str] = set()
        self.locks: list[tuple[float, int]] = []  # (when, PTTL) of each sighting of the lock
        self.registry: list[int] = []

    def run(self):
        while not self.stop.is_set():
            safe(self._sample)
            self.stop.wait(0.1)

    def _sample(self):
        pipe = self.r.pipeline(transaction=False)
        for t in self.ids:
            pipe.hmget(f"te:task:{t}", "status", "progress")
        pipe.pttl("clean_task_executor")
        pipe.scard("TASKEXE")
        *records, pttl, members = pipe.execute()
        for t, (status, progress) in zip(self.ids, records, strict=True):
            self.statuses.add((status or b"missing").decode())
            if progress:
                self.progress[t].append(float(progress))
        if pttl != -2:  # -2: no lock
            self.locks.append((time.monotonic(), pttl))
        self.registry.append(members)


def _when(line_time: str) -> float:
    return datetime.strptime(line_time, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_s30_paused_writes_delay_but_never_fail_or_take_over(harness, conf, redis_server):
    conf.update(handlers=HANDLERS, heartbeat={"timeout_s": 30},
                cleanup={"lock_ttl_s": LOCK_TTL_S})
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 30, 0.1, "two workers heartbeat")
    pids = worker_pids(sup.pid)
    ids = harness.client().submit_many("reporter", [{"seconds": 12, "every_s": 0.5}] * 4)
    watch = Watch(redis_server.client(), ids)
    watch.start()
    t0 = time.monotonic()
    poll(lambda: statuses(r, ids) == ["running"] * 4, 10, 0.05, "four tasks running")
    wait_until(t0 + 3)  # the scenario's t = 5 s, scaled
    r.execute_command("CLIENT", "PAUSE", int(PAUSE_S * 1000), "WRITE")
    paused_at = time.monotonic()
    ended_wall = time.time() + PAUSE_S
    try:
        poll(lambda: statuses(r, ids) == ["done"] * 4, 40, 0.2, "all four done")
    finally:
        watch.stop.set()
        watch.join(5)
    ended = paused_at + PAUSE_S

    assert watch.statuses <= {"queued", "running", "done"}, watch.statuses
    for t in ids:
        seen = watch.progress[t]
        assert seen == sorted(seen), ("progress went backwards", t, seen)
        assert float(r.hget(f"te:task:{t}", "progress")) == 1
        assert start_count(r, t) == 1, "no task ran twice or was taken over"
        msg = r.hget(f"te:task:{t}", "progress_msg").decode()
        late = [line for line in msg.splitlines() if "step" in line and
                datetime.strptime(time.strftime("%Y-%m-%d ") + line[:8], "%Y-%m-%d %H:%M:%S")
                .timestamp() >= ended_wall]
        assert late, ("progress made after the pause is recorded", msg)
    assert worker_pids(sup.pid) == pids, "no worker was killed"
    assert min(watch.registry) == 2, "no executor left TASKEXE"
    # The lock always has a TTL, and one held through the pause ends within its TTL after it.
    assert all(0 < pttl <= LOCK_TTL_S * 1000 for _, pttl in watch.locks), watch.locks
    for at, pttl in watch.locks:
        if paused_at <= at <= ended:
            assert at + pttl / 1000 <= ended + LOCK_TTL_S + 0.5, ("lock outlived its TTL", at)

    err = sup.stderr
    assert "looks dead" not in err and "Took over" not in err and "was killed" not in err
    # Heartbeats and clean-up passes run again within one interval (1 s, 2 s) of the pause.
    # (Takeover scans belong to the consume loop, which scans only with a free thread: here
    # all four are busy from before the pause to the end, so there is none to watch.)
    for hb_key in heartbeats(r):
        scores = [s for _, s in r.zrange(hb_key, 0, -1, withscores=True)]
        server_end = ended_wall
        assert min((s for s in scores if s >= server_end), default=1e18) <= server_end + 1 + 0.5
    passes = [_when(m.string[:23]) for m in log_lines(err, "INFO") if "Cleanup pass" in m["msg"]]
    assert min((p for p in passes if p >= ended_wall), default=1e18) <= ended_wall + 2 + 0.5
