"""S31: the server turns read-only (a demoted primary) and is promoted again.

Scaled: the producer submits 5 tasks a second for 13 s (not 40); the server is a replica of a
primary that never answers (`REPLICAOF 127.0.0.1 1`) from t = 3 s to t = 8 s (not 10-25 s).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.redis_support import pending, tracebacks, wait_until, warnings_per_second, worker_pids
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)

RUN_S, RO_AT, RW_AT = 13.0, 3.0, 8.0


class Producer(threading.Thread):
    """Submits a `sleep` task every 0.2 s; keeps what was accepted and when."""

    def __init__(self, client, until: float):
        super().__init__(daemon=True)
        self.client, self.until = client, until
        self.accepted: list[tuple[float, str]] = []
        self.refused: list[tuple[float, str]] = []

    def run(self):
        tick = time.monotonic()
        while tick < self.until:
            try:
                self.accepted.append((time.monotonic(), self.client.submit(
                    "sleep", {"seconds": 0.2})))
            except Exception as exc:  # refused while read-only: counted, not fatal
                self.refused.append((time.monotonic(), type(exc).__name__))
            tick += 0.2
            time.sleep(max(0.0, tick - time.monotonic()))  # the producer's pace (5 a second)


def test_s31_read_only_server_is_an_outage_not_a_failure(harness, redis_server):
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 30, 0.1, "two workers heartbeat")
    workers = worker_pids(sup.pid)
    t0 = time.monotonic()
    producer = Producer(harness.client(), t0 + RUN_S)
    producer.start()
    wait_until(t0 + RO_AT)  # the scenario's timeline
    r.execute_command("REPLICAOF", "127.0.0.1", "1")
    ro_at = time.monotonic()
    poll(lambda: r.info("replication")["role"] == "slave", 5, 0.05, "read-only")
    cli = harness.cli("submit", "sleep", "--data", '{"seconds": 0.1}', timeout=30)
    assert cli.returncode == 5, cli
    lines = [line for line in cli.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "Redis unavailable" in lines[0], lines
    wait_until(t0 + RW_AT)
    r.execute_command("REPLICAOF", "NO", "ONE")
    rw_at = time.monotonic()
    promoted = harness.client().submit("sleep", {"seconds": 0.1})
    poll(lambda: statuses(r, [promoted]) == ["done"], 5, 0.05,
         "consumption resumes within 5 s of the promotion")
    producer.join(RUN_S + 10)

    outside = [t for at, t in producer.accepted if at < ro_at or at > rw_at]
    ids = [t for _, t in producer.accepted]
    assert len(outside) >= 5 * (RUN_S - (RW_AT - RO_AT)) * 0.8, "the producer kept going"
    assert all(ro_at <= at <= rw_at + 1 for at, _ in producer.refused), producer.refused
    poll(lambda: all(s == "done" for s in statuses(r, outside)), 20, 0.2, "outside tasks done")
    assert "failed" not in statuses(r, ids)
    poll(lambda: pending(r) == 0, 10, 0.1, "XPENDING 0 within 10 s")
    assert worker_pids(sup.pid) == workers, "no worker died"
    err = sup.stderr
    assert warnings_per_second(err, workers) <= 1, err
    # The supervisor's duties (its host id claim, the workers' heartbeats) met one outage.
    sup_warnings = [line for line in err.splitlines()
                    if f"WARNING supervisor[{sup.pid}]" in line]
    assert len(sup_warnings) == 1 and "Redis unavailable" in sup_warnings[0], sup_warnings
    assert f"INFO supervisor[{sup.pid}] taskexec.supervisor: Supervisor: Redis answers again" \
        in err, err
    assert not tracebacks(err), err
