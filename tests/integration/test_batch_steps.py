"""Tasks are begun and ended in batches: one bad record fails its own task, never its batch."""

import signal

import pytest

from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)


def dead_reasons(r, queue: str = "common") -> dict[str, str]:
    return {f[b"task_id"].decode(): f[b"reason"].decode()
            for _, f in r.xrange(f"te.dead.{queue}")}


def pending(r, stream: str = "te.0.common") -> int:
    return int(r.xpending(stream, "rag_flow_svr_task_broker")["pending"])


def test_a_record_of_the_wrong_type_fails_only_its_own_begin(harness, redis_server) -> None:
    r = redis_server.client()
    client = harness.client()
    ids = client.submit_many("noop", [{}] * 6)
    # Queued before any worker runs, so all six are read and begun in one batch.
    r.delete(f"te:task:{ids[2]}")
    r.rpush(f"te:task:{ids[2]}", "not a hash")
    sup = harness.start("run", "--procs", "1", "--threads", "8")
    others = ids[:2] + ids[3:]
    poll(lambda: statuses(r, others) == ["done"] * 5, 20, message="the other tasks done")
    poll(lambda: ids[2] in dead_reasons(r), 10, message="the bad one dead-lettered")
    assert "cannot begin task" in dead_reasons(r)[ids[2]]
    assert "WRONGTYPE" in dead_reasons(r)[ids[2]]
    poll(lambda: pending(r) == 0, 10, message="nothing left pending")
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0


def test_a_record_of_the_wrong_type_fails_only_its_own_finish(harness, redis_server) -> None:
    r = redis_server.client()
    sup = harness.start("run", "--procs", "1", "--threads", "4")
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    ids = client.submit_many("sleep", [{"seconds": 1.0}] * 4)
    poll(lambda: statuses(r, ids) == ["running"] * 4, 10, 0.02, "all four running")
    r.delete(f"te:task:{ids[1]}")
    r.rpush(f"te:task:{ids[1]}", "not a hash")
    others = ids[:1] + ids[2:]
    poll(lambda: statuses(r, others) == ["done"] * 3, 10, message="the other runs ended")
    # Its message stayed pending, was delivered again, and its begin dead-lettered it.
    poll(lambda: ids[1] in dead_reasons(r), 30, 0.1, "the bad one dead-lettered")
    assert "WRONGTYPE" in dead_reasons(r)[ids[1]]
    poll(lambda: pending(r) == 0, 10, message="nothing left pending")
    assert "final status done not written" in sup.stderr
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0
