"""S27: blocking reads fit inside the socket timeout.

A socket timeout shorter than the blocking read is refused before any worker starts; the two
configurations that fit idle on empty streams without one timeout or reconnect (the scenario's
60 s idle period is 10 s here, both configurations side by side).
"""

from __future__ import annotations

import time

import pytest

from tests.redis_support import clients_named, log_lines
from tests.support import Conf, Harness, RedisServer, heartbeats, poll

pytestmark = pytest.mark.timeout(90)

IDLE_S = 10


def _setup(tmp_path, name: str, redis_section: dict) -> tuple[RedisServer, Harness]:
    server = RedisServer(tmp_path / f"redis-{name}").start()
    conf = Conf(tmp_path / f"conf-{name}", server.url, queue={"block_s": 5})
    conf.data["redis"].update(redis_section)
    conf.update()
    folder = tmp_path / name
    folder.mkdir()
    return server, Harness(folder, conf, server)


def test_s27_socket_timeout_below_blocking_read_is_refused(harness, conf, redis_server):
    conf.update(redis={"socket_timeout_s": 3}, queue={"block_s": 5})
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    assert sup.wait(20) == 2
    lines = [line for line in sup.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "redis.socket_timeout_s" in lines[0] and "queue.block_s" in lines[0]
    assert str(conf.dir / "service_conf.yaml") in lines[0]
    assert not redis_server.client().smembers("TASKEXE"), "no worker started"


def test_s27_fitting_timeouts_idle_without_reconnects(tmp_path):
    setups = [_setup(tmp_path, "ten", {"socket_timeout_s": 10}), _setup(tmp_path, "default", {})]
    try:
        sups = [h.start("run", "--procs", "2", "--threads", "2") for _, h in setups]
        clients = [server.client() for server, _ in setups]
        for r in clients:
            poll(lambda r=r: len(heartbeats(r)) == 2, 30, 0.1, "two workers heartbeat")
        # Let every duty (heartbeat, clean-up, takeover scan) open what it uses, then watch.
        time.sleep(2)  # ok: settling before the idle period the scenario measures
        before = [{c["id"] for c in clients_named(r)} for r in clients]
        time.sleep(IDLE_S)  # ok: the idle period the scenario measures
        after = [{c["id"] for c in clients_named(r)} for r in clients]
        assert before == after and all(before)
        for sup in sups:
            assert sup.proc.poll() is None
            bad = [m.group(0) for m in log_lines(sup.stderr) if m["level"] in ("WARNING", "ERROR")]
            assert not bad, bad
            text = sup.stderr.lower()
            assert "timeout" not in text and "reconnect" not in text
    finally:
        for server, h in setups:
            h.close()
            server.stop()
