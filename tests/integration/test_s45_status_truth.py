"""S45: status, executors and queues tell the truth about waiting tasks and dead executors."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.support import Conf, Harness, child_pids, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(60)


def _json(harness: Harness, *args: str) -> Any:
    res = harness.cli(*args, "--json")
    assert res.returncode == 0, (args, res.stderr.decode())
    return json.loads(res.stdout)


def _rows(harness: Harness) -> dict[str, dict[str, Any]]:
    return {row["stream"]: row for row in _json(harness, "queues")}


def test_s45_status_executors_and_queues_before_and_after_a_host_dies(
        conf: Conf, harness: Harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "1", "--threads", "1", "--host-id", "h1")
    r = redis_server.client()
    ((consumer, _),) = poll(lambda: list(heartbeats(r).items()), 20, message="heartbeat")
    client = harness.client()
    sleeper = client.submit("sleep", {"seconds": 30})
    poll(lambda: statuses(r, [sleeper]) == ["running"], 10, message="the sleep task running")
    noops = [client.submit("noop") for _ in range(5)]
    text = harness.cli("status", sleeper).stdout.decode()
    assert "consumer_alive: True" in text, text
    rec = _json(harness, "status", noops[4])
    assert rec["status"] == "queued" and rec["ahead"] == 4
    assert rec["consumed"] is True and rec["live_consumers"] == [consumer]
    client.submit("noop", priority=1)  # will be read before every priority-0 message
    assert _json(harness, "status", noops[4])["ahead"] == 5
    poll(lambda: heartbeats(r)[consumer]["busy"] == 1, 5, message="a heartbeat since")
    (row,) = _json(harness, "executors")
    assert row["name"] == consumer and row["alive"] is True
    assert 0 <= row["heartbeat_age_s"] < 2 * conf.data["heartbeat"]["interval_s"] + 0.5
    assert row["host"] == "h1" and row["queues"] == ["common"] and row["busy"] == 1
    assert list(row["current"]) == [sleeper]
    rows = _rows(harness)
    low, high = rows["te.0.common"], rows["te.1.common"]
    assert (low["length"], low["lag"], low["pending"], low["consumers"]) == (6, 5, 1, 1)
    assert low["oldest_pending_s"] is not None and low["dead"] == 0
    assert (high["length"], high["lag"], high["pending"]) == (1, 1, 0)
    assert low["live_consumers"] == 1

    # Kill the host: the supervisor and its worker in the same instant.
    workers = child_pids(sup.pid)
    for pid in [sup.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    timeout = conf.data["heartbeat"]["timeout_s"]
    poll(lambda: time.monotonic() - killed_at >= timeout + 2, timeout + 5,
         message="heartbeat.timeout_s + 2 s after the kill")

    (row,) = _json(harness, "executors")
    assert row["name"] == consumer and row["alive"] is False
    assert row["heartbeat_age_s"] >= timeout
    rec = _json(harness, "status", noops[4])
    assert rec["status"] == "queued" and rec["consumed"] is False and rec["live_consumers"] == []
    assert rec["warning"] == "no live executor consumes queue common"
    text = harness.cli("status", noops[4])
    assert text.returncode == 0 and "no live executor consumes queue common" in text.stdout.decode()
    rec = _json(harness, "status", sleeper)
    assert rec["status"] == "running" and rec["consumer_alive"] is False
    assert "presumed dead" in rec["warning"]
    text = harness.cli("status", sleeper).stdout.decode()
    assert "consumer_alive: False" in text and "presumed dead" in text, text
    rows = _rows(harness)
    assert rows["te.0.common"]["pending"] == 1 and rows["te.0.common"]["live_consumers"] == 0
    for command in ("executors", "queues"):
        assert harness.cli(command).returncode == 0
