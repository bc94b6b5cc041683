"""S11: a finished task stays finished when Redis hiccups at completion."""

import threading
import time

import pytest
import redis

from tests.delivery_support import pending, runs
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(150)


def _safe(fn, default=None):
    try:
        return fn()
    except (redis.ConnectionError, redis.TimeoutError):
        return default


def test_s11_pauses_and_killed_clients_never_fail_a_task(harness, redis_server):
    sup = harness.start("run", "--procs", "1", "--threads", "4")
    r = redis_server.client()
    poll(lambda: _safe(lambda: heartbeats(r)), 20, message="worker up")
    pid = next(iter(heartbeats(r).values()))["pid"]
    ids = harness.client().submit_many("count", [{"seconds": 0.05}] * 300)
    stop = threading.Event()
    seen: dict[str, set] = {}
    admin = redis_server.client()

    def disturb():
        n = 0
        while not stop.is_set():
            _safe(lambda: admin.execute_command("CLIENT", "PAUSE", 300, "WRITE"))
            if n % 3 == 2:
                _safe(lambda: admin.execute_command("CLIENT", "KILL", "TYPE", "normal"))
            n += 1
            stop.wait(1.0)

    def watch():
        while not stop.is_set():
            for t, s in zip(ids, _safe(lambda: statuses(r, ids), []), strict=False):
                seen.setdefault(t, set()).add(s)
            stop.wait(0.2)

    threads = [threading.Thread(target=disturb), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    try:
        poll(lambda: _safe(lambda: statuses(r, ids).count("done") == 300), 90, 0.3, "300 done")
    finally:
        stop.set()
        for t in threads:
            t.join()
    ended = time.monotonic()
    assert not any(s & {"failed", "dead"} for s in seen.values())
    poll(lambda: pending(r) == 0, 10, 0.1, "XPENDING 0 after the disturbance")
    assert time.monotonic() - ended < 10
    assert not r.exists("te.dead.common") or r.xlen("te.dead.common") == 0
    finished = {t: float(r.hget(f"te:task:{t}", "finished_at")) for t in ids}
    # Cleanup keeps running: nothing changes after done.
    snapshot = {t: r.hgetall(f"te:task:{t}") for t in ids}
    time.sleep(4)  # ok: watching that nothing changes while cleanup passes run
    assert snapshot == {t: r.hgetall(f"te:task:{t}") for t in ids}
    for t in ids:
        starts = [at for e, at, _ in runs(r, t) if e == "start"]
        assert starts and all(at < finished[t] for at in starts), "no start after done"
        assert float(r.hget(f"te:task:{t}", "progress")) == 1
    assert next(iter(heartbeats(r).values()))["pid"] == pid
    assert "was killed" not in sup.stderr and "exited with" not in sup.stderr
