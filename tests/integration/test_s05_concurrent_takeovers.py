"""S5: concurrent takeovers never run one message twice at once."""

import signal

import pytest

from tests.delivery_support import kill_host, runs, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(150)


def _intervals(events):
    starts = [t for e, t, _ in events if e == "start"]
    finishes = [t for e, t, _ in events if e == "finish"]
    return starts, finishes


def test_s5_takeovers_never_overlap(harness, redis_server):
    harness.conf.update(cleanup={"interval_s": 1})
    r = redis_server.client()
    hosts = {h: start_host(harness, h, 1, 2) for h in ("h1", "h2", "h3")}
    poll(lambda: len(heartbeats(r)) == 3, 20, message="three hosts up")
    client = harness.client()
    ids = client.submit_many("count", [{"seconds": 1}] * 30)
    poll(lambda: statuses(r, ids).count("done") >= 2, 20, message="work under way")
    kill_host(hosts.pop("h1"))
    # Records still name h1 until a takeover, which waits heartbeat.timeout_s.
    running_on_h1 = {t for t in ids if statuses(r, [t]) == ["running"] and
                     b"_h1_" in (r.hget(f"te:task:{t}", "consumer") or b"")}
    more: list[str] = []
    for name in ("h2", "h3"):
        more += client.submit_many("count", [{"seconds": 1}] * (3 if name == "h2" else 2))
        hosts[name].send(signal.SIGTERM)
        assert hosts[name].wait(20) == 0
        hosts[name] = start_host(harness, name, 1, 2)
    every = ids + more
    poll(lambda: statuses(r, every) == ["done"] * 35, 90, 0.2, "all 35 done")
    for t in every:
        events = runs(r, t)
        starts, finishes = _intervals(events)
        assert 1 <= len(starts) <= 2, (t, events)
        if len(starts) == 2:
            assert t in running_on_h1, (t, events)
            # The first run either died with h1 (no finish) or ended before the second began.
            ordered = sorted(events, key=lambda e: e[1])
            assert ordered[0][0] == "start"
            if len(finishes) == 2:
                assert ordered[1][0] == "finish", ordered
    for stream in ("te.0.common", "te.1.common"):
        bodies = [f[b"message"] for _, f in r.xrange(stream)]
        assert len(bodies) == len(set(bodies)), "the stream never holds two entries for a task"
