"""S1: work queued before the first worker starts is delivered once."""

import time

import pytest

from tests.delivery_support import start_count, start_host
from tests.support import poll, statuses

pytestmark = pytest.mark.timeout(90)


def test_s1_work_queued_before_any_worker_is_delivered_once(harness, redis_server):
    r = redis_server.client()
    assert not r.keys("te.*")
    jsonl = harness.tmp / "t.jsonl"
    jsonl.write_text('{"seconds": 0.1}\n' * 5)
    res = harness.cli("submit", "count", "--jsonl", str(jsonl))
    assert res.returncode == 0, res.stderr
    ids = res.stdout.decode().split()
    t0 = time.monotonic()
    hosts = [start_host(harness, f"h{i}", 4, 1) for i in (1, 2, 3)]
    assert time.monotonic() - t0 < 0.2
    poll(lambda: statuses(r, ids) == ["done"] * 5, 60, 0.1, "5 tasks done")
    assert [start_count(r, t) for t in ids] == [1] * 5
    for stream in ("te.0.common", "te.1.common"):
        assert [g["name"] for g in r.xinfo_groups(stream)] == [b"rag_flow_svr_task_broker"]
    poll(lambda: sum(h.stderr.count("Spawned worker") for h in hosts) == 12, 20,
         message="12 spawns logged")
    for h in hosts:
        err = h.stderr
        assert "BUSYGROUP" not in err and "Traceback" not in err
        assert "was killed" not in err and "exited with status" not in err
