"""S10: Redis wiped (FLUSHALL, then an empty restart) while workers wait."""

import time

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(150)


def _pids(r):
    return sorted(hb["pid"] for hb in heartbeats(r).values())


def _wipe_and_recover(harness, r, wipe):
    client = harness.client()
    ids = client.submit_many("sleep", [{"seconds": 0.2}] * 50)
    poll(lambda: statuses(r, ids).count("done") >= 30, 30, 0.05, "30 done")
    # A task no worker consumes stays queued until the wipe, however fast the others run.
    queued = client.submit("noop", queue="nobody")
    waiter = harness.start("wait", queued, "--timeout", "60")
    name = f"taskexec_client_{waiter.pid}".encode()
    poll(lambda: any(c.get("name") == name.decode() for c in r.client_list()), 10,
         message="the waiter is connected and waiting")
    wiped = time.monotonic()
    r = wipe()
    # From the moment the empty server answers: while it is down no client can learn anything.
    back = time.monotonic()
    assert waiter.wait(10) == 3
    seen = time.monotonic()
    assert seen - back < 5, (f"taskexec wait exited {seen - back:.1f} s after the wiped server "
                             f"answered ({back - wiped:.1f} s after the wipe began)")
    assert harness.cli("status", queued).returncode == 3
    new = harness.client().submit_many("sleep", [{"seconds": 0.2}] * 10)
    poll(lambda: statuses(r, new) == ["done"] * 10, 10, 0.1, "10 new tasks done")
    poll(lambda: len(heartbeats(r)) == 2, 2 * 1 + 1, 0.1, "both consumers back in TASKEXE")
    time.sleep(1.5)  # ok: let running tasks of the wipe finish, then check nothing came back
    assert statuses(r, ids).count("missing") == 50, "finished tasks did not recreate records"
    assert statuses(r, [queued]) == ["missing"]
    return r


def test_s10_flushall_and_empty_restart(harness, redis_server):
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 20, message="two workers")
    pids = _pids(r)

    def flush():
        r.flushall()
        return r

    def restart_empty():
        # No retries: SHUTDOWN's reply is the closed connection; redis-py's default retries
        # of it took 4.7 s, which this test once counted against the waiter.
        redis_server.client(retry=Retry(NoBackoff(), 0)).shutdown(nosave=True)
        redis_server.proc.wait(10)
        redis_server.start()
        return redis_server.client()

    r = _wipe_and_recover(harness, r, flush)
    assert _pids(r) == pids
    r = _wipe_and_recover(harness, r, restart_empty)
    assert _pids(r) == pids
    err = sup.stderr
    assert "exited" not in err and "was killed" not in err
    for stream in ("te.0.common", "te.1.common"):
        warnings = [line for line in err.splitlines()
                    if "WARNING" in line and "group" in line and stream in line]
        assert len(warnings) <= 2 * 2, warnings  # per worker, per wipe
