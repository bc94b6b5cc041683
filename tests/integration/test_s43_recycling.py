"""S43: growing workers are recycled gracefully; one born over the limit does not thrash."""

from __future__ import annotations

import re
import signal
import threading

import pytest

from tests.support import heartbeats, poll, statuses
from tests.support_proc import wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(120)

TASKS = 200  # the scenario's 300, scaled down
MB_PER_TASK = 10
RSS_LIMIT_MB = 150  # the scenario's 300, scaled down with the task count


def _run(harness, r, n: int, mb: int) -> tuple[list[str], list[dict]]:
    """Run n growing tasks on --procs 2 --threads 2; every heartbeat seen meanwhile."""
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    seen: list[dict] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.extend(heartbeats(r).values())
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ids = harness.client().submit_many("grow", [{"mb": mb}] * n)
    try:
        poll(lambda: statuses(r, ids).count("done") == n, 90, 0.2, f"{n} tasks done")
    finally:
        stop.set()
        watcher.join(5)
    pipe = r.pipeline()
    for i in ids:
        pipe.llen(f"test:runs:{i}")
    assert set(pipe.execute()) == {2}, "each task ran exactly once"
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 20)[0] == 0
    return sup.stderr.splitlines(), seen


def test_s43_recycled_above_max_rss(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, memory={"max_rss_mb": RSS_LIMIT_MB})
    r = redis_server.client()
    lines, seen = _run(harness, r, TASKS, MB_PER_TASK)
    recycled = [ln for ln in lines if "will be replaced: its RSS of" in ln]
    assert len(recycled) >= 4
    worst = max(int(re.search(r"RSS of (\d+) MiB", ln).group(1)) for ln in recycled)
    assert worst <= RSS_LIMIT_MB + 2 * MB_PER_TASK, recycled
    assert max(hb["rss_bytes"] for hb in seen) <= (RSS_LIMIT_MB + 2 * MB_PER_TASK) << 20
    # Each recycled worker exits 0 (the last ones may still be draining at the final TERM).
    assert len([ln for ln in lines if "exited cleanly" in ln]) >= len(recycled) - 2
    assert not [ln for ln in lines if "was killed" in ln or "exited with status" in ln
                and "status 0" not in ln]


def test_s43_recycled_after_max_tasks(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"max_tasks_per_worker": 20})
    r = redis_server.client()
    lines, seen = _run(harness, r, TASKS, 1)
    stopped = [int(m.group(1)) for ln in lines if (m := re.search(r"stopped after (\d+) task", ln))]
    assert len(stopped) >= TASKS // 20 - 1 and max(stopped) <= 20, stopped
    assert max(hb["done"] + hb["failed"] for hb in seen) <= 20


def test_s43_born_over_the_limit_does_not_thrash(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, memory={"max_rss_mb": 20})
    r = redis_server.client()
    lines, _ = _run(harness, r, 50, 1)
    warnings = [ln for ln in lines if "memory.max_rss_mb 20" in ln and "WARNING" in ln]
    assert len(warnings) == 2, warnings  # one per worker, at boot
    assert not [ln for ln in lines if "will be replaced" in ln]
    assert len([ln for ln in lines if "Spawned worker" in ln]) == 2, "no slot was recycled"
