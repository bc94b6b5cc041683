"""Support for the Redis connectivity scenarios (S27-S33, failover, restarts): servers the test
restarts, pauses and turns into replicas, Sentinel set-ups, and readers of the service's logs."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import RedisServer, poll, redis_binary

HANDLERS = {
    "count": "tests.handlers:count",
    "reporter": "tests.redis_handlers:reporter",
    "quiet": "tests.redis_handlers:quiet",
    "chatty": "tests.redis_handlers:chatty",
    "scount": "tests.redis_handlers:sentinel_count",
    "noop": "workers.handlers.builtin:noop",
}
GROUP = "rag_flow_svr_task_broker"
STREAMS = ("te.1.common", "te.0.common")
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.BusyLoadingError,
             OSError)


def aof_server(folder: Path, *args: str) -> RedisServer:
    """A redis-server with AOF on, as issue 4 wants for restarts (`appendfsync everysec`)."""
    return RedisServer(folder, args=("--appendonly", "yes", "--appendfsync", "everysec", *args))


def restart(server: RedisServer, down_s: float = 0.0) -> redis.Redis:
    """SHUTDOWN (AOF flushed), stay down `down_s`, start again on the same socket and folder."""
    try:
        # No retries: the reply of SHUTDOWN is the closed connection, not a reason to retry.
        server.client(socket_timeout=5, retry=Retry(NoBackoff(), 0)).shutdown()
    except redis.ConnectionError:
        pass  # the reply of SHUTDOWN is the closed connection
    server.proc.wait(10)
    wait_until(time.monotonic() + down_s)
    server.start()
    return server.client()


def crash_restart(server: RedisServer, down_s: float = 0.0) -> redis.Redis:
    """SIGKILL (what the AOF had not synced is lost), stay down `down_s`, start again."""
    server.proc.kill()
    server.proc.wait(10)
    server.socket.unlink(missing_ok=True)
    wait_until(time.monotonic() + down_s)
    server.start()
    return server.client()


def safe(fn: Any, default: Any = None) -> Any:
    """fn(), or `default` while Redis is away (the test's own reads must not fail then)."""
    try:
        return fn()
    except TRANSIENT:
        return default


def pending(r: redis.Redis) -> int:
    total = 0
    for stream in STREAMS:
        try:
            total += int(r.xpending(stream, GROUP)["pending"])
        except redis.ResponseError:
            continue
    return total


def clients_named(r: redis.Redis, prefix: str = "task_executor_") -> list[dict]:
    return [c for c in r.client_list() if c.get("name", "").startswith(prefix)]


def worker_pids(sup_pid: int) -> list[int]:
    try:
        return sorted(p.pid for p in psutil.Process(sup_pid).children()
                      if p.status() != psutil.STATUS_ZOMBIE and "redis" not in p.name())
    except psutil.NoSuchProcess:
        return []


LOG_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<role>\S+)\[(?P<pid>\d+)\] "
                      r"(?P<logger>\S+): (?P<msg>.*)$")


def log_lines(text: str, level: str | None = None) -> Iterator[re.Match]:
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m and (level is None or m["level"] == level):
            yield m


def warnings_per_second(text: str, pids: list[int]) -> int:
    """The most WARNING lines any one of `pids` wrote within one second of the clock."""
    per: Counter = Counter()
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m and m["level"] == "WARNING" and int(m["pid"]) in pids:
            per[(m["pid"], line[:19])] += 1
    return max(per.values(), default=0)


def tracebacks(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Traceback")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpServer:
    """A redis-server (or sentinel) on 127.0.0.1 and a free port, in a folder of its own."""

    def __init__(self, folder: Path, conf: str, *, sentinel: bool = False) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf_path = folder / ("sentinel.conf" if sentinel else "redis.conf")
        self.conf_path.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
                                  f"save \"\"\n{conf}")
        self.sentinel = sentinel
        self.proc: subprocess.Popen | None = None

    def start(self) -> TcpServer:
        cmd = [redis_binary(), str(self.conf_path)] + (["--sentinel"] if self.sentinel else [])
        self.proc = subprocess.Popen(cmd, stdout=(self.folder / "log").open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        poll(lambda: safe(lambda: self.client(socket_timeout=1).ping()), 10, 0.02,
             f"redis on port {self.port}")
        return self

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis("127.0.0.1", self.port, **kw)

    def rejoin_as_replica_of(self, port: int) -> TcpServer:
        """Start again (same folder and port) as a replica, as the sentinels would make it."""
        self.conf_path.write_text(self.conf_path.read_text() + f"replicaof 127.0.0.1 {port}\n")
        return self.start()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SentinelSet:
    """One primary, one replica and three sentinels (quorum 2), all on 127.0.0.1."""

    def __init__(self, folder: Path, master: str = "taskexec", down_after_ms: int = 1000):
        self.master = master
        self.down_after_ms = down_after_ms
        # No 5 s wait before a full sync (the default delay for diskless syncs).
        sync = "repl-diskless-sync-delay 0\n"
        self.primary = TcpServer(folder / "primary", "appendonly yes\n" + sync)
        self.replica = TcpServer(folder / "replica",
                                 f"appendonly yes\n{sync}replicaof 127.0.0.1 {self.primary.port}\n")
        monitor = (f"sentinel monitor {master} 127.0.0.1 {self.primary.port} 2\n"
                   f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
                   f"sentinel failover-timeout {master} 10000\n"
                   f"sentinel known-replica {master} 127.0.0.1 {self.replica.port}\n")
        self.sentinels = [TcpServer(folder / f"sentinel{i}", monitor, sentinel=True)
                          for i in range(3)]
        # Each sentinel knows the others from the start (as sentinels write it into their
        # files), instead of finding them by hello messages every 2 s.
        ids = [f"{i + 1:040x}" for i in range(3)]
        for i, s in enumerate(self.sentinels):
            peers = "".join(f"sentinel known-sentinel {master} 127.0.0.1 {p.port} {ids[j]}\n"
                            for j, p in enumerate(self.sentinels) if j != i)
            s.conf_path.write_text(s.conf_path.read_text() + f"sentinel myid {ids[i]}\n{peers}")

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        poll(lambda: self.replica.client().info("replication")["master_link_status"] == "up",
             20, 0.05, "replica in sync")
        for s in self.sentinels:
            s.start()
        poll(self._settled, 30, 0.1, "sentinels know the replica and each other")
        return self

    def _settled(self) -> bool:
        for s in self.sentinels:
            state = safe(lambda s=s: s.client().sentinel_master(self.master), {})
            if int(state.get("num-slaves", 0)) < 1 or int(state.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def primary_port(self) -> int | None:
        """The port the sentinels name as the primary (when a majority agrees)."""
        ports = Counter()
        for s in self.sentinels:
            addr = safe(lambda s=s: s.client().sentinel_get_master_addr_by_name(self.master))
            if addr:
                ports[int(addr[1])] += 1
        port, votes = ports.most_common(1)[0] if ports else (None, 0)
        return port if votes >= 2 else None

    def manual_failover(self) -> bool:
        """SENTINEL FAILOVER; False while the sentinels find no replica good enough yet."""
        try:
            return bool(self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER",
                                                                   self.master))
        except redis.ResponseError as exc:
            if "NOGOODSLAVE" in str(exc) or "INPROG" in str(exc):
                return False
            raise

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.kill()


def freeze(server: RedisServer) -> None:
    os.kill(server.proc.pid, signal.SIGSTOP)


def thaw(server: RedisServer) -> None:
    os.kill(server.proc.pid, signal.SIGCONT)


def wait_until(deadline: float) -> None:
    """Sleep until a point of the test's timeline (a scenario's 't = 5 s'), not a condition."""
    time.sleep(max(0.0, deadline - time.monotonic()))  # deadline: a timeline step
