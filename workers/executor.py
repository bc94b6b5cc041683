"""A thread pool that never accepts more tasks than it has threads."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("taskexec.executor")

# A task, run on a task thread; it may return the next task for that same thread.
Task = Callable[[], "Task | None"]


class BoundedExecutor:
    """Slots are taken on submit and given back only when the caller says the task is settled.

    A slot stays taken until the task's final status is written and its message acknowledged,
    so the number of messages a worker holds never exceeds its threads. The threads take plain
    callables from one queue: no futures, since nobody waits on a task's return value (its
    outcome goes to the store), and they cost time on every task of a busy worker.
    """

    def __init__(self, threads: int, name: str = "task") -> None:
        self.threads = threads
        self._queue: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._lock = threading.Condition(threading.Lock())
        self._busy = 0
        for i in range(threads):
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True).start()

    @property
    def busy(self) -> int:
        return self._busy

    def free_slots(self) -> int:
        return self.threads - self._busy

    def take_slot(self) -> bool:
        """Take a free slot for a task the caller runs on its own task thread."""
        with self._lock:
            if self._busy >= self.threads:
                return False
            self._busy += 1
            return True

    def submit(self, fn: Task) -> None:
        if not self.take_slot():
            raise RuntimeError("no free slot: the caller must read only free_slots() messages")
        self._queue.put(fn)

    def hand(self, fn: Task) -> None:
        """Queue fn for a thread without taking a slot: a task in a slot the caller took and
        passes on, or the consume loop's blocking read, which the loop hands over only with
        a slot free (so a thread is idle) and which takes slots for the tasks it starts."""
        self._queue.put(fn)

    def _work(self) -> None:
        while True:
            fn: Task | None = self._queue.get()
            while fn is not None:  # a task may hand its thread the next one
                try:
                    fn = fn()
                except Exception:  # a bug outside the handler must not cost the pool a thread
                    log.exception("Unexpected error in a task thread; the thread goes on.")
                    fn = None

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._busy -= n
            self._lock.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._busy == 0, timeout_s)

