"""S12: failing tasks never leak a thread slot."""

import random

import pytest

from tests.delivery_support import field, pending, with_handlers
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s12_failures_free_their_slots(harness, redis_server):
    with_handlers(harness)
    sup = harness.start("run", "--procs", "1", "--threads", "4")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    pid = next(iter(heartbeats(r).values()))["pid"]
    kinds = ["fail"] * 300 + ["raise_exit"] * 10 + ["raise_interrupt"] * 10 + ["noop"] * 680
    random.Random(12).shuffle(kinds)
    client = harness.client()
    ids = [client.submit(k) for k in kinds]
    poll(lambda: all(s in ("done", "failed") for s in statuses(r, ids)), 60, 0.2, "all final")
    st = statuses(r, ids)
    assert st.count("done") == 680 and st.count("failed") == 320
    for t, k in zip(ids, kinds, strict=True):
        if k == "fail":
            assert field(r, t, "error").startswith("TaskFailed: this task fails on purpose")
        elif k == "raise_exit":
            assert field(r, t, "error").splitlines()[0] == "SystemExit: 7"
        elif k == "raise_interrupt":
            assert field(r, t, "error").splitlines()[0] == "KeyboardInterrupt: stop"
            assert "delivery_handlers.py" in field(r, t, "error"), "where it failed"
    assert "Traceback" in sup.stderr
    poll(lambda: next(iter(heartbeats(r).values()))["busy"] == 0, 5, message="busy 0")
    assert next(iter(heartbeats(r).values()))["pid"] == pid
    finished = sorted(float(field(r, t, "finished_at")) for t in ids)
    first = finished[99] - finished[0]
    last = finished[-1] - finished[-100]
    assert last <= 2 * first + 0.05, (first, last)
    assert pending(r) == 0
