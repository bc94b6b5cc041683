"""HUP rereads the configuration and replaces the workers one at a time, losing no task and
never leaving a slot without a reading worker."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support import poll, statuses
from tests.support_proc import beating, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(60)


def test_hup_replaces_workers_one_at_a_time_without_losing_tasks(harness, redis_server) -> None:
    with_proc_handlers(harness.conf)
    sup = harness.start("run", "--procs", "2")
    r = redis_server.client()
    beating(r, 2, 20)
    before = workers_by_slot(sup.pid)
    ids = harness.client().submit_many("count", [{"seconds": 0.2}] * 80)
    poll(lambda: "running" in statuses(r, ids), 10, 0.05, "tasks flowing")
    harness.conf.update(executor={"threads": 3})
    sup.send(signal.SIGHUP)
    gaps = 0
    deadline = time.monotonic() + 30
    while statuses(r, ids).count("done") < len(ids) and time.monotonic() < deadline:
        gaps += len(workers_by_slot(sup.pid)) < 2
        time.sleep(0.05)  # poll interval of the checks
    assert statuses(r, ids).count("done") == len(ids)
    assert gaps <= 2, "a slot is never left without a worker for long"
    after = poll(lambda: (lambda w: w if len(w) == 2 and not set(w.values()) & set(
        before.values()) else None)(workers_by_slot(sup.pid)), 10, 0.05, "both replaced")
    assert after.keys() == before.keys()
    hbs = beating(r, 2, 10)
    assert {hb["threads"] for hb in hbs.values() if hb["pid"] in after.values()} == {3}
    pipe = r.pipeline()
    for i in ids:
        pipe.lrange(f"test:runs:{i}", 0, -1)
    assert all(len(runs) == 2 for runs in pipe.execute()), "each task ran exactly once"
    lines = sup.stderr.splitlines()
    stops = [i for i, ln in enumerate(lines) if "configuration reloaded." in ln
             and "Stopping worker" in ln]
    assert len(stops) == 2, "each slot replaced once"
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
