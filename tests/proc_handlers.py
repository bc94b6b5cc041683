"""Test handlers for the supervision, signal, recycling and systemd scenarios (S13-S26, S43...).

Registered by tests/support_proc.py; like tests/handlers.py they record runs in the test's
Redis (TASKEXEC_TEST_REDIS_URL) under test:runs:{id}.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any

from tests.handlers import _redis

HANDLERS = {
    "count": "tests.handlers:count",
    "crash_once": "tests.proc_handlers:crash_once",
    "subprocess_exit3": "tests.proc_handlers:subprocess_exit3",
    "subprocess_many": "tests.proc_handlers:subprocess_many",
    "spawn_marked": "tests.proc_handlers:spawn_marked",
    "grow": "tests.proc_handlers:grow",
    "recv_once": "tests.proc_handlers:recv_once",
    "notify_env": "tests.proc_handlers:notify_env",
    "cpu": "tests.proc_handlers:cpu",
    "ignore_cancel": "tests.proc_handlers:ignore_cancel",
    "crash_always": "tests.proc_handlers:crash_always",
}

_kept: list[bytes] = []
_peers: list[socket.socket] = []


def _start(task: dict) -> int:
    """Record a start; returns how many starts the task has had, this one included."""
    return _redis().rpush(f"test:runs:{task['id']}", f"start {time.time()} {os.getpid()}")


def _finish(task: dict) -> None:
    _redis().rpush(f"test:runs:{task['id']}", f"finish {time.time()} {os.getpid()}")


def crash_once(task: dict, ctx: Any) -> dict:
    """Kill the worker process on the first run; succeed on the next."""
    if _start(task) == 1:
        os._exit(1)
    _finish(task)
    return {"pid": os.getpid()}


def crash_always(task: dict, ctx: Any) -> None:
    _start(task)
    os._exit(1)


def subprocess_exit3(task: dict, ctx: Any) -> dict:
    _start(task)
    return {"code": subprocess.run(["sh", "-c", "exit 3"], check=False).returncode}


def subprocess_many(task: dict, ctx: Any) -> dict:
    """Start 20 short subprocesses and wait for each (an ECHILD would raise)."""
    _start(task)
    procs = [subprocess.Popen(["sh", "-c", "sleep 0.2"]) for _ in range(20)]
    return {"ok": sum(1 for p in procs if p.wait(30) == 0)}


def spawn_marked(task: dict, ctx: Any) -> None:
    """Start `sleep 10000` and a busy Python loop, both carrying the marker; then wait."""
    marker = task["marker"]
    sleep = shutil.which("sleep") or "/bin/sleep"
    subprocess.Popen([f"sleep-{marker}", "10000"], executable=sleep)  # argv[0] carries it
    subprocess.Popen([sys.executable, "-c", "while True: pass", marker])
    _start(task)
    time.sleep(float(task.get("seconds", 600)))


def grow(task: dict, ctx: Any) -> dict:
    """Keep `mb` MiB (touched, so resident) for the life of the worker process."""
    _start(task)
    _kept.append(b"\x01" * (int(task.get("mb", 10)) << 20))
    _finish(task)
    return {"pid": os.getpid()}


def recv_once(task: dict, ctx: Any) -> dict:
    """On its first run: block in recv() on a socket that never answers, with no timeout."""
    if _start(task) == 1:
        a, b = socket.socketpair()
        _peers.append(b)  # the other end stays open and silent
        a.recv(1)
    _finish(task)
    return {}


def notify_env(task: dict, ctx: Any) -> dict:
    return {"notify_socket": os.environ.get("NOTIFY_SOCKET"),
            "watchdog": os.environ.get("WATCHDOG_USEC")}


def cpu(task: dict, ctx: Any) -> dict:
    """Pure-Python work (holding the GIL in short slices) for `seconds`."""
    _start(task)
    deadline = time.monotonic() + float(task.get("seconds", 5))
    n = 0
    while time.monotonic() < deadline:
        n += sum(i * i for i in range(1000))
    _finish(task)
    return {"n": n}


def ignore_cancel(task: dict, ctx: Any) -> dict:
    """Sleep `seconds` without ever looking at the cancel flag or the time limit."""
    _start(task)
    time.sleep(float(task.get("seconds", 5)))
    _finish(task)
    return {}

