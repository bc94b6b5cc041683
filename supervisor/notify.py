"""systemd notifications (sd_notify) from the supervisor: readiness, status, watchdog."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("taskexec.notify")

# The loop turns every 0.25 s; pinging at most every 0.5 s keeps a ping inside every second,
# and inside a third of any watchdog period systemd allows.
WATCHDOG_MAX_EVERY_S = 0.5


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET; does nothing when systemd did not ask for them."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_every_s = (min(watchdog_usec / 1e6 / 3, WATCHDOG_MAX_EVERY_S)
                                 if watchdog_usec else 0.0)
        self._last_ping = 0.0
        self._last_status = ""
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls) -> Notifier:
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        wd_pid = os.environ.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and (not wd_pid or wd_pid == str(os.getpid())) \
            else 0
        return cls(address, watchdog)

    def send(self, message: str) -> None:
        if not self.address:
            return
        addr = self.address
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), addr)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s.", message, exc)

    def status(self, text: str) -> None:
        """STATUS=, sent only when it changed."""
        if text != self._last_status:
            self._last_status = text
            self.send("STATUS=" + text)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for `seconds` more before systemd's stop timeout kills the unit."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(max(seconds, 1) * 1e6)}")

    def watchdog(self) -> None:
        if not self.watchdog_every_s:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_every_s:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket (in a forked child: only its copy)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def status_line(workers: Iterable[Any], procs: int, stopping: str | None) -> str:
    """The STATUS= text: workers, busy threads and tasks, from what the workers report."""
    workers = list(workers)
    reports = [w.report() for w in workers]
    busy = sum(r.busy for r in reports)
    if stopping:
        return f"Stopping ({stopping}): {len(reports)} worker(s), {busy} task(s) running"
    booted = sum(1 for w in workers if w.booted and not w.stopping)
    return (f"{booted}/{procs} workers, {busy}/{sum(r.threads for r in reports)} threads busy, "
            f"{sum(r.completed for r in reports)} tasks finished by these workers")
