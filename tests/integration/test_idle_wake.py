"""A task that wakes an idle worker is begun in the round trip of the blocking read itself.

The begin after the read finds the read's messages among the worker's pending entries; these
tests check it takes each of them once, and only them, whatever else the worker holds.
"""

import json
import signal
import time

import pytest

from tests.delivery_support import field, pending, start_count
from tests.handlers import starts
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)

STREAM = "te.0.common"


def dead_reasons(r) -> dict[str, str]:
    return {f.get(b"task_id", b"").decode(): f[b"reason"].decode()
            for _, f in r.xrange("te.dead.common")}


def idle(r) -> bool:
    hbs = heartbeats(r)
    return bool(hbs) and all(hb["busy"] == 0 for hb in hbs.values())


def test_tasks_sent_one_at_a_time_to_a_busy_worker_each_run_once(harness, redis_server):
    """Long tasks refill their own slots from task threads while the loop waits in its
    blocking read; short tasks sent one by one are taken by either, never by both."""
    r = redis_server.client()
    sup = harness.start("run", "--procs", "1", "--threads", "8")
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    longs = client.submit_many("count", [{"seconds": 0.3}] * 2)
    shorts = []
    for _ in range(60):
        shorts.append(client.submit("count", {"seconds": 0.01}))
        if len(shorts) % 20 == 0:
            longs += client.submit_many("count", [{"seconds": 0.3}] * 2)
        time.sleep(0.01)  # ok: pacing, so each task meets the worker between reads
    ids = longs + shorts
    poll(lambda: statuses(r, ids) == ["done"] * len(ids), 30, 0.1, "all done")
    assert [start_count(r, t) for t in ids] == [1] * len(ids)
    assert [field(r, t, "retry_count") for t in ids] == ["1"] * len(ids)
    for t in ids:
        created, begun, finished = (float(field(r, t, k))
                                    for k in ("created_at", "begin_at", "finished_at"))
        assert created - 0.05 <= begun <= finished, (t, created, begun, finished)
    poll(lambda: pending(r) == 0, 10, message="nothing left pending")
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0


def test_what_an_idle_worker_is_woken_by_is_settled_at_once(harness, redis_server):
    """A message that cannot run, for a cancelled task, or with its record gone, wakes the
    blocking read like any other: each is acknowledged or dead-lettered, none left pending."""
    r = redis_server.client()
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    assert client.wait(client.submit("noop"), 10)["status"] == "done"
    poll(lambda: idle(r), 10, message="worker idle")

    r.xadd(STREAM, {"message": b"{not json"})
    poll(lambda: pending(r) == 0 and len(r.xrange("te.dead.common")) == 1, 10, 0.02,
         "the malformed message dead-lettered")

    unknown = json.dumps({"id": "unknown-type-1", "task_type": "no_such_type", "data": {}})
    r.xadd(STREAM, {"message": unknown})
    poll(lambda: "unknown-type-1" in dead_reasons(r), 10, 0.02, "unknown type dead-lettered")
    assert "unknown task type 'no_such_type'" in dead_reasons(r)["unknown-type-1"]

    # A record already cancelled: the begin acknowledges its message and runs nothing.
    cancelled = json.dumps({"id": "cancelled-1", "task_type": "noop", "data": {}})
    r.hset("te:task:cancelled-1", mapping={"id": "cancelled-1", "status": "cancelled"})
    r.xadd(STREAM, {"message": cancelled})
    gone = json.dumps({"id": "gone-1", "task_type": "noop", "data": {}})
    r.xadd(STREAM, {"message": gone})
    poll(lambda: "gone-1" in dead_reasons(r), 10, 0.02, "the message without record")
    assert "is missing" in dead_reasons(r)["gone-1"]
    poll(lambda: pending(r) == 0, 10, 0.02, "nothing left pending")
    assert r.hget("te:task:cancelled-1", "status") == b"cancelled"
    assert "cancelled-1" not in dead_reasons(r)

    # And the worker still runs what comes next, begun once.
    t = client.submit("noop")
    assert client.wait(t, 10)["status"] == "done"
    assert field(r, t, "retry_count") == "1"
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0


def test_a_task_that_wakes_the_worker_as_it_stops_still_runs(harness, redis_server):
    """The read that came with the stop has begun its task already: it runs in the drain."""
    r = redis_server.client()
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    sup.send(signal.SIGTERM)
    t = client.submit("count", {"seconds": 0.2})
    assert sup.wait(20) == 0
    # Either taken and run before the worker left, or left queued for the next one.
    status = statuses(r, [t])[0]
    assert (status, starts(r, t)) in (("done", 1), ("queued", 0)), status
    assert pending(r) == 0
