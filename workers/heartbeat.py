"""The heartbeat thread: tells Redis this consumer lives and renews the leases it holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from workers import scripts
from workers.backoff import Throttle
from workers.broker import Broker
from workers.redisconn import TRANSIENT_ERRORS

log = logging.getLogger("taskexec.heartbeat")


class Heartbeat(threading.Thread):
    """Beats every interval on its own thread, so busy task threads never delay it.

    `snapshot` returns the heartbeat JSON fields; `leases` the held entries by stream.
    """

    def __init__(self, broker: Broker, *, key: str, registry: str, interval_s: float,
                 retention_s: float, snapshot: Callable[[], dict[str, Any]],
                 leases: Callable[[], dict[str, list[str]]],
                 after_beat: Callable[[], object] | None = None) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.broker = broker
        self.key = key
        self.registry = registry
        self.interval_s = interval_s
        self.retention_s = retention_s
        self.snapshot = snapshot
        self.leases = leases
        self.after_beat = after_beat
        self.failures = 0
        self._stop_event = threading.Event()
        self._script = broker.client.register_script(scripts.HEARTBEAT)
        self._throttle = Throttle(60.0)

    def beat(self) -> None:
        """One heartbeat and lease renewal; errors are logged (throttled) and counted."""
        try:
            for stream, entry_id in self.broker.renew(self.leases()):
                log.warning("Message %s on %s is no longer this consumer's (taken over after "
                            "its lease lapsed); its run goes on.", entry_id, stream)
            body = orjson.dumps(self.snapshot())
            _, err = self._script(keys=[self.key, self.registry],
                                  args=[body, self.retention_s, self.broker.consumer])
            if err and self._throttle.ready("registry"):
                log.error("Cannot register in %s: %s (expected a set).", self.registry,
                          err.decode() if isinstance(err, bytes) else err)
            if self.failures:
                log.info("Heartbeats reach Redis again after %d failed.", self.failures)
            self.failures = 0
        except TRANSIENT_ERRORS as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("Heartbeat failed, Redis unavailable: %s.", exc)
        except Exception as exc:  # a heartbeat must never end its thread
            self.failures += 1
            if self._throttle.ready("error"):
                log.error("Heartbeat failed: %s: %s.", type(exc).__name__, exc)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.beat()
            if self.after_beat is not None:
                self._after_beat()
            self._stop_event.wait(self.interval_s)

    def _after_beat(self) -> None:
        # The clean-up duty runs here, between beats: off the consume loop.
        try:
            self.after_beat()
        except TRANSIENT_ERRORS as exc:
            if self._throttle.ready("after"):
                log.warning("Cleanup pass failed, Redis unavailable: %s.", exc)
        except Exception as exc:  # the next interval tries again
            if self._throttle.ready("after-error"):
                log.error("Cleanup pass failed: %s: %s.", type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop_event.set()

    def deregister(self) -> None:
        """Leave the registry and delete the heartbeat history, on a clean stop."""
        try:
            pipe = self.broker.client.pipeline(transaction=False)
            pipe.srem(self.registry, self.broker.consumer)
            pipe.delete(self.key)
            pipe.execute(raise_on_error=False)
        except TRANSIENT_ERRORS as exc:
            log.warning("Could not leave %s on stop: %s.", self.registry, exc)
