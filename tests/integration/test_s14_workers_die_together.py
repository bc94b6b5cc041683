"""S14: workers dying together are all reaped; tasks' own subprocesses are theirs to wait for."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.support import poll, statuses
from tests.support_proc import (
    beating,
    log_lines,
    wait_exit,
    with_proc_handlers,
    workers_by_slot,
    zombies,
)

pytestmark = pytest.mark.timeout(60)


def test_s14_all_dead_workers_reaped_and_respawned_once(harness, redis_server) -> None:
    with_proc_handlers(harness.conf)
    sup = harness.start("run", "--procs", "4", "--threads", "2")
    r = redis_server.client()
    beating(r, 4, 20)
    before = poll(lambda: (lambda w: w if len(w) == 4 else None)(workers_by_slot(sup.pid)), 5)
    spawns = len(log_lines(sup, "Spawned worker"))
    subprocess.run(["kill", "-9", *map(str, before.values())], check=True)

    def settled():
        now = workers_by_slot(sup.pid)
        fresh = len(now) == 4 and not set(now.values()) & set(before.values())
        return fresh and not zombies(sup.pid)
    poll(settled, 2, 0.02, "four new workers and no defunct child")
    beating(r, 4, 5)
    assert len(log_lines(sup, "Spawned worker")) - spawns == 4

    client = harness.client()
    code3 = client.submit("subprocess_exit3")
    many = client.submit("subprocess_many")
    poll(lambda: statuses(r, [code3, many]) == ["done", "done"], 20, 0.1, "subprocess tasks")
    assert client.status(code3)["result"] == {"code": 3}
    assert client.status(many)["result"] == {"ok": 20}
    assert len(log_lines(sup, "Spawned worker")) - spawns == 4, "no worker died of them"
    assert not log_lines(sup, "not a worker"), "the supervisor reaped nobody else's child"
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
