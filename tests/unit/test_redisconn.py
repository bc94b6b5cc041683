"""Unit tests of the Redis clients built from the settings: redisconn, redispool, outage."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
import redis

from workers import redispool
from workers.config import ConfigError, load_settings
from workers.outage import Outage
from workers.redisconn import (
    connect,
    connect_worker,
    connection_kwargs,
    describe,
    raise_if_transient,
    split_budget,
)


def settings(tmp_path: Path, text: str):
    (tmp_path / "service_conf.yaml").write_text(textwrap.dedent(text))
    return load_settings(tmp_path, None, {})


SENTINEL = """
    redis:
      sentinel: {master: mymaster, nodes: ["127.0.0.1:26379", "127.0.0.2:26380"], password: s}
      password: p
"""


def test_budget_split_keeps_the_blocking_read_and_the_heartbeat_apart():
    assert split_budget(2) == (1, False)  # the heartbeat waits its turn in the shared pool
    assert split_budget(3) == (1, True)
    assert split_budget(9) == (7, True)
    with pytest.raises(ValueError, match="blocking read"):
        split_budget(1)


def test_worker_clients_stay_within_the_budget(tmp_path):
    s = settings(tmp_path, "redis: {url: 'unix:///tmp/none.sock', max_connections: 4}\n")
    conns = connect_worker(s, name="task_executor_h_0_1")
    sizes = [c.connection_pool.max_connections for c in (conns.client, conns.blocking,
                                                         conns.heartbeat)]
    assert sizes == [2, 1, 1]
    assert conns.blocking.connection_pool.connection_kwargs["health_check_interval"] == 0
    assert conns.client.connection_pool.connection_kwargs["client_name"] == "task_executor_h_0_1"
    assert isinstance(conns.client.connection_pool, redis.BlockingConnectionPool)
    s = settings(tmp_path, "redis: {url: 'unix:///tmp/none.sock', max_connections: 2}\n")
    assert connect_worker(s, name="w").heartbeat is None


@pytest.mark.parametrize(("conf", "cls"), [
    ("redis: {url: 'redis://u:pw@10.0.0.1:6380/2'}", redispool.Connection),
    ("redis: {url: 'rediss://10.0.0.1:6380'}", redispool.SSLConnection),
    ("redis: {url: 'unix:///run/redis.sock'}", redispool.UnixConnection),
    ("redis: {host: '10.0.0.1:6380', password: x}", redispool.Connection),
])
def test_connections_are_health_checked_and_kept_alive(tmp_path, conf, cls):
    kw = connection_kwargs(settings(tmp_path, conf + "\n"), name="n")
    assert kw["connection_class"] is cls
    assert kw["health_check_interval"] > 0 and kw["retry"].get_retries() == 0
    assert kw.get("socket_keepalive") is (None if cls is redispool.UnixConnection else True)


def test_sentinel_settings_build_a_blocking_sentinel_pool(tmp_path):
    s = settings(tmp_path, SENTINEL)
    client = connect(s, name="n", max_connections=3)
    pool = client.connection_pool
    assert isinstance(pool, redispool.BlockingSentinelPool)
    assert isinstance(pool, redis.BlockingConnectionPool) and pool.max_connections == 3
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["password"] == "p"
    manager = pool.sentinel_manager
    assert [(c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs[
        "port"]) for c in manager.sentinels] == [("127.0.0.1", 26379), ("127.0.0.2", 26380)]
    assert manager.sentinel_kwargs["password"] == "s"
    assert "mymaster" in describe(s) and "127.0.0.2:26380" in describe(s)


def test_sentinel_with_a_url_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="redis.sentinel"):
        settings(tmp_path, SENTINEL + "      url: redis://localhost\n")


@pytest.mark.parametrize(("text", "cls"), [
    ("READONLY You can't write against a read only replica.", redis.exceptions.ReadOnlyError),
    ("=[C]: -1: -READONLY You can't write against a read only replica.",
     redis.exceptions.ReadOnlyError),
    ("LOADING Redis is loading the dataset in memory", redis.exceptions.BusyLoadingError),
    ("MASTERDOWN Link with MASTER is down", redis.exceptions.MasterDownError),
    ("UNBLOCKED force unblock from blocking operation", redis.ConnectionError),
])
def test_outage_replies_become_the_errors_a_plain_command_raises(text, cls):
    with pytest.raises(cls):
        raise_if_transient(text)


@pytest.mark.parametrize("text", ["NOGROUP No such key", "WRONGTYPE Operation against a key",
                                  "ERR unknown command", ""])
def test_other_replies_are_left_to_the_caller(text):
    raise_if_transient(text)


def test_one_warning_per_outage_whichever_duty_meets_it(caplog):
    outage = Outage(logging.getLogger("t"), "Worker 0")
    loop, beat = outage.duty("consume loop"), outage.duty("heartbeats")
    with caplog.at_level(logging.DEBUG, "t"):
        for _ in range(5):
            loop.failed(redis.TimeoutError("Timeout reading from socket"))
            beat.failed(redis.TimeoutError("Timeout reading from socket"))
        loop.succeeded()
        assert outage.down, "the heartbeats still fail"
        beat.succeeded()
        beat.succeeded()  # no outage: nothing more to say
        loop.failed(redis.ConnectionError("closed"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 2 and "consume loop" in warnings[0].getMessage()
    assert len(infos) == 1 and "answers again" in infos[0].getMessage()
    assert outage.outages == 2 and outage.down
