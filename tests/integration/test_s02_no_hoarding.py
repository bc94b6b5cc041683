"""S2: a worker never holds more messages than it has free threads."""

import threading
import time

import pytest

from tests.delivery_support import pending_by_consumer, start_host
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def _run(harness, r, threads, env, flag_threads):
    hosts = [start_host(harness, f"h{i}x{threads}", 1, flag_threads, env=env) for i in (1, 2)]
    poll(lambda: len(heartbeats(r)) == 2, 20, message="two workers")
    client = harness.client()
    samples: list[dict] = []
    busy: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append({c: len(rows) for c, rows in pending_by_consumer(r).items()})
            busy.extend(hb["busy"] for hb in heartbeats(r).values())
            stop.wait(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    ids = client.submit_many("sleep", [{"seconds": 0.3}] * 40)
    poll(lambda: statuses(r, ids).count("done") == 40, 15, 0.1, "40 done")
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    assert elapsed < 15
    assert samples and max(max(s.values(), default=0) for s in samples) <= threads
    assert max(busy) <= threads
    per_host = {}
    for t in ids:
        consumer = r.hget(f"te:task:{t}", "consumer").decode()
        host = consumer.split("_")[2]
        per_host[host] = per_host.get(host, 0) + 1
    assert all(14 <= n <= 26 for n in per_host.values()), per_host
    for h in hosts:
        h.kill_tree()
    r.delete("TASKEXE", *r.keys("task_executor_*"))


def test_s2_consumers_hold_at_most_their_threads(harness, redis_server):
    r = redis_server.client()
    _run(harness, r, 2, None, 2)
    _run(harness, r, 3, {"MAX_CONCURRENT_TASKS": "3"}, None)
