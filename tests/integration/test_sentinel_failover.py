"""Sentinel failover while tasks run: one primary, one replica, three sentinels (issue 4).

The primary is killed (SIGKILL) while counting tasks run; the sentinels promote the replica;
the executor must be on the new primary within `down-after-milliseconds` + 10 s, and no task is
lost: every one submitted before and after ends `done`, nothing stays pending.
"""

from __future__ import annotations

import time

import pytest

from tests.redis_support import HANDLERS, SentinelSet, pending, safe, worker_pids
from tests.support import Conf, Harness, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)

DOWN_AFTER_MS = 1000


@pytest.fixture
def cluster(tmp_path):
    sset = SentinelSet(tmp_path / "sentinel", down_after_ms=DOWN_AFTER_MS).start()
    conf = Conf(tmp_path / "conf", None, handlers=HANDLERS,
                redis={"sentinel": {"master": sset.master, "nodes": sset.nodes}})
    h = Harness(tmp_path, conf, None)
    h.env["TASKEXEC_TEST_SENTINEL"] = ",".join(sset.nodes) + ";" + sset.master
    yield sset, h
    h.close()
    sset.stop()


def _on(r, since: float) -> int:
    """How many workers beat on this server by themselves (not their supervisor for them)
    after `since`."""
    beats = safe(lambda: heartbeats(r), {}) or {}
    fresh = 0
    for name in beats:
        last = safe(lambda name=name: r.zrange(name, -1, -1, withscores=True))
        if last and last[0][1] > since and b'"written_by"' not in last[0][0]:
            fresh += 1
    return fresh


def test_sentinel_failover_while_tasks_run_loses_nothing(cluster):
    sset, h = cluster
    sup = h.start("run", "--procs", "2", "--threads", "2")
    old, new = sset.primary.client(), sset.replica.client()
    poll(lambda: len(heartbeats(old)) == 2, 30, 0.1, "two workers heartbeat on the primary")
    workers = worker_pids(sup.pid)
    before = h.client().submit_many("scount", [{"seconds": 1.5}] * 20)
    poll(lambda: statuses(old, before).count("running") == 4, 15, 0.05, "four tasks running")
    old.execute_command("WAIT", 1, 2000)  # what ran so far is on the replica too
    killed = time.time()
    sset.primary.kill()

    poll(lambda: sset.primary_port() == sset.replica.port, DOWN_AFTER_MS / 1000 + 10, 0.1,
         "the sentinels promote the replica")
    poll(lambda: _on(new, killed) == 2, DOWN_AFTER_MS / 1000 + 10 - (time.time() - killed), 0.1,
         "both workers heartbeat on the new primary")
    assert time.time() - killed <= DOWN_AFTER_MS / 1000 + 10
    assert {c["name"] for c in new.client_list() if c["name"].startswith("task_executor_")}

    after = h.client().submit_many("scount", [{"seconds": 0.2}] * 10)
    poll(lambda: statuses(new, before + after) == ["done"] * 30, 40, 0.2, "all 30 done")
    poll(lambda: pending(new) == 0, 10, 0.1, "nothing pending")
    assert worker_pids(sup.pid) == workers, "no worker died"
    assert sup.proc.poll() is None

    # Back the other way by a manual failover: the serving primary is demoted while the
    # workers' connections to it stay open, so they meet READONLY and must move on.
    sset.primary.rejoin_as_replica_of(sset.replica.port)
    poll(lambda: safe(lambda: old.info("replication")["role"]) == "slave" and
         old.info("replication")["master_link_status"] == "up", 30, 0.1,
         "the old primary rejoins as a replica")
    poll(lambda: safe(lambda: int(sset.sentinels[0].client().sentinel_master(sset.master)
                                  ["num-slaves"])) == 1, 30, 0.1, "the sentinels see it")
    poll(sset.manual_failover, 20, 0.2, "a manual failover starts")
    poll(lambda: sset.primary_port() == sset.primary.port, 20, 0.1, "the old primary is back")
    moved = time.time()
    # Before the sentinels get round to demoting the other (up to 10 s): taskexec asks them.
    poll(lambda: _on(old, moved) == 2, 6, 0.1, "both workers heartbeat on it within 6 s")
    last = h.client().submit_many("scount", [{"seconds": 0.2}] * 10)
    poll(lambda: statuses(old, last) == ["done"] * 10, 20, 0.2, "10 more done")
    poll(lambda: pending(old) == 0, 10, 0.1, "nothing pending")
    assert worker_pids(sup.pid) == workers, "no worker died"
    assert "Traceback" not in sup.stderr, sup.stderr
