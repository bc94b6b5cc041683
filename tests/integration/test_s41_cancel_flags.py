"""S41: cancel flags leave nothing behind."""

import pytest

from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s41_cancel_flags_have_ttls_and_go_when_final(harness, redis_server):
    harness.start("run", "--procs", "1", "--threads", "1")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    # (a) T waits behind a busy worker; a running task's flag has the TTL and goes when final.
    busy = client.submit("hang", {"seconds": 3})  # ignores the cancel until it returns
    poll(lambda: statuses(r, [busy]) == ["running"], 10, message="busy")
    t = client.submit("count")
    assert harness.cli("cancel", t).returncode == 0
    assert statuses(r, [t]) == ["cancelled"] and not r.exists(f"{t}-cancel")
    # A running task gets the flag, with store.cancel_ttl_s from the moment it is set.
    assert harness.cli("cancel", busy).returncode == 0
    assert 86400 - 5 <= r.ttl(f"{busy}-cancel") <= 86400
    poll(lambda: statuses(r, [busy, t]) == ["cancelled"] * 2, 5, message="both cancelled")
    poll(lambda: not r.exists(f"{busy}-cancel"), 5, message="flag deleted once final")
    assert not r.lrange(f"test:runs:{t}", 0, -1), "T never started"
    # (b) a finished task: exit 0, says so, stays done, no key.
    done = client.submit("noop")
    poll(lambda: statuses(r, [done]) == ["done"], 10, message="noop done")
    res = harness.cli("cancel", done)
    assert res.returncode == 0 and b"already finished" in res.stdout
    assert statuses(r, [done]) == ["done"] and not r.exists(f"{done}-cancel")
    # (c) an unknown id: exit 3, no key.
    assert harness.cli("cancel", "f" * 32).returncode == 3
    assert not r.exists("f" * 32 + "-cancel")
    # (d) 1000 queued tasks cancelled by flag, skipped: no flag left, none without a TTL.
    blocker = client.submit("sleep", {"seconds": 1})
    ids = client.submit_many("count", [{}] * 1000)
    pipe = r.pipeline()
    for i in ids:
        pipe.set(f"{i}-cancel", "x", ex=86400)
    pipe.execute()
    poll(lambda: statuses(r, ids) == ["cancelled"] * 1000, 30, 0.2, "all skipped")
    assert statuses(r, [blocker]) == ["done"]
    left = list(r.scan_iter("*-cancel"))
    assert all(r.ttl(k) > 0 for k in left)
    assert not left, left[:5]
