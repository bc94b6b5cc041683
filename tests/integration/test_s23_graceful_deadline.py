"""S23: graceful stop has a hard deadline, even with a task stuck in recv()."""

from __future__ import annotations

import random
import signal
import threading
import time

import psutil
import pytest

from tests.handlers import starts
from tests.support import poll, statuses
from tests.support_proc import alive, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(120)

GRACEFUL_S = 3  # the scenario's 5 s, scaled down: worker gone in +2 s, supervisor in +4 s
REPEATS = 3  # the scenario's 30, scaled down


def _pending(r) -> int:
    return sum(int(r.xpending(s, "rag_flow_svr_task_broker")["pending"])
               for s in ("te.0.common", "te.1.common") if r.exists(s))


def test_s23_stuck_task_cannot_hold_the_stop(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    sup = harness.start("run", "--procs", "1", "--threads", "4", "--host-id", "h23")
    r = redis_server.client()
    client = harness.client()
    stuck = client.submit("recv_once")
    short = client.submit("sleep", {"seconds": 2})
    poll(lambda: statuses(r, [stuck, short]) == ["running", "running"], 20, 0.05, "running")
    worker = workers_by_slot(sup.pid)[0]
    sent = time.monotonic()
    sup.send(signal.SIGTERM)
    # Queued once the worker has the forwarded TERM (its title says it drains).
    poll(lambda: "(draining)" in " ".join(psutil.Process(worker).cmdline()), 2, 0.01,
         "the worker draining")
    noops = client.submit_many("noop", [{}] * 20)
    poll(lambda: not alive(worker), GRACEFUL_S + 2, 0.05, "the worker gone")
    code, _ = wait_exit(sup, GRACEFUL_S + 4 - (time.monotonic() - sent))
    assert code == 0 and time.monotonic() - sent < GRACEFUL_S + 4
    assert statuses(r, [short]) == ["done"]
    assert statuses(r, noops) == ["queued"] * 20, "nothing queued started after TERM"
    assert statuses(r, [stuck]) == ["running"] and _pending(r) == 1, "left for reclaim"

    again = harness.start("run", "--procs", "1", "--threads", "4", "--host-id", "h23")
    poll(lambda: statuses(r, [stuck, *noops]) == ["done"] * 21, 15, 0.1, "all done after restart")
    assert starts(r, stuck) == 2
    again.send(signal.SIGTERM)
    assert wait_exit(again, GRACEFUL_S + 4)[0] == 0


def test_s23_term_at_random_moments_under_load(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"graceful_timeout_s": GRACEFUL_S})
    r = redis_server.client()
    client = harness.client()
    submitted: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            submitted.extend(client.submit_many("count", [{"seconds": 0.05}] * 5))
            stop.wait(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    rng = random.Random(23)
    try:
        for _ in range(REPEATS):
            sup = harness.start("run", "--procs", "1", "--threads", "4", "--host-id", "h23")
            poll(lambda s=sup: workers_by_slot(s.pid), 20, 0.05, "a worker")
            time.sleep(rng.uniform(0.3, 1.2))  # ok: TERM at a random moment is the point
            sent = time.monotonic()
            sup.send(signal.SIGTERM)
            code, _ = wait_exit(sup, GRACEFUL_S + 4)
            assert code == 0 and time.monotonic() - sent < GRACEFUL_S + 4
    finally:
        stop.set()
        producer.join(5)
    last = harness.start("run", "--procs", "2", "--threads", "4", "--host-id", "h23")
    poll(lambda: statuses(r, submitted).count("done") == len(submitted), 60, 0.2,
         "every submitted task done")
    assert {starts(r, t) for t in submitted} == {1}, "no task ran twice"
    last.send(signal.SIGTERM)
    assert wait_exit(last, GRACEFUL_S + 4)[0] == 0
