"""S34: the cleanup lock is renewed, fenced and released from any thread."""

import os
import signal
import threading
import time

import pytest

from tests.support import heartbeats, poll
from workers.cleanup import CleanupLock

pytestmark = pytest.mark.timeout(90)

LOCK = "clean_task_executor"


def test_s34a_lock_renewed_and_released_from_other_threads(redis_server):
    r = redis_server.client()
    lock = CleanupLock(r, LOCK, "task_executor_h1_0_1", ttl_s=2)
    taken: list[bool] = []
    threading.Thread(target=lambda: taken.append(lock.acquire())).start()
    poll(lambda: taken, 5, message="taken")
    assert taken == [True]
    tokens: set[bytes] = set()
    renewals: list[bool] = []
    stop = threading.Event()

    def renew():
        while not stop.is_set():
            renewals.append(lock.renew())
            tokens.add(r.get(LOCK))
            stop.wait(0.6)

    renewer = threading.Thread(target=renew)
    renewer.start()
    deadline = time.monotonic() + 5  # more than twice the TTL
    while time.monotonic() < deadline:
        tokens.add(r.get(LOCK))
        time.sleep(0.1)  # ok: sampling the key while it must not change
    stop.set()
    renewer.join()
    released: list[bool] = []
    releaser = threading.Thread(target=lambda: released.append(lock.release()))
    releaser.start()
    releaser.join()
    assert tokens == {lock.token.encode()}
    assert renewals and all(renewals) and released == [True]
    assert not r.exists(LOCK)
    assert lock.token.startswith("task_executor_h1_0_1:")


def test_s34b_stopped_holder_loses_the_lock_and_leaves_the_new_token(harness, redis_server):
    harness.conf.update(cleanup={"interval_s": 1, "lock_ttl_s": 2},
                        heartbeat={"interval_s": 1, "timeout_s": 15})
    hosts = [harness.start("run", "--host-id", f"h{i}", "--procs", "1") for i in (1, 2, 3)]
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 3, 20, message="three hosts")
    holder = poll(lambda: r.get(LOCK), 10, 0.02, "a cleanup pass took the lock").decode()
    consumer = holder.rsplit(":", 1)[0]
    pid = int(consumer.rsplit("_", 1)[1])
    os.kill(pid, signal.SIGSTOP)
    try:
        poll(lambda: (r.get(LOCK) or b"").decode().rsplit(":", 1)[0] not in ("", consumer), 10,
             0.05, "another host took the lock after its TTL lapsed")
        time.sleep(3 * 2 - 1)  # ok: the stop lasts three lock TTLs, as the scenario says
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    seen: set[str] = set()
    while time.monotonic() - resumed < 4:
        token = r.get(LOCK)
        if token:
            seen.add(token.decode().rsplit(":", 1)[0])
        time.sleep(0.05)  # ok: sampling who holds the lock after the resume
    assert len(seen) >= 1
    poll(lambda: any("Cleanup pass" in line and consumer in line
                     for line in "".join(h.stderr for h in hosts).splitlines()[-400:]),
         15, 0.2, "the resumed worker competes again")
    err = "".join(h.stderr for h in hosts)
    assert "Traceback" not in err
    assert len(heartbeats(r)) == 3, "heartbeats carry on on all hosts"
