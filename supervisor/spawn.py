"""Forking a worker: what the supervisor keeps of it, and the child's side of the fork."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from workers import titles
from workers.channel import Channel, Report, WorkerState
from workers.exitcodes import ExitCode
from workers.lifecycle import kill_descendants
from workers.logs import setup_logging
from workers.redisconn import TRANSIENT_ERRORS
from workers.worker import Worker

log = logging.getLogger("taskexec.supervisor")

# Variables for the supervisor alone: a worker or a task must never talk to systemd.
SUPERVISOR_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                       "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass
class WorkerProc:
    """The supervisor's record of one live worker process."""

    slot: int
    pid: int
    generation: int
    consumer: str
    channel: Channel
    spawned_at: float  # time.monotonic()
    settings: Any
    booted: bool = False
    stopping: bool = False  # told to stop (or stopping by itself): it reads nothing more
    stop_deadline: float = 0.0  # after this its process group gets SIGKILL
    aborted_at: float = 0.0  # when it got SIGABRT for not answering

    def report(self) -> Report:
        return self.channel.read()

    def liveness_age(self, now: float) -> float:
        """Seconds since the worker's loop last turned (since its spawn while booting)."""
        rep = self.channel.read()
        if rep.state is WorkerState.BOOTING or not rep.alive_at:
            return now - self.spawned_at
        return now - rep.alive_at


class _StderrTail:
    """sys.stderr for a worker: writes through, and keeps the last line in the channel, so the
    supervisor can say why a worker that could not boot died."""

    def __init__(self, stream: Any, channel: Channel) -> None:
        self._stream = stream
        self._channel = channel

    def write(self, text: str) -> int:
        n = self._stream.write(text)
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self._channel.set_tail(lines[-1].strip())
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_child(worker: Worker, channel: Channel, *, handled: Iterable[int],
              close: Callable[[], None]) -> None:
    """The child's whole life after fork(); never returns."""
    code = ExitCode.FAILED
    try:
        signal.set_wakeup_fd(-1)
        for sig in handled:
            signal.signal(sig, signal.SIG_DFL)
        worker._install_signals()  # before unblocking, so no signal meets the parent's handler
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        os.setpgid(0, 0)  # its own group, so the processes its tasks start die with it
        close()  # the supervisor's descriptors: its pipe, notify socket, other channels
        for name in SUPERVISOR_ONLY_ENV:
            os.environ.pop(name, None)
        sys.stderr = _StderrTail(sys.stderr, channel)
        setup_logging(worker.settings, f"worker-{worker.slot}")
        titles.set_title(titles.worker_title(worker.slot, 0, worker.settings.executor.threads,
                                             worker.settings.queue.names))
        code = worker.run()
    except BaseException as exc:
        booted = channel.read().state is not WorkerState.BOOTING
        if isinstance(exc, TRANSIENT_ERRORS) and not booted:
            code = ExitCode.REDIS_UNAVAILABLE
        else:
            code = ExitCode.FAILED if booted else ExitCode.BOOT_FAILED
        logging.getLogger("taskexec.worker").error(
            "Worker %d (pid %d) %s: %s: %s", worker.slot, os.getpid(),
            "failed" if booted else "could not boot", type(exc).__name__, exc)
        if not channel.tail():  # logging to a file (logging.dir) leaves stderr silent
            channel.set_tail(f"{type(exc).__name__}: {exc}")
    finally:
        kill_descendants()
        logging.shutdown()
        os._exit(int(code))


def fork_worker(worker: Worker, channel: Channel, *, handled: tuple[int, ...],
                close_in_child: Callable[[], None]) -> int:
    """Fork with the handled signals blocked; returns the child's pid in the parent."""
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        raise
    if pid == 0:
        run_child(worker, channel, handled=handled, close=close_in_child)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
    return pid


def describe_status(status: int) -> str:
    """A worker's wait status in words: 'exited with status 1', 'was killed by signal 9'."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


def next_dead_child() -> int | None:
    """The pid of one child that ended, or None; any child, like waitpid(-1).

    The child is first seen without being reaped (WNOWAIT), so the caller may still signal
    its process group while the zombie keeps the pid from being reused.
    """
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None or not info.si_pid:
        return None
    return info.si_pid


def reap(pid: int) -> int:
    """Reap a child already known to have ended; its wait status."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return 0
    return status
