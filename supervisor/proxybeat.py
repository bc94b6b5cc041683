"""Heartbeats the supervisor writes for a live worker whose own heartbeats stopped.

A task that holds the GIL (a catastrophic regular expression, a long C call) stops every thread
of its process, the heartbeat thread too; peers would then judge the worker dead and take over
its tasks, which are still running. The supervisor knows the worker lives (it is its child and
not a zombie), so while the worker's last beat is older than two intervals it writes one in the
worker's name, renews the leases that consumer still owns, and keeps it in the registry. It
never writes for a consumer without heartbeat history: one that left cleanly stays gone. The
liveness timeout (`supervisor.worker_timeout_s`) still ends a worker stuck for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil
import redis

from workers import beatscripts
from workers.backoff import Throttle
from workers.keys import Keys
from workers.outage import Duty
from workers.redisconn import TRANSIENT_ERRORS

log = logging.getLogger("taskexec.supervisor")

HOLD_S = 10**9  # a silence no heartbeat reaches: beat_for only checks


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class ProxyEpisode:
    """A stretch of time in which the supervisor beats for one worker."""

    beats: int = 0
    last_score: float = 0.0  # server time of the last beat it wrote


class ProxyBeat:
    """Checks each worker every half interval; writes only for those whose beats stopped."""

    def __init__(self, settings: Any, client: redis.Redis, *, supervisor_pid: int,
                 outage: Duty) -> None:
        self.client = client
        self.outage = outage  # the supervisor's: one warning per outage, not one per duty
        self.settings = settings
        self.writer = f"supervisor {supervisor_pid}"
        self.keys = Keys.from_settings(settings.keys)
        self._script = client.register_script(beatscripts.PROXY_BEAT)
        self._next_at = 0.0
        # Right after an outage every worker's last beat is old: they could not write either.
        # Their own beats resume within an interval, so none is judged silent until then.
        self._failing = False
        self._hold_until = 0.0
        self._throttle = Throttle(60.0)
        self.proxied: dict[str, ProxyEpisode] = {}  # consumers it beats for now

    def tick(self, workers: Iterable[Any]) -> None:
        """Called on every pass of the supervisor's loop; cheap when nothing is due."""
        interval = self.settings.heartbeat.interval_s
        now = time.monotonic()
        if now < self._next_at:
            return
        self._next_at = now + interval / 2
        hold = self._failing or now < self._hold_until
        for w in list(workers):
            if not _alive(w.pid):  # reaped, or a zombie about to be
                continue
            try:
                self.beat_for(w.consumer, w.settings or self.settings, hold=hold)
            except TRANSIENT_ERRORS as exc:
                self.outage.failed(exc)
                self._failing = True
                return
            except Exception as exc:  # the loop must go on
                if self._throttle.ready("error"):
                    log.error("Heartbeat on behalf of %s failed: %s: %s.", w.consumer,
                              type(exc).__name__, exc)
                continue
            if not hold:  # a check that would have written: the outage is over for this duty
                self.outage.succeeded()
        if self._failing:
            self._failing, self._hold_until = False, now + 2 * interval

    def beat_for(self, consumer: str, settings: Any, hold: bool = False) -> str:
        """'beat' if a heartbeat was written for `consumer`, else 'fresh' or 'gone'; with
        `hold` every beat counts as fresh (only its owner is checked)."""
        hb = settings.heartbeat
        silent_s = HOLD_S if hold else 2 * hb.interval_s
        streams = [s for q in settings.queue.names
                   for s in self.keys.streams(q, settings.queue.priorities)]
        outcome, renewed, key, kind, score = self._script(
            keys=[consumer, self.keys.registry, *streams],
            args=[silent_s, hb.retention_s, consumer,
                  beatscripts.max_entries(hb.retention_s, hb.interval_s), self.keys.group,
                  self.writer, datetime.now().isoformat(timespec="milliseconds")])
        outcome, score = _text(outcome), float(score or 0)
        if outcome == "beat":
            episode = self.proxied.setdefault(consumer, ProxyEpisode())
            if not episode.beats:
                log.warning("Worker %s sends no heartbeats though its process lives (a task "
                            "holding the GIL?); the supervisor beats for it and renews its %d "
                            "lease(s).", consumer, int(renewed))
            episode.beats += 1
            episode.last_score = score
            if key and self._throttle.ready("type"):
                log.error("Key %s is a %s, expected a set; %s cannot be registered.",
                          _text(key), _text(kind), consumer)
        elif outcome == "fresh" and consumer in self.proxied:
            if abs(score - self.proxied[consumer].last_score) > 1e-3:  # a beat of its own
                episode = self.proxied.pop(consumer)
                log.info("Worker %s beats again by itself; the supervisor wrote %d heartbeat(s) "
                         "for it.", consumer, episode.beats)
        elif outcome == "gone":
            self.proxied.pop(consumer, None)
        return outcome

