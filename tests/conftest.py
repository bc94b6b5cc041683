"""Fixtures: every test gets its own redis-server and configuration folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Conf, Harness, RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def conf(tmp_path: Path, redis_server: RedisServer) -> Conf:
    return Conf(tmp_path / "conf", redis_server.url)


@pytest.fixture
def harness(tmp_path: Path, conf: Conf, redis_server: RedisServer) -> Iterator[Harness]:
    h = Harness(tmp_path, conf, redis_server)
    yield h
    h.close()
