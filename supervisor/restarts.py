"""When a dead worker's slot is spawned again, and when failing boots halt the supervisor.

- A clean exit (status 0: drained, recycled, told to stop) is respawned at once.
- A worker that booted and then died is respawned at once: it proved the set-up works and its
  tasks wait for the new worker. Only a slot that keeps dying soon after its boots is slowed
  down, by 0.5, 1, 2 s (never more: the deaths may be an operator's or the OOM killer's).
- A worker that exits 5 before booting found Redis away: its slot is retried with growing
  delays up to `supervisor.restart_backoff_max_s`, and that is not a failed boot.
- Any other death before the boot finished is a failed boot: delays 0.5, 1, 2, 4 ... s up to
  `supervisor.restart_backoff_max_s`; after `supervisor.boot_failures_max` of them in a row in
  one slot, with no successful boot in between, the supervisor halts with exit code 6.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass, field

from workers.exitcodes import ExitCode
from workers.worker import Predecessor

BACKOFF_BASE_S = 0.5
CRASH_DELAY_MAX_S = 2.0
HEALTHY_UPTIME_S = 10.0  # a worker up this long resets its slot's count of crashes


class Death(enum.Enum):
    CLEAN = "clean"
    CRASH = "crash"
    NO_REDIS = "redis unavailable"
    BOOT_FAILURE = "boot failure"


@dataclass
class SlotState:
    crashes: int = 0  # deaths soon after a boot, in a row
    boot_failures: int = 0  # failed boots in a row
    no_redis: int = 0  # boots that found Redis away, in a row
    next_spawn_at: float = 0.0
    predecessors: list[Predecessor] = field(default_factory=list)  # for the next worker
    handed: list[list[str]] = field(default_factory=list)  # posted to the live worker


@dataclass(frozen=True)
class Verdict:
    death: Death
    delay_s: float
    halt: bool = False


def growing(n: int, cap_s: float) -> float:
    """0.5, 1, 2, 4 ... seconds for the n-th failure in a row, at most cap_s."""
    return min(BACKOFF_BASE_S * 2 ** max(n - 1, 0), cap_s)


def judge(slot: SlotState, *, booted: bool, status: int, uptime_s: float, backoff_max_s: float,
          boot_failures_max: int) -> Verdict:
    """Classify one worker's death and update its slot's counters."""
    exited = os.WIFEXITED(status)
    code = os.WEXITSTATUS(status) if exited else None
    if booted:
        slot.boot_failures = slot.no_redis = 0
    if code == 0:
        slot.crashes = 0
        return Verdict(Death.CLEAN, 0.0)
    if booted:
        if uptime_s >= HEALTHY_UPTIME_S:
            slot.crashes = 0
        slot.crashes += 1
        delay = 0.0 if slot.crashes == 1 else growing(slot.crashes - 1, min(
            backoff_max_s, CRASH_DELAY_MAX_S))
        return Verdict(Death.CRASH, delay)
    if code == ExitCode.REDIS_UNAVAILABLE:
        slot.no_redis += 1
        return Verdict(Death.NO_REDIS, growing(slot.no_redis, backoff_max_s))
    slot.boot_failures += 1
    return Verdict(Death.BOOT_FAILURE, growing(slot.boot_failures, backoff_max_s),
                   halt=slot.boot_failures >= boot_failures_max)


def report(v: Verdict, slot: int, pid: int, death: str, held: list[str],
           tail: str) -> tuple[int, str]:
    """(log level, the one line that tells an operator what happened and what comes next)."""
    if v.death is Death.CLEAN:
        return logging.INFO, f"Worker {slot} (pid {pid}) exited cleanly."
    then = f"respawning in {v.delay_s:.1f} s" if v.delay_s else "respawning now"
    if v.death is Death.CRASH:
        tasks = f" while running task(s) {', '.join(held)}" if held else ""
        return logging.ERROR, f"Worker {slot} (pid {pid}) {death}{tasks}; {then}."
    words = f"; its last words: {tail}" if tail else ""
    return logging.ERROR, (f"Worker {slot} (pid {pid}) {death} before it booted "
                           f"({v.death.value}){words}; {then}.")
