"""A Redis that may evict the queue's keys is reported at start, naming the setting."""

import signal

import pytest

from tests.support import Conf, Harness, RedisServer, heartbeats, poll

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("args,warned", [
    (("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"), True),
    (("--maxmemory", "100mb", "--maxmemory-policy", "noeviction"), False),
])
def test_evicting_redis_is_reported_at_start(tmp_path, args, warned):
    server = RedisServer(tmp_path / "redis", args=args).start()
    h = Harness(tmp_path, Conf(tmp_path / "conf", server.url), server)
    try:
        sup = h.start("run", "--procs", "2")
        poll(lambda: len(heartbeats(server.client())) == 2, 20, message="workers up")
        sup.send(signal.SIGTERM)
        assert sup.wait(15) == 0
        lines = [line for line in sup.stderr.splitlines() if "maxmemory-policy" in line]
        assert len(lines) == (1 if warned else 0), lines
        if warned:
            assert "allkeys-lru" in lines[0] and "noeviction" in lines[0]
    finally:
        h.close()
        server.stop()
