"""Test handlers for the delivery scenarios: poison tasks, odd results, progress and retry."""

from __future__ import annotations

import datetime
import decimal
import os
import signal
import threading
import time
from typing import Any

from tests.handlers import _redis, count

HANDLERS = {
    "poison_kill": "tests.delivery_handlers:poison_kill",
    "poison_exit": "tests.delivery_handlers:poison_exit",
    "poison_segv": "tests.delivery_handlers:poison_segv",
    "raise_exit": "tests.delivery_handlers:raise_exit",
    "raise_interrupt": "tests.delivery_handlers:raise_interrupt",
    "steps": "tests.delivery_handlers:steps",
    "odd_result": "tests.delivery_handlers:odd_result",
    "odd_progress": "tests.delivery_handlers:odd_progress",
    "retry_once": "tests.delivery_handlers:retry_once",
    "echo_v2": "tests.delivery_handlers:echo",
}


def _started(task: dict) -> None:
    _redis().rpush(f"test:runs:{task['id']}", f"start {time.time()} {os.getpid()}")


def poison_kill(task: dict, ctx: Any) -> None:
    _started(task)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # ok: the handler never returns; its worker is already dying


def poison_exit(task: dict, ctx: Any) -> None:
    _started(task)
    os._exit(1)


def poison_segv(task: dict, ctx: Any) -> None:
    _started(task)
    # To this thread, as a real fault would be; and never return, even while the kernel
    # takes its time over the core dump.
    signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
    time.sleep(60)  # ok: the handler never returns; its worker is already dying


def raise_exit(task: dict, ctx: Any) -> None:
    raise SystemExit(7)


def raise_interrupt(task: dict, ctx: Any) -> None:
    raise KeyboardInterrupt("stop")


def steps(task: dict, ctx: Any) -> dict:
    """`n` steps of `step_s`, reporting progress after each."""
    _started(task)
    n = int(task.get("n", 200))
    for i in range(n):
        time.sleep(float(task.get("step_s", 0.5)))
        ctx.progress((i + 1) / (n + 1), f"step {i + 1}/{n}")
    return {"steps": n}


def odd_result(task: dict, ctx: Any) -> Any:
    kind = task["kind"]
    if kind == "int_keys":
        return {1: "a", 2: "b"}
    if kind == "set":
        return {"s": {3, 1, 2}}
    if kind == "datetime":
        return {"at": datetime.datetime(2026, 1, 2, 3, 4, 5)}
    if kind == "decimal":
        return {"d": decimal.Decimal("1.10")}
    if kind == "bytes":
        return {"b": b"\x00\x01"}
    if kind == "object":
        return {"o": object()}
    deep: dict = {}
    cur = deep
    for _ in range(10_000):
        cur["a"] = {}
        cur = cur["a"]
    return deep


def odd_progress(task: dict, ctx: Any) -> dict:
    ctx.progress(0.5, ValueError("an exception as the message"))
    return {}


def retry_once(task: dict, ctx: Any) -> dict:
    _started(task)
    r = _redis()
    if r.incr(f"test:retry:{task['id']}") == 1 or task.get("always"):
        raise ctx.Retry("not yet", delay_s=float(task.get("delay_s", 1)))
    return {"ok": True}


def echo(task: dict, ctx: Any) -> dict:
    return count(task, ctx)
