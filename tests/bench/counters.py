"""Counters read around a measurement: Redis's own statistics and the machine's CPU."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
import redis


def redis_stats(r: redis.Redis) -> dict[str, Any]:
    """The server counters the bench compares before and after a run, in one round trip."""
    info = r.info("everything")
    calls = {k[len("cmdstat_"):]: (int(v["calls"]), float(v["usec"]))
             for k, v in info.items() if k.startswith("cmdstat_")}
    return {"reads": int(info["total_reads_processed"]),
            "commands": int(info["total_commands_processed"]),
            "cpu_s": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            "calls": calls}


def stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    calls = {}
    for name, (n, usec) in after["calls"].items():
        n0, usec0 = before["calls"].get(name, (0, 0.0))
        if n > n0:
            calls[name] = (n - n0, usec - usec0)
    return {"reads": after["reads"] - before["reads"],
            "commands": after["commands"] - before["commands"],
            "cpu_s": after["cpu_s"] - before["cpu_s"], "calls": calls}


class CpuWatch:
    """CPU used on this machine by processes that are not the bench's, over one interval.

    The bench's own share is its process and its reaped descendants (os.times: a supervisor's
    reaped workers count in its children times) plus the long-lived redis-server.
    """

    def __init__(self, redis_pid: int) -> None:
        self.redis_pid = redis_pid

    def _now(self) -> tuple[float, float, float, float]:
        t = psutil.cpu_times()
        busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) \
            - getattr(t, "guest_nice", 0.0)
        own = sum(os.times()[:4])
        try:
            r = psutil.Process(self.redis_pid).cpu_times()
            own += r.user + r.system
        except psutil.Error:
            pass
        return time.monotonic(), busy, own, getattr(t, "steal", 0.0)

    def start(self) -> None:
        self._start = self._now()

    def foreign_cores(self) -> float:
        """Mean number of cores busy with other processes since start(), the time a virtual
        machine's host took for others (steal) included."""
        (t0, busy0, own0, _), (t1, busy1, own1, _) = self._start, self._now()
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-6)

    def stolen_cores(self) -> float:
        """Of those, the mean number of cores the host took (steal) since start()."""
        (t0, *_, steal0), (t1, *_, steal1) = self._start, self._now()
        return max(0.0, steal1 - steal0) / max(t1 - t0, 1e-6)

    def wait_quiet(self, max_s: float, threshold: float = 0.15, window_s: float = 0.5) -> float:
        """Wait up to max_s for a window in which other processes use under `threshold` cores;
        returns the last window's figure."""
        deadline = time.monotonic() + max_s
        foreign = 0.0
        while time.monotonic() < deadline:
            self.start()
            time.sleep(window_s)
            foreign = self.foreign_cores()
            if foreign < threshold:
                break
        return foreign
