"""`taskexec run` when Redis does not answer at start: it retries for redis.connect_timeout_s,
then exits 5 with one line naming the address; a Redis that comes up meanwhile is used."""

from __future__ import annotations

import signal
import time

import pytest

from tests.redis_support import log_lines, wait_until
from tests.support import Conf, Harness, RedisServer, heartbeats, poll

pytestmark = pytest.mark.timeout(60)


def _harness(tmp_path, **redis_section) -> Harness:
    conf = Conf(tmp_path / "conf", None, redis=redis_section)
    return Harness(tmp_path, conf, None)


@pytest.mark.parametrize("where", ["url", "sentinel"])
def test_unreachable_redis_exits_5_after_connect_timeout(tmp_path, where):
    target = ({"url": f"unix://{tmp_path}/nothing.sock"} if where == "url" else
              {"sentinel": {"master": "m", "nodes": ["127.0.0.1:1", "127.0.0.1:2"]}})
    h = _harness(tmp_path, connect_timeout_s=2, **target)
    try:
        began = time.monotonic()
        sup = h.start("run", "--procs", "2")
        assert sup.wait(20) == 5
        assert 2 <= time.monotonic() - began < 2 + 5
        errors = [m["msg"] for m in log_lines(sup.stderr, "ERROR")]
        assert len(errors) == 1 and "after 2 s" in errors[0], sup.stderr
        assert ("nothing.sock" if where == "url" else "127.0.0.1:1") in errors[0]
        assert "Spawned worker" not in sup.stderr and "Traceback" not in sup.stderr
        cli = h.cli("submit", "noop")
        assert cli.returncode == 5
        assert len(cli.stderr.decode().strip().splitlines()) == 1, cli.stderr
    finally:
        h.close()


def test_redis_that_comes_up_during_the_wait_is_used(tmp_path):
    server = RedisServer(tmp_path / "redis")
    h = _harness(tmp_path, url=server.url, connect_timeout_s=20)
    try:
        sup = h.start("run", "--procs", "2")
        wait_until(time.monotonic() + 1.5)  # Redis starts late, on purpose
        server.start()
        poll(lambda: len(heartbeats(server.client())) == 2, 25, 0.1, "two workers heartbeat")
        assert sup.proc.poll() is None
    finally:
        h.close()
        server.stop()


def test_stop_while_waiting_for_redis_at_start_exits_0_at_once(tmp_path):
    h = _harness(tmp_path, url=f"unix://{tmp_path}/nothing.sock", connect_timeout_s=60)
    try:
        sup = h.start("run", "--procs", "2")
        poll(lambda: "Waiting up to 60 s" in sup.stderr, 20, 0.05, "the wait for Redis")
        stopped = time.monotonic()
        sup.send(signal.SIGTERM)
        assert sup.wait(10) == 0
        assert time.monotonic() - stopped < 3, "not the 60 s of redis.connect_timeout_s"
        infos = [m["msg"] for m in log_lines(sup.stderr, "INFO")]
        assert any("Stopped by SIGTERM while waiting for" in m and "nothing.sock" in m
                   for m in infos), sup.stderr
        assert not list(log_lines(sup.stderr, "ERROR")) and "Traceback" not in sup.stderr
    finally:
        h.close()
