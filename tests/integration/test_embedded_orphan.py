"""An embedded Redis left behind by a killed supervisor is adopted and stopped by the next."""

import signal

import psutil
import pytest

from tests.support import Conf, Harness, poll

pytestmark = pytest.mark.timeout(60)


def test_next_supervisor_adopts_and_stops_an_orphaned_embedded_redis(tmp_path):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    data = tmp_path / "data"
    conf = Conf(tmp_path / "conf", None, redis={"embedded": {"dir": str(data)}})
    h = Harness(tmp_path, conf, None)
    sock = data / "redis.sock"

    def answers():
        try:
            return redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping()
        except (redis.RedisError, OSError):
            return False

    try:
        first = h.start("run", "--procs", "1")
        poll(answers, 20, message="embedded Redis up")
        poll(lambda: h.cli("executors", "--json").stdout.count(b'"alive": true') == 1, 20,
             message="worker up")
        server = [c for c in psutil.Process(first.pid).children() if "redis" in c.name()]
        for proc in [c for c in psutil.Process(first.pid).children() if c not in server]:
            proc.kill()  # the worker; then the supervisor: the server lives on, orphaned
        first.proc.kill()
        first.wait(10)
        assert answers()
        second = h.start("run", "--procs", "1")
        poll(lambda: "whose supervisor is gone" in second.stderr, 20, message="adopted")
        second.send(signal.SIGTERM)
        assert second.wait(20) == 0
        poll(lambda: not answers(), 10, message="the adopted server stopped")
    finally:
        h.close()
        try:
            redis.Redis(unix_socket_path=str(sock), socket_timeout=1,
                        retry=Retry(NoBackoff(), 0)).shutdown(nosave=True)
        except (redis.RedisError, OSError):
            pass
