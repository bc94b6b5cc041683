"""S4: a vanished host's messages are taken over by a live host."""

import time

import pytest

from tests.delivery_support import field, kill_host, pending, start_count, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)


def test_s4_dead_host_messages_move_to_live_host(harness, redis_server):
    r = redis_server.client()
    h1 = start_host(harness, "h1", 1, 3)
    poll(lambda: len(heartbeats(r)) == 1, 20, message="h1 up")
    h1_consumer = next(iter(heartbeats(r)))
    client = harness.client()
    ids = [client.submit("count", {"seconds": 8}) for _ in range(3)]
    poll(lambda: statuses(r, ids) == ["running"] * 3, 15, message="h1 runs the 3 tasks")
    h2 = start_host(harness, "h2", 1, 3)
    poll(lambda: len(heartbeats(r)) == 2, 20, message="h2 up and idle")
    h2_consumer = next(n for n, hb in heartbeats(r).items() if hb["host"] == "h2")
    r.delete("te.1.common")
    r.set("te.1.common", "not a stream")
    killed = time.monotonic()
    kill_host(h1)
    poll(lambda: all(start_count(r, t) == 2 for t in ids), 5 + 2 + 3, 0.1,
         "h2 starts all 3 within timeout + interval + 3 s")
    assert time.monotonic() - killed <= 10.5
    poll(lambda: statuses(r, ids) == ["done"] * 3, 20, 0.1, "taken-over tasks done")
    assert all(field(r, t, "consumer") == h2_consumer for t in ids)
    assert pending(r) == 0
    poll(lambda: h1_consumer.encode() not in r.smembers("TASKEXE"), 10, message="h1 deregistered")
    poll(lambda: not r.exists(h1_consumer), 10, message="h1 heartbeat zset deleted")
    consumers = [c["name"].decode() for c in r.xinfo_consumers("te.0.common",
                                                                "rag_flow_svr_task_broker")]
    assert h1_consumer not in consumers
    err = h2.stderr
    assert "te.1.common" in err and "ERROR" in err
