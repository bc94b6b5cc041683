"""A worker's heartbeat thread reports Redis outages of its beats and of its clean-up pass to
the worker's one Outage: one warning for the outage, whichever of them meets it."""

from __future__ import annotations

import logging

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import poll
from workers.broker import Broker
from workers.heartbeat import Heartbeat
from workers.outage import Outage

pytestmark = pytest.mark.timeout(30)


def _heartbeat(r: redis.Redis, outage: Outage, after_beat) -> Heartbeat:
    return Heartbeat(Broker(r, None, group="g", consumer="host-0-1"), key="te:hb:host-0-1",
                     registry="te:executors", interval_s=0.05, retention_s=60,
                     snapshot=lambda: {"pid": 1}, leases=dict, outage=outage,
                     after_beat=after_beat)


def test_clean_up_pass_that_meets_an_outage_is_part_of_the_workers_outage(
        redis_server, tmp_path, caplog):
    # A real failure: the pass's client points at a socket no server listens on, as a pass
    # started just after its beat meets a server that went away in between.
    gone = redis.Redis(unix_socket_path=str(tmp_path / "gone.sock"), socket_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    broken = {"on": True}
    passes = {"ok": 0}

    def clean_up() -> None:
        if broken["on"]:
            gone.ping()
        passes["ok"] += 1

    r = redis_server.client()
    outage = Outage(logging.getLogger("taskexec.worker"), "Worker 0")
    beat = _heartbeat(r, outage, clean_up)
    caplog.set_level(logging.DEBUG)
    beat.start()
    try:
        poll(lambda: outage.down, 5, 0.01, "the failed pass starts an outage")
        poll(lambda: beat.beats >= 5, 5, 0.01, "beats go on meanwhile")
        assert outage.down, "beats that work do not end the clean-up pass's outage"
        broken["on"] = False
        poll(lambda: not outage.down, 5, 0.01, "a pass that works ends it")
    finally:
        beat.stop()
        beat.join(5)
    assert passes["ok"] >= 1
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Worker 0: Redis unavailable (cluster clean-up: ConnectionError" in warnings[0]
    assert any("Worker 0: Redis answers again" in rec.getMessage() for rec in caplog.records)
    assert outage.outages == 1


def test_read_only_server_is_one_outage_of_the_beats(redis_server, caplog):
    r = redis_server.client()
    outage = Outage(logging.getLogger("taskexec.worker"), "Worker 0")
    beat = _heartbeat(r, outage, None)
    caplog.set_level(logging.DEBUG)
    beat.beat()  # the script loaded
    r.execute_command("REPLICAOF", "127.0.0.1", "1")  # a primary that never answers
    try:
        r.config_resetstat()
        beat.beat()
        beat.beat()
        assert outage.down and beat.failures == 2
        # READONLY is the server's state, which a new connection meets as well: one try a
        # beat. A second try at once would end the outage's warning with a false "connection
        # broke" one, should the server be promoted in between.
        assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    finally:
        r.execute_command("REPLICAOF", "NO", "ONE")
    beat.beat()
    assert not outage.down and beat.failures == 0
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "heartbeats: ReadOnlyError" in warnings[0], warnings
