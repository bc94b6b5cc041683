"""A thread pool that never accepts more tasks than it has threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class BoundedExecutor:
    """Slots are taken on submit and given back only when the caller says the task is settled.

    A slot stays taken until the task's final status is written and its message acknowledged,
    so the number of messages a worker holds never exceeds its threads.
    """

    def __init__(self, threads: int, name: str = "task") -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._lock = threading.Condition()
        self._busy = 0

    @property
    def busy(self) -> int:
        return self._busy

    def free_slots(self) -> int:
        return self.threads - self._busy

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._busy >= self.threads:
                raise RuntimeError("no free slot: the caller must read only free_slots() messages")
            self._busy += 1
        self._pool.submit(fn)

    def release(self, n: int = 1) -> None:
        with self._lock:
            self._busy -= n
            self._lock.notify_all()

    def wait_for_slot(self, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._busy < self.threads, timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._busy == 0, timeout_s)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
