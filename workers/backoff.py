"""Jittered exponential backoff and log throttling for loops that meet Redis errors."""

from __future__ import annotations

import random
import time


class Backoff:
    """Delays of base * 2**n, capped, with full jitter so many workers do not retry in step."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.failures, 20)))
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


class Throttle:
    """True at most once per `every_s` for each key: one warning per outage, not per retry."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.every_s:
            self._last[key] = now
            return True
        return False
