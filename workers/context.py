"""The object a handler gets: progress reports, cancellation checks and a logger."""

from __future__ import annotations

import logging
import time

from workers import jsonsafe
from workers.errors import RetryTask, TaskCancelled
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
        self._checked_at = 0.0
        self._cancelled = False

    def progress(self, value: float | None = None, message: object = "") -> None:
        """Record progress (0..1, never backwards) and a log line; raise if cancelled."""
        reply = self._store.progress(self.task_id, value, jsonsafe.text(message, 500))
        self._checked_at = time.monotonic()
        if reply != "ok":
            self._cancelled = True
            raise TaskCancelled(f"task {self.task_id} stopped: {reply}")

    def cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._checked_at >= CANCEL_CHECK_INTERVAL_S:
            self._checked_at = now
            self._cancelled = self._store.cancel_requested(self.task_id)
        return self._cancelled

    def check_cancel(self) -> None:
        if self.cancelled():
            raise TaskCancelled(f"task {self.task_id} was cancelled")
