"""S46: readiness and status reach systemd from the supervisor only."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support import Conf, Harness, RedisServer, heartbeats, poll, statuses
from tests.support_proc import NotifySocket, wait_exit, with_proc_handlers

pytestmark = pytest.mark.timeout(60)

REDIS_LATE_S = 2  # the scenario's 15 s, scaled down


def test_s46_ready_once_after_every_worker_and_only_from_the_supervisor(
        harness, redis_server, tmp_path) -> None:
    with_proc_handlers(harness.conf)
    notify = NotifySocket(tmp_path / "notify.sock")
    sup = harness.start("run", "--procs", "3", env=notify.env())
    r = redis_server.client()
    ready = notify.wait_for("READY=1", 20)
    assert len(heartbeats(r)) == 3, "READY=1 only once all 3 workers have heartbeated"
    task = harness.client().submit("notify_env")
    poll(lambda: statuses(r, [task]) == ["done"], 10, 0.05, "the task done")
    assert harness.client().status(task)["result"]["notify_socket"] is None
    poll(lambda: any(t.startswith("STATUS=3/3 workers") for t in notify.texts()), 5, 0.05,
         "a status line naming the workers")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
    notify.read()
    texts = [m.text for m in notify.messages]
    assert texts.count("READY=1") == 1 and "STOPPING=1" in texts
    assert texts.index("STOPPING=1") > texts.index("READY=1")
    extend = [t for t in texts if t.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extend and int(extend[0].split("=")[1]) >= 10 * 1e6, "more time asked for the drain"
    assert {m.pid for m in notify.messages} == {sup.pid}, "every datagram from the supervisor"
    assert ready.pid == sup.pid


def test_s46_waits_for_a_late_redis_and_says_so(tmp_path) -> None:
    server = RedisServer(tmp_path / "redis")
    conf = Conf(tmp_path / "conf", server.url)
    h = Harness(tmp_path, conf, server)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        sup = h.start("run", "--procs", "2", env=notify.env())
        waiting = notify.wait_for("STATUS=Waiting for", 10)
        assert str(server.socket) in waiting.text
        time.sleep(REDIS_LATE_S)  # ok: Redis comes up this much later, as in the scenario
        assert sup.proc.poll() is None, "the supervisor does not give up meanwhile"
        server.start()
        started = time.monotonic()
        notify.wait_for("READY=1", 5)
        assert time.monotonic() - started < 5
        sup.send(signal.SIGTERM)
        assert wait_exit(sup, 15)[0] == 0
    finally:
        h.close()
        server.stop()


def test_s46_without_notify_socket_nothing_is_attempted(harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "1", "--log-level", "DEBUG")
    r = redis_server.client()
    task = harness.client().submit("noop")
    poll(lambda: statuses(r, [task]) == ["done"], 20, 0.05, "a task done")
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
    assert "sd_notify" not in sup.stderr and "Traceback" not in sup.stderr
