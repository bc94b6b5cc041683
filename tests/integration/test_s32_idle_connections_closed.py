"""S32: the server closes connections idle for 3 s (`timeout 3`, as a proxy would).

Scaled: each task works 6 s without touching Redis (not 20), one is submitted every 3 s for 6 s
(not every 10 s for 60 s): every task's connection has been closed by the server when it
reports progress and finishes. Heartbeats come every 4 s (not 1), so the heartbeat's own
connection is closed by the server between beats too.
"""

from __future__ import annotations

import time

import pytest

from tests.redis_support import HANDLERS, clients_named, log_lines, tracebacks, wait_until
from tests.support import Conf, Harness, RedisServer, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)

INTERVAL_S = 4


@pytest.fixture
def setup(tmp_path):
    server = RedisServer(tmp_path / "redis", args=("--timeout", "3")).start()
    conf = Conf(tmp_path / "conf", server.url, handlers=HANDLERS,
                heartbeat={"interval_s": INTERVAL_S, "timeout_s": 3 * INTERVAL_S})
    h = Harness(tmp_path, conf, server)
    yield server, h
    h.close()
    server.stop()


def test_s32_connections_closed_while_idle_are_replaced_quietly(setup):
    server, h = setup
    sup = h.start("run", "--procs", "1", "--threads", "2")
    r = server.client()
    poll(lambda: len(heartbeats(r)) == 1, 30, 0.1, "the worker heartbeats")
    client = h.client()
    opened: set[int] = set()
    t0 = time.monotonic()
    ids = []
    for n in range(3):
        wait_until(t0 + 3 * n)  # the scenario's timeline: one task every 3 s
        ids.append(client.submit("quiet", {"seconds": 6}))
    poll(lambda: opened.update(c["id"] for c in clients_named(r)) or
         statuses(r, ids) == ["done"] * 3, 30, 0.2, "every task done")
    # The server did close idle connections of the worker (they were replaced, not reused).
    assert opened - {c["id"] for c in clients_named(r)}, "no connection was closed"
    for t in ids:
        assert float(r.hget(f"te:task:{t}", "progress")) == 1
        assert b"worked without Redis" in r.hget(f"te:task:{t}", "progress_msg")

    (key,) = heartbeats(r)
    scores = [s for _, s in r.zrange(key, 0, -1, withscores=True)]
    gaps = [b - a for a, b in zip(scores, scores[1:], strict=False)]
    assert gaps and max(gaps) <= 2 * INTERVAL_S, gaps

    err = sup.stderr
    assert "ConnectionError" not in err and not tracebacks(err), err
    bad = [m.group(0) for m in log_lines(err) if m["level"] in ("WARNING", "ERROR")]
    assert not bad, bad
    passes = [m for m in log_lines(err, "INFO") if "Cleanup pass" in m["msg"]]
    assert len(passes) >= 2, "the clean-up lock is taken and released pass after pass"
