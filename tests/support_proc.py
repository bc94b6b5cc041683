"""Helpers for the process-tree scenarios: worker lookup by title, a notify socket, log checks."""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.proc_handlers import HANDLERS
from tests.support import Conf, Proc, RedisServer, heartbeats, poll

_WORKER_TITLE = re.compile(r"^taskexec: worker (\d+) ")


def with_proc_handlers(conf: Conf, **sections: Any) -> Conf:
    """Register tests/proc_handlers.py and apply the scenario's settings."""
    return conf.update(handlers=HANDLERS, **sections)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_redis(folder: Path) -> tuple[RedisServer, str]:
    """A redis-server on a free TCP port (and its unix socket, for the test's own client)."""
    port = free_port()
    server = RedisServer(folder, args=("--port", str(port), "--bind", "127.0.0.1"))
    return server.start(), f"redis://127.0.0.1:{port}/0"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def workers_by_slot(sup_pid: int) -> dict[int, int]:
    """slot -> pid of the supervisor's live workers, read from their process titles."""
    out: dict[int, int] = {}
    try:
        children = psutil.Process(sup_pid).children()
    except psutil.Error:
        return out
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            m = _WORKER_TITLE.match(" ".join(child.cmdline()))
        except psutil.Error:
            continue
        if m:
            out.setdefault(int(m.group(1)), child.pid)
    return out


def zombies(sup_pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(sup_pid).children()
                if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def beating(r: Any, n: int, timeout: float, host: str | None = None) -> dict[int, dict]:
    """Wait until `n` distinct slots heartbeat; slot -> latest heartbeat of the newest pid."""
    def ready() -> dict[int, dict] | None:
        by_slot: dict[int, dict] = {}
        for hb in heartbeats(r).values():
            newer = hb["slot"] not in by_slot or hb["pid"] > by_slot[hb["slot"]]["pid"]
            if newer and (host is None or hb["host"] == host):
                by_slot[hb["slot"]] = hb
        return by_slot if len(by_slot) >= n else None
    return poll(ready, timeout, 0.05, f"{n} workers heartbeating")


def wait_exit(proc: Proc, timeout: float) -> tuple[int, float]:
    """(exit code, seconds it took) of a taskexec process."""
    started = time.monotonic()
    code = proc.wait(timeout)
    return code, time.monotonic() - started


def marked(marker: str) -> list[int]:
    """Live processes whose command line carries `marker`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                    p.info["cmdline"] or []):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


def log_lines(proc: Proc, text: str) -> list[str]:
    return [line for line in proc.stderr.splitlines() if text in line]


def wait_log(proc: Proc, text: str, timeout: float) -> str:
    return poll(lambda: next(iter(log_lines(proc, text)), ""), timeout, 0.05, repr(text))


@dataclass
class Datagram:
    at: float  # time.monotonic() when read
    pid: int  # the sender, from SCM_CREDENTIALS
    text: str


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET; records the sender's
    pid of every message from the kernel's credentials, as systemd does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[Datagram] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.path, **extra}

    def read(self) -> list[Datagram]:
        """Everything that arrived since the last read, also appended to `messages`."""
        new = []
        size = struct.calcsize("iII")
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(size))
            except BlockingIOError:
                break
            pid = -1
            for level, kind, body in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", body[:size])[0]
            for line in data.decode().splitlines():
                new.append(Datagram(time.monotonic(), pid, line))
        self.messages += new
        return new

    def texts(self, prefix: str = "") -> list[str]:
        self.read()
        return [m.text for m in self.messages if m.text.startswith(prefix)]

    def wait_for(self, prefix: str, timeout: float) -> Datagram:
        def found() -> Datagram | None:
            self.read()
            return next((m for m in self.messages if m.text.startswith(prefix)), None)
        return poll(found, timeout, 0.02, f"notify message {prefix!r}")

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
