"""S37: heartbeat storage stays bounded and dead executors leave (scaled down: interval 0.1 s and
retention 3 s; 5 graceful restarts and 2 host kills; TASKEXE pre-created as a string)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.support import Conf, Harness, Proc, child_pids, poll, statuses

pytestmark = pytest.mark.timeout(90)

CONSUMERS = "task_executor_*"


def _names(r) -> set[str]:
    return {n.decode() for n in r.smembers("TASKEXE")}


class ZcardWatch(threading.Thread):
    """Samples the ZCARD of every heartbeat zset until stopped; keeps the largest seen."""

    def __init__(self, r) -> None:
        super().__init__(daemon=True)
        self.r = r
        self.largest = 0
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            for key in self.r.scan_iter(match=CONSUMERS, count=1000):
                if self.r.type(key) == b"zset":
                    self.largest = max(self.largest, self.r.zcard(key))
            self.samples += 1


def _start(harness: Harness, r, procs: int = 2) -> tuple[Proc, set[str]]:
    sup = harness.start("run", "--procs", str(procs), "--host-id", "h1")

    def registered() -> set[str]:
        pids = child_pids(sup.pid)
        mine = {n for n in _names(r) if int(n.rsplit("_", 1)[1]) in pids}
        return mine if len(pids) == procs and len(mine) == procs else set()

    return sup, poll(registered, 15, message="workers registered")


def _stop(sup: Proc, r, names: set[str]) -> None:
    sup.send(signal.SIGTERM)
    assert sup.wait(20) == 0
    # At once: the consumers left the registry and their heartbeat history is gone.
    assert not (_names(r) & names)
    assert not any(r.exists(n) for n in names)


def _kill_host(sup: Proc) -> None:
    for pid in [sup.pid, *child_pids(sup.pid)]:
        os.kill(pid, signal.SIGKILL)
    sup.wait(10)


def test_s37_heartbeats_bounded_graceful_stops_leave_and_killed_hosts_are_cleaned_up(
        conf: Conf, harness: Harness, redis_server) -> None:
    conf.update(heartbeat={"interval_s": 0.1, "retention_s": 3, "timeout_s": 2},
                cleanup={"interval_s": 1})
    r = redis_server.client()
    watch = ZcardWatch(r)
    watch.start()
    try:
        sup, names = _start(harness, r)
        started = time.monotonic()
        poll(lambda: time.monotonic() - started >= 5, 10, message="5 s of heartbeats")
        _stop(sup, r, names)
        for _ in range(4):
            sup, names = _start(harness, r)
            _stop(sup, r, names)

        # Killed hosts: their consumers are dead; the next start removes them in time.
        dead: set[str] = set()
        for _ in range(2):
            sup, names = _start(harness, r)
            dead |= names
            _kill_host(sup)
        sup, live = _start(harness, r)
        restarted = time.monotonic()
        limit = conf.data["heartbeat"]["timeout_s"] + conf.data["cleanup"]["interval_s"]
        poll(lambda: not (_names(r) & dead), limit + 3, message="dead consumers gone")
        assert time.monotonic() - restarted <= limit + 3
        assert _names(r) == live
        assert not any(r.exists(n) for n in dead)
        _stop(sup, r, live)
    finally:
        watch.halt.set()
        watch.join(5)
    assert watch.samples > 50
    assert 25 <= watch.largest <= 3 / 0.1 + 1


def test_s37_registry_of_the_wrong_type(conf: Conf, harness: Harness, redis_server) -> None:
    r = redis_server.client()
    r.set("TASKEXE", "not a set")
    sup = harness.start("run", "--procs", "1", "--host-id", "h1")
    client = harness.client()
    ids = [client.submit("noop") for _ in range(3)]
    poll(lambda: statuses(r, ids) == ["done"] * 3, 20, message="tasks still processed")

    res = harness.cli("executors")
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "TASKEXE is a string, expected a set" in err, err
    assert harness.cli("executors", "--json").returncode == 1
    res = harness.cli("queues", "--json")
    assert res.returncode == 0, res.stderr.decode()
    rows = {row["stream"]: row for row in json.loads(res.stdout)}
    # Read from the streams alone. (Their length is not asserted: a clean-up pass may have
    # trimmed the acknowledged entries by now.)
    row = rows["te.0.common"]
    assert (row["consumers"], row["pending"], row["lag"]) == (1, 0, 0), row

    # Several beats and clean-up passes later: one error naming the key and the type.
    (key,) = poll(lambda: list(r.scan_iter(match=CONSUMERS)), 5, message="a heartbeat zset")
    poll(lambda: r.zcard(key) >= 4, 10, message="4 heartbeats")
    errors = [line for line in sup.stderr.splitlines()
              if " ERROR " in line and "TASKEXE" in line]
    beats = [line for line in errors if "taskexec.heartbeat:" in line]
    assert len(beats) == 1 and "Key TASKEXE is a string, expected a set" in beats[0], errors
    # No flood: each part of the worker that meets the key reports it once a minute at most.
    by_logger = [line.split("] ", 1)[1].split(":", 1)[0] for line in errors]
    assert len(by_logger) == len(set(by_logger)), errors
    assert r.type("TASKEXE") == b"string"  # left for the operator to fix
