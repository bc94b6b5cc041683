"""Test handlers for memory and heartbeat scenarios: a leak, a memory holder, GIL hogs."""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

_LEAKED: list[bytes] = []  # grows on purpose: the leak `taskexec memory top --vs` must find


def leak(task: dict, ctx: Any) -> dict:
    """Keep `kib` KiB more for the life of the process, as many 1 KiB objects."""
    for _ in range(int(task.get("kib", 1024))):
        _LEAKED.append(os.urandom(1024))  # LEAK-LINE
    return {"pid": os.getpid(), "leaked": len(_LEAKED)}


def hold(task: dict, ctx: Any) -> dict:
    """Hold about `mb` MB of small objects for `seconds`, replacing some of them all the time
    (so a tracer started meanwhile sees live allocations)."""
    objects = [os.urandom(100) for _ in range(int(task.get("mb", 10)) * 7000)]
    deadline = time.monotonic() + float(task.get("seconds", 10))
    while time.monotonic() < deadline:
        ctx.check_cancel()
        for _ in range(500):
            objects[random.randrange(len(objects))] = os.urandom(100)
        time.sleep(0.02)  # ok: the handler's own pace, not a wait
    return {"pid": os.getpid(), "objects": len(objects)}


def _backtracking_seconds(n: int) -> float:
    # CPU time of this thread: waiting for the GIL held by other task threads does not count.
    started = time.thread_time()
    re.match(r"(a+)+$", "a" * n + "b")
    return time.thread_time() - started


def regex(task: dict, ctx: Any) -> dict:
    """A catastrophic regular-expression match holding the GIL for about `seconds`.

    The engine doubles its work with each character; one short calibration run picks the length
    whose single match (one C call, the GIL never released) lasts about as long as asked.
    """
    target = float(task.get("seconds", 5))
    n, took = 16, _backtracking_seconds(16)
    while took < 0.1:
        n += 1
        took = _backtracking_seconds(n)
    while took < target / 1.4:
        n += 1
        took *= 2
    started = time.monotonic()
    re.match(r"(a+)+$", "a" * n + "b")
    return {"pid": os.getpid(), "n": n, "held_s": round(time.monotonic() - started, 2)}


def spin(task: dict, ctx: Any) -> dict:
    """A pure-Python CPU loop for `seconds` (it lets other threads run between bytecodes)."""
    deadline = time.monotonic() + float(task.get("seconds", 5))
    x = 0
    while time.monotonic() < deadline:
        for i in range(10000):
            x = (x * 31 + i) % 1000003
    return {"pid": os.getpid(), "x": x}


HANDLERS = {name: f"tests.memhandlers:{name}" for name in ("leak", "hold", "regex", "spin")}
