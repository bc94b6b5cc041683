"""S19: churn never trips over vanished children or reused pids."""

from __future__ import annotations

import random
import re
import signal
import time

import psutil
import pytest

from tests.support import heartbeats
from tests.support_proc import beating, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(90)

CHURN_S = 7  # the scenario's 60 s, scaled down; kills every 1 s and TTOU/TTIN every 1.5 s

_SENT = re.compile(r"Sending (SIG\w+) to (?:the process group of )?worker \d+ \(pid (\d+)\)")
_DIED = re.compile(r"taskexec\.supervisor: Worker \d+ \(pid (\d+)\) (?:exited|was killed|ended)")


def test_s19_signals_only_reach_live_children(harness, redis_server) -> None:
    with_proc_handlers(harness.conf)
    sup = harness.start("run", "--procs", "4", "--log-level", "DEBUG")
    r = redis_server.client()
    beating(r, 4, 20)
    rng = random.Random(19)
    start = time.monotonic()
    next_kill, next_flip, flip = start, start + 1.5, signal.SIGTTOU
    rss = []
    while time.monotonic() - start < CHURN_S:
        now = time.monotonic()
        hbs = heartbeats(r)
        rss += [hb["rss_bytes"] for hb in hbs.values()]
        if now >= next_kill:
            booted = sorted({hb["pid"] for hb in hbs.values()} & set(
                workers_by_slot(sup.pid).values()))
            if booted:
                try:
                    psutil.Process(rng.choice(booted)).kill()
                except psutil.Error:
                    pass
            next_kill = now + 1
        if now >= next_flip:
            sup.send(flip)
            flip = signal.SIGTTIN if flip == signal.SIGTTOU else signal.SIGTTOU
            next_flip = now + 1.5
        assert sup.proc.poll() is None, "the supervisor never exits"
        time.sleep(0.1)  # poll interval of the churn
    if flip == signal.SIGTTIN:
        sup.send(signal.SIGTTIN)
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 20)[0] == 0
    assert rss and min(rss) > 0, "every heartbeat carries the worker's RSS"
    lines = sup.stderr.splitlines()
    assert not [ln for ln in lines if "Traceback" in ln or "NoSuchProcess" in ln
                or "ZombieProcess" in ln or "AccessDenied" in ln]
    reaped: set[str] = set()
    sends = 0
    for line in lines:
        if m := _SENT.search(line):
            sends += 1
            assert m.group(2) not in reaped, f"a signal to a reaped pid: {line}"
        elif m := _DIED.search(line):
            reaped.add(m.group(1))
    assert sends >= 10 and len(reaped) >= 10, (sends, len(reaped))
