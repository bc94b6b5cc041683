"""Built-in handlers for trying and testing a deployment: noop, sleep and fail."""

from __future__ import annotations

import time
from typing import Any


def noop(task: dict, ctx: Any) -> dict:
    return {}


def sleep(task: dict, ctx: Any) -> dict:
    """Sleep `seconds` (default 1), checking for cancellation ten times a second."""
    seconds = float(task.get("seconds", 1))
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return {"slept_s": seconds}
        ctx.check_cancel()
        time.sleep(min(left, 0.1))


class TaskFailed(RuntimeError):
    pass


def fail(task: dict, ctx: Any) -> None:
    raise TaskFailed(task.get("error", "this task fails on purpose"))
