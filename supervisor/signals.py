"""The supervisor's signal queue: handlers only record, the loop sleeps until one arrives."""

from __future__ import annotations

import os
import queue
import select
import signal
from collections.abc import Iterator


def defer_stops() -> list[int]:
    """From now until the supervisor's loop installs its handlers, a stop signal (TERM, INT,
    QUIT) is kept instead of killing the process: a start-up that has begun (the embedded Redis
    started, the host id claimed) ends in an orderly stop, never with an orphaned server."""
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda signum, frame: early.append(signum))
    return early


class SignalQueue:
    """Handlers put the signal number on a queue; the wakeup fd ends the loop's sleep at once."""

    def __init__(self, handled: tuple[int, ...]) -> None:
        self.handled = handled
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._r = self._w = -1

    def _record(self, signum: int, frame: object) -> None:
        self._queue.put_nowait(signum)

    def install(self, early: list[int] | None = None) -> None:
        """Handle the signals from now on; `early` ones (see defer_stops) are queued first."""
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        for sig in self.handled:
            signal.signal(sig, self._record)
        for sig in early or ():
            self._queue.put_nowait(sig)

    def pending(self) -> Iterator[int]:
        while True:
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def sleep(self, timeout_s: float) -> None:
        try:
            ready, _, _ = select.select([self._r], [], [], timeout_s)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self._r, 4096):
                    pass
            except BlockingIOError:
                pass

    def close_in_child(self) -> None:
        os.close(self._r)
        os.close(self._w)

    def retire(self) -> None:
        """After the loop: a late signal must not kill the process (and change its exit
        status); Python restores default handlers at finalization but leaves ignored ones."""
        signal.set_wakeup_fd(-1)
        for sig in self.handled:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGCHLD else signal.SIG_IGN)
