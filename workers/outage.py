"""One warning when a process loses Redis, one line when it answers again: never one per retry.

A worker has several duties that meet the same outage on their own threads: the consume loop,
the task threads writing final statuses, the heartbeat and the clean-up pass that follows it.
Each reports to its `Duty`; the process's `Outage` logs a warning when the first duty starts
failing and one line once every failing duty works again, with how long it lasted. Everything
in between goes to debug level.
"""

from __future__ import annotations

import logging
import threading
import time


class Outage:
    """The Redis outage as one process sees it, from all of its duties. Thread-safe."""

    def __init__(self, logger: logging.Logger, who: str) -> None:
        self.logger = logger
        self.who = who
        self.since: float | None = None
        self.outages = 0
        self._failing: dict[str, int] = {}  # duty -> failures in this outage
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.since is not None

    def duty(self, name: str) -> Duty:
        return Duty(self, name)

    def failed(self, duty: str, exc: BaseException) -> None:
        with self._lock:
            first = self.since is None
            if first:
                self.since = time.monotonic()
                self.outages += 1
            self._failing[duty] = self._failing.get(duty, 0) + 1
        if first:
            self.logger.warning("%s: Redis unavailable (%s: %s: %s); retrying with backoff, "
                                "running tasks go on.", self.who, duty, type(exc).__name__,
                                _one_line(exc))
        else:
            self.logger.debug("%s: Redis still unavailable (%s: %s).", self.who, duty,
                              _one_line(exc))

    def succeeded(self, duty: str) -> None:
        with self._lock:
            if duty not in self._failing:
                return
            del self._failing[duty]
            if self._failing or self.since is None:
                return
            lasted, self.since = time.monotonic() - self.since, None
        self.logger.info("%s: Redis answers again, %.1f s after the first failure.", self.who,
                         lasted)


class Duty:
    """One duty's view of its process's Outage."""

    def __init__(self, outage: Outage, name: str) -> None:
        self.outage = outage
        self.name = name

    def failed(self, exc: BaseException) -> None:
        self.outage.failed(self.name, exc)

    def succeeded(self) -> None:
        self.outage.succeeded(self.name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
