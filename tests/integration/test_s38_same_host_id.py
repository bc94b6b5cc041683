"""S38: two supervisors with the same host id: the second refuses while the first lives, and
starts at once, taking over the first one's messages, after it died."""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from tests.delivery_support import kill_host, runs
from tests.support import poll, statuses
from tests.support_proc import beating, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(60)


def test_s38_second_supervisor_of_a_host_id(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, heartbeat={"timeout_s": 30})  # only the restart helps
    r = redis_server.client()
    a = harness.start("run", "--host-id", "h1", "--procs", "2", "--threads", "1")
    beating(r, 2, 20, host="h1")
    ids = harness.client().submit_many("count", [{"seconds": 3}] * 2)
    poll(lambda: statuses(r, ids) == ["running"] * 2, 10, 0.05, "both tasks running on A")
    before = workers_by_slot(a.pid)

    second = harness.start("run", "--host-id", "h1", "--procs", "2")
    code, took = wait_exit(second, 10)
    assert code == 2 and took < 10
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "host id h1 is in use by a live supervisor" in lines[0] \
        and f"pid {a.pid}" in lines[0], lines
    assert workers_by_slot(a.pid) == before and a.proc.poll() is None, "A is undisturbed"

    kill_host(a)
    killed_at = time.time()
    b = harness.start("run", "--host-id", "h1", "--procs", "2", "--threads", "1")
    for task_id in ids:
        again = poll(lambda t=task_id: [x for x in runs(r, t) if x[0] == "start"][1:], 10,
                     0.05, "the task taken over by the new supervisor")
        assert again[0][1] - killed_at < 5, "at once, not after heartbeat.timeout_s"
    poll(lambda: statuses(r, ids) == ["done"] * 2, 15, 0.1, "both tasks done")
    assert b.proc.poll() is None
    b.send(signal.SIGTERM)
    assert wait_exit(b, 15)[0] == 0


def test_s38_claim_renewed_from_another_machine_refuses_too(harness, redis_server) -> None:
    """A supervisor of h2 on another machine (its claim written as that machine would)."""
    r = redis_server.client()
    other = {"machine": "another-machine-id/otherbox", "boot": "b", "hostname": "otherbox",
             "pid": 4242, "started": 1.0}
    r.set("TASKEXE:host:h2", orjson.dumps(other), px=30_000)
    res = harness.cli("run", "--host-id", "h2", "--procs", "1", timeout=20)
    assert res.returncode == 2
    err = res.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "in use by a live supervisor on otherbox" in err, err
    r.delete("TASKEXE:host:h2")  # its claim lapsed: the host id is free again
    sup = harness.start("run", "--host-id", "h2", "--procs", "1")
    beating(r, 1, 20, host="h2")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
