"""S15: workers that cannot boot are respawned after growing delays, then the supervisor halts
with exit 6; TERM is obeyed meanwhile; a worker that booted never counts as a failed boot."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from datetime import datetime

import pytest

from tests.support import poll, statuses
from tests.support_proc import log_lines, wait_exit, wait_log, with_proc_handlers

pytestmark = pytest.mark.timeout(90)

BACKOFF_MAX_S = 2  # the scenario's 4, scaled down: delays 0.5, 1, 2, 2 s
BOOT_FAIL = {"boot_fail": "tests.boot_fail_handler:run"}


def _at(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_s15_failed_boots_back_off_then_halt_with_exit_6(harness) -> None:
    conf = with_proc_handlers(harness.conf, supervisor={
        "restart_backoff_max_s": BACKOFF_MAX_S, "boot_failures_max": 5})
    conf.update(handlers=BOOT_FAIL)
    sup = harness.start("run", "--procs", "4")
    code, took = wait_exit(sup, 30)
    assert code == 6 and took < 30
    failures = log_lines(sup, "before it booted")
    found = [re.search(r"Worker (\d) \(pid (\d+)\)", line).groups() for line in failures]
    assert len(found) == len(set(found)), "each failure logged once"
    assert all("exited with status 6" in line and "its last words: " in line
               and "boot_fail_handler refuses to load in a worker" in line for line in failures)
    per_slot = Counter(slot for slot, _ in found)
    assert max(per_slot.values()) == 5 and len(per_slot) == 4, per_slot
    slot = next(s for s, n in per_slot.items() if n == 5)
    spawns = [_at(line) for line in log_lines(sup, f"Spawned worker {slot} ")]
    fails = [_at(line) for line in failures if f"Worker {slot} " in line]
    delays = [spawn - fail for fail, spawn in zip(fails, spawns[1:], strict=False)]
    assert len(delays) == 4
    for got, want in zip(delays, [0.5, 1, 2, 2], strict=True):
        assert want - 0.05 <= got <= want + 0.5, delays
    assert "failed to boot 5 times in a row; halting" in sup.stderr


def test_s15_term_is_obeyed_while_slots_fail(harness) -> None:
    conf = with_proc_handlers(harness.conf, supervisor={"restart_backoff_max_s": BACKOFF_MAX_S})
    conf.update(handlers=BOOT_FAIL)
    sup = harness.start("run", "--procs", "4")
    wait_log(sup, "before it booted", 10)
    sent = time.monotonic()
    sup.send(signal.SIGTERM)
    assert sup.wait(2) == 0 and time.monotonic() - sent < 2


def test_s15_worker_deaths_after_boot_are_not_boot_failures(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, supervisor={"restart_backoff_max_s": 1,
                                                 "boot_failures_max": 2})
    sup = harness.start("run", "--procs", "1", "--threads", "1")
    client = harness.client()
    r = redis_server.client()
    poison = client.submit("crash_always")
    poll(lambda: statuses(r, [poison]) == ["dead"], 20, 0.1, "the poison task dead-lettered")
    assert len([ln for ln in log_lines(sup, "exited with status 1") if "supervisor:" in ln]) == 3
    noop = client.submit("noop")
    poll(lambda: statuses(r, [noop]) == ["done"], 10, 0.1, "the service still works")
    assert not log_lines(sup, "before it booted")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
