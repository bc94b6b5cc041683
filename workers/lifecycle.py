"""The worker's side of supervision: liveness, title, recycling limits and task time limits.

The worker loop calls `tick()` on every turn (and while draining). It stamps liveness into the
channel the supervisor reads, keeps the process title current, takes the dead consumers the
supervisor hands over, and decides when this worker should be replaced: after
`executor.max_tasks_per_worker` tasks, above `memory.max_rss_mb`, or when a task outlived
`executor.task_time_limit_s` by the graceful timeout (a thread cannot be killed; a process can).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NoReturn

import psutil

from workers import titles
from workers.channel import Channel, WorkerState
from workers.redisconn import TRANSIENT_ERRORS
from workers.store import Completion

log = logging.getLogger("taskexec.worker")

MIB = 1024 * 1024
RSS_EVERY_S = 1.0
LIMITS_EVERY_S = 0.25
NO_QUOTA = 1 << 30


class Lifecycle:
    """Built at the end of a successful boot: from then on the worker counts as booted."""

    def __init__(self, worker: Any, channel: Channel | None) -> None:
        self.w = worker
        self.channel = channel
        s = worker.settings
        self.max_tasks = s.executor.max_tasks_per_worker
        self.max_rss = s.memory.max_rss_mb * MIB
        self.time_limit_s = s.executor.task_time_limit_s
        self.hard_limit_s = self.time_limit_s + s.executor.graceful_timeout_s
        self.reason: str | None = None
        self._proc = psutil.Process()
        self.rss = self._measure_rss()
        if self.max_rss and self.rss >= self.max_rss:
            # Recycling it would give a fresh worker just as big, again and again.
            log.warning("Worker %d (pid %d) uses %d MiB right after boot, already above "
                        "memory.max_rss_mb %d; it is not recycled for memory. Raise the limit.",
                        worker.slot, worker.pid, self.rss // MIB, s.memory.max_rss_mb)
            self.max_rss = 0
        self._rss_at = time.monotonic()
        self._rss_completed = worker.completed
        self._limits_at = 0.0
        self._expired: set[str] = set()
        self._adopted: set[str] = set()
        self._title = ""
        self.tick()

    # Called by the worker loop ---------------------------------------------------------------

    def tick(self) -> None:
        draining = self.draining
        if not draining:
            self._take_mail()
            self._check_rss()
        if self.time_limit_s:
            self._check_time_limits()
        busy = self.w.executor.busy
        title = titles.worker_title(self.w.slot, busy, self.w.executor.threads,
                                    self.w.settings.queue.names, draining)
        if title != self._title:
            self._title = title
            titles.set_title(title)
        if self.channel is not None:
            self.channel.report(WorkerState.DRAINING if draining else WorkerState.RUNNING,
                                busy=busy, threads=self.w.executor.threads,
                                started=self.started, completed=self.w.completed,
                                rss_bytes=self.rss)

    @property
    def draining(self) -> bool:
        return self.w.stop_signal is not None or self.reason is not None

    @property
    def started(self) -> int:
        return self.w.completed + len(self.w.running)

    def quota(self) -> int:
        """Messages this worker may still read before its task limit."""
        if not self.max_tasks:
            return NO_QUOTA
        return max(0, self.max_tasks - self.started)

    def recycle_due(self) -> bool:
        if self.reason is None and self.max_tasks and self.started >= self.max_tasks:
            self.recycle(f"it began {self.started} tasks (executor.max_tasks_per_worker "
                         f"{self.max_tasks})")
        return self.reason is not None

    def recycle(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        log.info("Worker %d (pid %d) will be replaced: %s; it stops reading and finishes its "
                 "%d running task(s).", self.w.slot, self.w.pid, reason, len(self.w.running))
        if self.channel is not None:
            self.channel.set_reason(reason)

    # Duties ------------------------------------------------------------------------------------

    def _take_mail(self) -> None:
        if self.channel is None:
            return
        items = self.channel.take_mail()
        for consumer, death in items or ():
            if consumer not in self._adopted:
                self._adopted.add(consumer)
                self.w.takeover.add_predecessor(consumer, death)
                log.info("Worker %d takes over the messages of %s (%s).", self.w.slot,
                         consumer, death)

    def _measure_rss(self) -> int:
        try:
            return int(self._proc.memory_info().rss)
        except psutil.Error:
            return 0

    def _check_rss(self) -> None:
        now = time.monotonic()
        completed = self.w.completed
        # With a limit it is measured after tasks complete, so a growing worker is replaced at
        # once; without one it is only reported, and once a second is enough (each reading is
        # a /proc read, and a busy worker completes thousands of tasks a second).
        if now - self._rss_at < RSS_EVERY_S and not (
                self.max_rss and completed != self._rss_completed):
            return
        self._rss_at, self._rss_completed = now, completed
        self.within_memory()

    def within_memory(self) -> bool:
        """Measure the RSS now; above memory.max_rss_mb the worker is to be replaced."""
        self.rss = self._measure_rss()
        if self.max_rss and self.rss > self.max_rss:
            self.recycle(f"its RSS of {self.rss // MIB} MiB is above memory.max_rss_mb "
                         f"{self.max_rss // MIB}")
        return self.reason is None

    def _check_time_limits(self) -> None:
        now = time.monotonic()
        if now - self._limits_at < LIMITS_EVERY_S:
            return
        self._limits_at = now
        wall = time.time()
        with self.w._lock:
            runs = list(self.w.running.values())
        for run in runs:
            age = wall - run.begin_at
            if age >= self.time_limit_s and run.entry_id not in self._expired:
                self._expired.add(run.entry_id)
                log.warning("Task %s (%s) has run %.0f s, past executor.task_time_limit_s %g; "
                            "asking it to stop.", run.task_id, run.task_type, age,
                            self.time_limit_s)
                if run.ctx is not None:
                    run.ctx.expire(f"task {run.task_id} exceeded executor.task_time_limit_s "
                                   f"{self.time_limit_s:g}")
            if age >= self.hard_limit_s:
                self._abandon(run, age)

    def _abandon(self, run: Any, age: float) -> None:
        """Record a task that ignored its soft limit as failed; replace the worker, whose
        thread it still holds (its slot stays taken until the thread returns)."""
        with self.w._lock:
            if self.w.running.pop(run.entry_id, None) is None:
                return
        error = (f"TaskTimeLimit: ran {age:.0f} s, past executor.task_time_limit_s "
                 f"{self.time_limit_s:g} and the graceful timeout, without stopping")
        try:
            self.w.store.finish_many([Completion(run.task_id, run.stream, run.entry_id,
                                                 "failed", "", error, "Task failed: " + error)])
        except TRANSIENT_ERRORS as exc:
            with self.w._lock:
                self.w.running[run.entry_id] = run  # left for reclaim if the worker ends first
            log.warning("Task %s could not be marked failed yet: %s.", run.task_id, exc)
            return
        with self.w._lock:
            self.w.failed += 1
        log.error("Task %s (%s) %s; marked failed.", run.task_id, run.task_type, error)
        self.recycle(f"task {run.task_id} is stuck in a thread past its time limit")


def kill_descendants() -> int:
    """SIGKILL every process this one started (and theirs): they die with the worker."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass
    return len(children)


def end_process(code: int) -> NoReturn:
    """Leave at once, taking the processes that tasks started along."""
    kill_descendants()
    os._exit(code)
