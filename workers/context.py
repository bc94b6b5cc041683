"""The object a handler gets: progress reports, cancellation checks and a logger."""

from __future__ import annotations

import logging
import time

from workers import jsonsafe
from workers.errors import RetryTask, TaskCancelled, TaskTimeLimit
from workers.redisconn import TRANSIENT_ERRORS
from workers.store import TaskStore

# Cancellation is checked against Redis at most this often per task: handlers may call
# check_cancel() in tight loops.
CANCEL_CHECK_INTERVAL_S = 0.1


class TaskContext:
    """Handed to each handler run; it never exposes the store or the broker."""

    Cancelled = TaskCancelled
    # `raise ctx.Retry("why", delay_s=30)` runs the task again later, up to queue.max_attempts
    # runs in all; any other exception fails the task.
    Retry = RetryTask

    def __init__(self, task_id: str, store: TaskStore, logger: logging.Logger) -> None:
        self.task_id = task_id
        self.logger = logger
        self._store = store
        # BEGIN has just checked the cancel flag atomically: the first check may wait its turn.
        self._checked_at = time.monotonic()
        self._cancelled = False
        self._expired = ""  # why the worker asked this run to stop (its time limit)
        self._unsent: list[str] = []
        self.last_progress: float | None = None  # for the heartbeat's `current`

    def progress(self, value: float | None = None, message: object = "") -> None:
        """Record progress (0..1, never backwards) and a log line; raise if cancelled.

        While Redis is unreachable the update is kept and sent with the next one, so a
        handler never fails because of an outage.
        """
        line = jsonsafe.text(message, 500)
        lines = self._unsent + ([line] if line else [])
        if value is not None:
            self.last_progress = max(self.last_progress or 0.0, float(value))
        try:
            reply = self._store.progress(self.task_id, value, "\n".join(lines))
        except TRANSIENT_ERRORS:
            self._unsent = lines[-20:]
            return
        self._unsent = []
        self._checked_at = time.monotonic()
        if reply != "ok":
            self._cancelled = True
            raise TaskCancelled(f"task {self.task_id} stopped: {reply}")
        if self._expired:
            raise TaskTimeLimit(self._expired)

    def expire(self, reason: str) -> None:
        """Called by the worker when the task is past its time limit: checks now raise."""
        self._expired = reason

    def cancelled(self) -> bool:
        if self._cancelled or self._expired:
            return True
        now = time.monotonic()
        if now - self._checked_at >= CANCEL_CHECK_INTERVAL_S:
            self._checked_at = now
            try:
                self._cancelled = self._store.cancel_requested(self.task_id)
            except TRANSIENT_ERRORS:
                return False  # asked again at the next check, once Redis answers
        return self._cancelled

    def check_cancel(self) -> None:
        if self._expired:
            raise TaskTimeLimit(self._expired)
        if self.cancelled():
            raise TaskCancelled(f"task {self.task_id} was cancelled")
