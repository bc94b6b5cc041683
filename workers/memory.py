"""Memory debugging per process: tracemalloc snapshots on SIGUSR1, tracing stopped on SIGUSR2.

A snapshot is written to `{memory.snapshot_dir}/{pid}_snapshot_{YYYYmmdd_HHMMSS}.trace` (a
`_2`, `_3`... suffix when one second holds several), first under a hidden temporary name and then
renamed, so a reader never sees half a file. `taskexec memory top` reads them.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import signal
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

log = logging.getLogger("taskexec.memory")

SNAPSHOT_SUFFIX = ".trace"


def snapshot_glob(pid: int) -> str:
    """The file pattern of one process's snapshots."""
    return f"{pid}_snapshot_*{SNAPSHOT_SUFFIX}"


def snapshot_path(folder: Path, pid: int, when: float) -> Path:
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(when))
    path = folder / f"{pid}_snapshot_{stamp}{SNAPSHOT_SUFFIX}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{pid}_snapshot_{stamp}_{n}{SNAPSHOT_SUFFIX}"
    return path


def start_tracing(role: str, why: str) -> None:
    if not tracemalloc.is_tracing():
        tracemalloc.start()
        log.info("%s (pid %d) started memory tracing (%s).", role, os.getpid(), why)


def stop_tracing(role: str) -> bool:
    """Stop tracing and free its memory; a second stop only says so. True if it was on."""
    if not tracemalloc.is_tracing():
        log.info("%s (pid %d): memory tracing is already off.", role, os.getpid())
        return False
    tracemalloc.stop()
    log.info("%s (pid %d) stopped memory tracing.", role, os.getpid())
    return True


def write_snapshot(folder: Path, role: str) -> Path:
    """Start tracing if it is off, write one snapshot and log what it cost; returns its path."""
    started = time.monotonic()
    start_tracing(role, "snapshot requested")
    snap = tracemalloc.take_snapshot()
    folder.mkdir(parents=True, exist_ok=True)
    path = snapshot_path(folder, os.getpid(), time.time())
    part = path.with_name(f".{path.name}.part")
    try:
        snap.dump(str(part))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    current, peak = tracemalloc.get_traced_memory()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    log.info("%s (pid %d) wrote memory snapshot %s in %.2f s: max RSS %.1f MiB, traced %.1f MiB "
             "now and %.1f MiB at peak, %d traces.", role, os.getpid(), path,
             time.monotonic() - started, max_rss / 2**20, current / 2**20, peak / 2**20,
             len(snap.traces))
    return path


def snapshot_once(settings: Any, role: str) -> Path | None:
    """A snapshot of this process now, for a loop with little heap (the supervisor's).

    Failures are logged, never raised: a snapshot must not take a service down.
    """
    try:
        return write_snapshot(Path(settings.memory.snapshot_dir), role)
    except Exception as exc:
        log.error("%s (pid %d) could not write a memory snapshot: %s: %s.", role, os.getpid(),
                  type(exc).__name__, exc)
        return None


class MemoryDebugger:
    """USR1 and USR2 of a worker: the handlers only record, a dedicated thread does the work.

    Off the consume loop and the heartbeat thread, so both go on while a snapshot is taken
    (tracemalloc holds the GIL while it copies its traces, which is the cost left). Requests
    that arrive while a snapshot is written are merged into it.
    """

    def __init__(self, snapshot_dir: str | Path, role: str, trace_on_start: bool) -> None:
        self.snapshot_dir = Path(snapshot_dir)
        self.role = role
        self.trace_on_start = trace_on_start
        self.written = 0
        self._requests: queue.SimpleQueue[int] = queue.SimpleQueue()  # reentrant: safe in handlers

    @classmethod
    def from_settings(cls, settings: Any, role: str) -> MemoryDebugger:
        return cls(settings.memory.snapshot_dir, role, settings.memory.trace_on_start)

    def on_signal(self, signum: int, frame: object) -> None:
        self._requests.put_nowait(signum)

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, self.on_signal)
        signal.signal(signal.SIGUSR2, self.on_signal)

    def start(self) -> None:
        """Trace from boot if configured (after fork: tracing inherited from the parent is
        stopped unless configured), then start the thread that serves the requests."""
        if self.trace_on_start:
            start_tracing(self.role, "memory.trace_on_start")
        elif tracemalloc.is_tracing():
            tracemalloc.stop()
        threading.Thread(target=self._run, name="memory", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                signum = self._requests.get(timeout=5.0)
            except queue.Empty:
                continue
            try:
                self.serve(signum)
            except Exception as exc:  # the thread must outlive a failed snapshot
                log.error("%s (pid %d) could not serve a memory request: %s: %s.", self.role,
                          os.getpid(), type(exc).__name__, exc)

    def serve(self, signum: int) -> None:
        if signum != signal.SIGUSR1:
            stop_tracing(self.role)
            return
        write_snapshot(self.snapshot_dir, self.role)
        self.written += 1
        merged, stops = 0, 0
        while True:
            try:
                nxt = self._requests.get_nowait()
            except queue.Empty:
                break
            if nxt == signal.SIGUSR1:
                merged += 1
            else:
                stops += 1
        if merged:
            log.info("%s (pid %d): %d snapshot request(s) that came during the snapshot were "
                     "merged into it.", self.role, os.getpid(), merged)
        for _ in range(stops):
            stop_tracing(self.role)
