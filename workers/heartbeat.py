"""The heartbeat thread: tells Redis this consumer lives and renews the leases it holds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis

from workers import beatscripts
from workers.backoff import Throttle
from workers.broker import Broker
from workers.outage import Outage
from workers.redisconn import TRANSIENT_ERRORS

log = logging.getLogger("taskexec.heartbeat")


class Heartbeat(threading.Thread):
    """Beats every interval on its own thread, so busy task threads never delay it.

    `snapshot` returns the heartbeat JSON fields; `leases` the held entries by stream. With
    `client`, beats go over that connection of their own (named after the consumer), so a pool
    busy with task threads never delays them. Beats keep a fixed schedule: a slow beat or a
    clean-up pass does not push the next ones back. The beats and the clean-up pass each report
    Redis's outages to the process's `outage`: one warning for all of its duties.
    """

    def __init__(self, broker: Broker, *, key: str, registry: str, interval_s: float,
                 retention_s: float, snapshot: Callable[[], dict[str, Any]],
                 leases: Callable[[], dict[str, list[str]]], outage: Outage,
                 after_beat: Callable[[], object] | None = None,
                 client: redis.Redis | None = None) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.outage = outage.duty("heartbeats")
        self._after_outage = outage.duty("cluster clean-up")
        if client is not None:
            broker = Broker(client, None, group=broker.group, consumer=broker.consumer)
        self.broker = broker
        self.key = key
        self.registry = registry
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.max_entries = beatscripts.max_entries(retention_s, interval_s)
        self.snapshot = snapshot
        self.leases = leases
        self.after_beat = after_beat
        self.failures = 0
        self.beats = 0
        self._stop_event = threading.Event()
        self._beat_lock = threading.Lock()
        self._left = False  # deregistered: no beat may bring the consumer back
        self._script = broker.client.register_script(beatscripts.BEAT)
        self._throttle = Throttle(60.0)

    def beat(self) -> None:
        """One heartbeat and lease renewal; errors are logged (throttled) and counted.

        A dropped connection is retried at once on a new one, so it costs one warning and the
        beat stays on time; an outage costs one warning, and one line when it ends.
        """
        with self._beat_lock:
            if self._left:
                return
            try:
                try:
                    self._beat_once()
                except TRANSIENT_ERRORS as exc:
                    # Only a broken connection is worth a new one at once. A timeout is a hung
                    # server (a new connection would wait a second socket timeout), READONLY
                    # or LOADING the server's state, which a new connection meets as well.
                    if (self.failures or not isinstance(exc, (redis.ConnectionError, OSError))
                            or isinstance(exc, redis.exceptions.BusyLoadingError)):
                        raise
                    self._beat_once()  # the pool replaces a connection that broke
                    log.warning("Heartbeat connection of %s broke (%s: %s); the beat went "
                                "through on a new one.", self.broker.consumer,
                                type(exc).__name__, exc)
            except TRANSIENT_ERRORS as exc:
                self.failures += 1
                self.outage.failed(exc)
            except Exception as exc:  # a heartbeat must never end its thread
                self.failures += 1
                if self._throttle.ready("error"):
                    log.error("Heartbeat failed: %s: %s.", type(exc).__name__, exc)

    def _beat_once(self) -> None:
        for stream, entry_id in self.broker.renew(self.leases()):
            log.warning("Message %s on %s is no longer this consumer's (taken over after "
                        "its lease lapsed); its run goes on.", entry_id, stream)
        body = orjson.dumps(self.snapshot())
        _, key, kind = self._script(keys=[self.key, self.registry], args=[
            body, self.retention_s, self.broker.consumer, self.max_entries])
        if key and self._throttle.ready("type"):
            log.error("Key %s is a %s, expected a %s; %s cannot %s. Tasks still run.",
                      _text(key), _text(kind), "set" if _text(key) == self.registry else "zset",
                      self.broker.consumer, "register" if _text(key) == self.registry else
                      "record heartbeats")
        if self.failures:
            log.info("Heartbeats reach Redis again after %d failed.", self.failures)
        self.failures = 0
        self.beats += 1
        self.outage.succeeded()

    def run(self) -> None:
        # The first beat was sent at boot; from here on, one per interval on a fixed grid.
        next_at = time.monotonic() + self.interval_s
        while not self._stop_event.wait(max(0.0, next_at - time.monotonic())):
            self.beat()
            # No clean-up pass while beats fail: Redis is away, one warning of it is enough.
            if self.after_beat is not None and not self.failures:
                self._after_beat()
            now = time.monotonic()
            next_at += self.interval_s
            if next_at <= now:  # stalled (GIL held, slow pass): skip the missed beats
                next_at = now + self.interval_s - (now - next_at) % self.interval_s

    def _after_beat(self) -> None:
        # The clean-up duty runs here, between beats: off the consume loop.
        try:
            self.after_beat()
        except TRANSIENT_ERRORS as exc:
            # Redis went away between the beat and the pass: the same outage, not a warning
            # of its own.
            self._after_outage.failed(exc)
            return
        except Exception as exc:  # the next interval tries again
            if self._throttle.ready("after-error"):
                log.error("Cleanup pass failed: %s: %s.", type(exc).__name__, exc)
        self._after_outage.succeeded()  # Redis answered, if only with an error

    def stop(self) -> None:
        self._stop_event.set()

    def deregister(self) -> None:
        """Leave the registry and delete the heartbeat history, on a clean stop.

        Under the beat lock, so a beat in flight cannot write the consumer back afterwards.
        """
        with self._beat_lock:
            self._left = True
            try:
                pipe = self.broker.client.pipeline(transaction=False)
                pipe.srem(self.registry, self.broker.consumer)
                pipe.delete(self.key)
                pipe.execute(raise_on_error=False)
            except TRANSIENT_ERRORS as exc:
                log.warning("Could not leave %s on stop: %s.", self.registry, exc)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
