"""S51: messages whose task record is gone."""

import time

import pytest

from tests.delivery_support import pending, start_count, with_handlers
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s51_missing_records_are_dead_lettered_or_stop_the_run(harness, redis_server):
    with_handlers(harness)
    sup = harness.start("run", "--procs", "1", "--threads", "1")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    pid = next(iter(heartbeats(r).values()))["pid"]
    client = harness.client()
    busy = client.submit("sleep", {"seconds": 1})
    poll(lambda: statuses(r, [busy]) == ["running"], 10, message="slot busy")
    t = client.submit("count")
    r.delete(f"te:task:{t}")
    noops = client.submit_many("noop", [{}] * 10)
    poll(lambda: statuses(r, noops) == ["done"] * 10, 20, 0.1, "noop done")
    dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange("te.dead.common")]
    assert [d["task_id"] for d in dead] == [t] and "missing" in dead[0]["reason"]
    assert sum(1 for line in sup.stderr.splitlines() if "WARNING" in line and t in line) == 1
    assert start_count(r, t) == 0
    assert harness.cli("status", t).returncode == 3
    # A running task whose record is deleted stops at its next progress report.
    steps = client.submit("steps", {"n": 20, "step_s": 0.5})
    poll(lambda: statuses(r, [steps]) == ["running"], 10, message="steps running")
    r.delete(f"te:task:{steps}")
    deleted = time.monotonic()
    poll(lambda: next(iter(heartbeats(r).values()))["busy"] == 0 and pending(r) == 0, 5, 0.05,
         "the run stopped and its message was acknowledged")
    assert time.monotonic() - deleted < 2
    time.sleep(2)  # ok: watching that the record does not come back
    assert not r.exists(f"te:task:{steps}")
    assert next(iter(heartbeats(r).values()))["pid"] == pid
