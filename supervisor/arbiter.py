"""The supervisor: one signal queue, one loop that reaps, respawns and converges the workers."""

from __future__ import annotations

import enum
import logging
import os
import queue
import select
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from setproctitle import setproctitle

from supervisor import burst, notify, proxybeat
from workers import memory
from workers.exitcodes import ExitCode
from workers.keys import Keys
from workers.logs import setup_logging
from workers.takeover import held_task_ids
from workers.worker import Predecessor, Worker, consumer_name

log = logging.getLogger("taskexec.supervisor")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
TICK_S = 0.25
BACKOFF_BASE_S = 0.5
QUICK_STOP_S = 3.0


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    QUICK = "quick stop"
    HALTED = "halted"


@dataclass
class WorkerProc:
    slot: int
    pid: int
    generation: int
    consumer: str
    liveness: Any  # the temporary file whose ctime the worker moves
    spawned_at: float
    born_ctime: float
    booted: bool = False
    stopping: bool = False
    killed: bool = False
    settings: Any = None


@dataclass
class SlotState:
    failures: int = 0  # consecutive deaths of this slot without a successful boot
    next_spawn_at: float = 0.0
    predecessors: list[Predecessor] = field(default_factory=list)


class Supervisor:
    """Forks `executor.procs` workers and keeps them running until told to stop."""

    def __init__(self, settings: Any, *, host_id: str, client: redis.Redis, burst: bool = False,
                 on_tick: Callable[[Supervisor], None] | None = None,
                 reload: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self.host_id = host_id
        self.client = client
        self.burst = burst
        self.on_tick = on_tick
        self.reload = reload
        self.keys = Keys.from_settings(settings.keys)
        self.procs = settings.executor.procs
        self.state = State.RUNNING
        self.workers: dict[int, WorkerProc] = {}  # pid -> worker
        self.slots: dict[int, SlotState] = {}
        self.generation = 0
        self.boot_failures = 0
        self.exit_code = ExitCode.OK
        self.stop_deadline = 0.0
        self.replacing: list[int] = []  # slots still to be replaced after a reload
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.pid = os.getpid()
        self.notifier = notify.Notifier.from_environ()
        self.proxybeat = proxybeat.ProxyBeat(settings, client, supervisor_pid=self.pid)

    # Signals: the handler only records; the loop acts -----------------------------------------

    def _record_signal(self, signum: int, frame: object) -> None:
        self.signals.put_nowait(signum)

    def _install_signals(self) -> None:
        self._pipe_r, self._pipe_w = os.pipe()
        os.set_blocking(self._pipe_r, False)
        os.set_blocking(self._pipe_w, False)
        signal.set_wakeup_fd(self._pipe_w, warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, self._record_signal)

    def _sleep(self, timeout_s: float) -> None:
        try:
            ready, _, _ = select.select([self._pipe_r], [], [], timeout_s)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self._pipe_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            name = signal.Signals(signum).name
            if signum != signal.SIGCHLD:
                log.info("Supervisor received %s.", name)
            getattr(self, "handle_" + name[3:].lower())()

    def handle_term(self) -> None:
        if self.state is State.RUNNING:
            self.begin_stop(graceful=True)
        else:
            self.begin_stop(graceful=False)

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.begin_stop(graceful=False)

    def handle_hup(self) -> None:
        if self.reload is None or self.state is not State.RUNNING:
            return
        try:
            new = self.reload()
        except Exception as exc:  # a bad edit must not take a running service down
            log.error("Configuration not reloaded, keeping the running one: %s", exc)
            return
        self.settings = new
        self.procs = new.executor.procs
        self.replacing = sorted({w.slot for w in self.workers.values() if not w.stopping})
        log.info("Configuration reloaded; replacing workers one at a time: slots %s.",
                 self.replacing)

    def handle_ttin(self) -> None:
        self.procs += 1
        log.info("Worker count raised to %d.", self.procs)

    def handle_ttou(self) -> None:
        if self.procs > 1:
            self.procs -= 1
            log.info("Worker count lowered to %d.", self.procs)

    def handle_usr1(self) -> None:
        self._forward(signal.SIGUSR1)
        memory.snapshot_once(self.settings, "Supervisor")

    def handle_usr2(self) -> None:
        self._forward(signal.SIGUSR2)
        memory.stop_tracing("Supervisor")

    def handle_chld(self) -> None:
        pass  # the loop reaps on every pass

    def _forward(self, sig: int) -> None:
        for w in list(self.workers.values()):
            self._kill(w, sig)

    # Process operations ---------------------------------------------------------------------

    def spawn_worker(self, slot: int) -> None:
        self.generation += 1
        state = self.slots.setdefault(slot, SlotState())
        liveness = tempfile.TemporaryFile(prefix="taskexec-worker-")  # noqa: SIM115 (lives with the worker)
        born = os.fstat(liveness.fileno()).st_ctime
        worker = Worker(self.settings, slot=slot, host_id=self.host_id, supervisor_pid=self.pid,
                        predecessors=list(state.predecessors), liveness_fd=liveness.fileno())
        # Block the handled signals across fork so the child never runs our handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            raise
        if pid == 0:
            self._child(worker)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        state.predecessors = []
        self.workers[pid] = WorkerProc(slot, pid, self.generation,
                                       consumer_name(self.host_id, slot, pid), liveness,
                                       time.monotonic(), born, settings=self.settings)
        log.info("Spawned worker %d (pid %d, generation %d).", slot, pid, self.generation)

    def _child(self, worker: Worker) -> None:
        code = ExitCode.FAILED
        try:
            signal.set_wakeup_fd(-1)
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            for sig in HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            worker._install_signals()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            os.setpgid(0, 0)  # its own group, so processes a task started die with it
            os.environ.pop("NOTIFY_SOCKET", None)
            os.environ.pop("WATCHDOG_USEC", None)
            os.environ.pop("WATCHDOG_PID", None)
            setup_logging(worker.settings, f"worker-{worker.slot}")
            setproctitle(f"taskexec: worker {worker.slot} [0/{worker.settings.executor.threads}]"
                         f" {','.join(worker.settings.queue.names)}")
            code = worker.run()
        except BaseException as exc:
            logging.getLogger("taskexec.worker").error(
                "Worker %d (pid %d) could not run: %s: %s", worker.slot, os.getpid(),
                type(exc).__name__, exc)
            code = ExitCode.BOOT_FAILED
        finally:
            logging.shutdown()
            os._exit(int(code))

    def _kill(self, w: WorkerProc, sig: int, group: bool = False) -> None:
        try:
            if group:
                os.killpg(w.pid, sig)
            else:
                os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def stop_worker(self, w: WorkerProc) -> None:
        if not w.stopping:
            w.stopping = True
            self._kill(w, signal.SIGTERM)

    def reap_workers(self) -> None:
        # Each known pid is waited for by name, so no other child (the embedded Redis) is taken.
        for pid, w in list(self.workers.items()):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            del self.workers[pid]
            w.liveness.close()
            self._kill(w, signal.SIGKILL, group=True)  # the task processes it left behind
            self._on_worker_exit(w, status)

    def _on_worker_exit(self, w: WorkerProc, status: int) -> None:
        death = describe_status(status)
        booted = w.booted or self._booted(w)
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if self.state is not State.RUNNING:
            log.info("Worker %d (pid %d) %s.", w.slot, w.pid, death)
            return
        held = self._held_tasks(w.consumer) if not clean else []
        slot = self.slots.setdefault(w.slot, SlotState())
        if clean:
            log.info("Worker %d (pid %d) exited cleanly.", w.slot, w.pid)
            slot.failures = 0
        else:
            log.error("Worker %d (pid %d) %s%s.", w.slot, w.pid, death,
                      f" while running task(s) {', '.join(held)}" if held else "")
            slot.failures += 1
            slot.predecessors.append(Predecessor(w.consumer, f"worker {w.consumer} {death}"))
        if not booted and not clean:
            self.boot_failures += 1
        delay = 0.0 if slot.failures <= 1 and booted else min(
            BACKOFF_BASE_S * 2 ** max(slot.failures - 1, 0),
            self.settings.supervisor.restart_backoff_max_s)
        slot.next_spawn_at = time.monotonic() + delay
        if self.boot_failures >= self.settings.supervisor.boot_failures_max:
            log.critical("%d worker boots failed in a row; halting.", self.boot_failures)
            self.exit_code = ExitCode.BOOT_FAILED
            self.begin_stop(graceful=False)

    def _held_tasks(self, consumer: str) -> list[str]:
        streams = [st for q in self.settings.queue.names
                   for st in self.keys.streams(q, self.settings.queue.priorities)]
        try:
            return held_task_ids(self.client, streams, self.keys.group, consumer)
        except Exception:  # the log line must not depend on Redis answering
            return []

    def _booted(self, w: WorkerProc) -> bool:
        if not w.booted:
            try:
                w.booted = os.fstat(w.liveness.fileno()).st_ctime != w.born_ctime
            except (OSError, ValueError):
                return False
            if w.booted:
                self.boot_failures = 0
                self.slots.setdefault(w.slot, SlotState()).failures = 0
        return w.booted

    def murder_workers(self) -> None:
        """Kill workers whose loop has not turned for supervisor.worker_timeout_s."""
        timeout = self.settings.supervisor.worker_timeout_s
        now = time.time()
        for w in list(self.workers.values()):
            if w.killed or not self._booted(w):
                continue
            try:
                age = now - os.fstat(w.liveness.fileno()).st_ctime
            except (OSError, ValueError):
                continue
            if age > timeout:
                log.error("Worker %d (pid %d) stopped responding %.0f s ago; killing it.",
                          w.slot, w.pid, age)
                w.killed = True
                self._kill(w, signal.SIGKILL)

    def manage_workers(self) -> None:
        """Converge to `procs` workers, one per slot 0..procs-1."""
        active = {w.slot: w for w in self.workers.values() if not w.stopping}
        for slot, w in active.items():
            if slot >= self.procs:
                log.info("Stopping worker %d (pid %d): fewer workers wanted.", slot, w.pid)
                self.stop_worker(w)
        self._replace_next(active)
        busy_slots = {w.slot for w in self.workers.values()}
        now = time.monotonic()
        for slot in range(self.procs):
            if slot in busy_slots:
                continue
            if self.slots.setdefault(slot, SlotState()).next_spawn_at <= now:
                self.spawn_worker(slot)

    def _replace_next(self, active: dict[int, WorkerProc]) -> None:
        # One slot at a time: the next is stopped once the previous one's successor booted.
        if not self.replacing:
            return
        slot = self.replacing[0]
        w = active.get(slot)
        if w is None:
            return
        if w.settings is self.settings:
            if self._booted(w):
                self.replacing.pop(0)
            return
        self.stop_worker(w)

    # Stop -----------------------------------------------------------------------------------

    def begin_stop(self, graceful: bool) -> None:
        now = time.monotonic()
        if graceful and self.state is State.RUNNING:
            self.state = State.DRAINING
            self.stop_deadline = now + self.settings.executor.graceful_timeout_s + 1
            self.notifier.send("STOPPING=1")
            for w in self.workers.values():
                self.stop_worker(w)
        elif self.state is not State.QUICK:
            self.state = State.QUICK
            self.stop_deadline = now + QUICK_STOP_S
            self.notifier.send("STOPPING=1")
            for w in self.workers.values():
                w.stopping = True
                self._kill(w, signal.SIGQUIT)

    def _stopped(self) -> bool:
        if not self.workers:
            return True
        if time.monotonic() >= self.stop_deadline:
            for w in list(self.workers.values()):
                log.warning("Worker %d (pid %d) outlived the stop deadline; killing it.",
                            w.slot, w.pid)
                self._kill(w, signal.SIGKILL, group=True)
            self.stop_deadline = time.monotonic() + QUICK_STOP_S
        return False

    # The loop -------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        setproctitle(f"taskexec: supervisor {self.host_id}")
        log.info("Supervisor (pid %d) of host %s starts %d worker(s) of %d thread(s) on %s.",
                 self.pid, self.host_id, self.procs, self.settings.executor.threads,
                 ", ".join(self.settings.queue.names))
        ready_sent = False
        next_burst_check = 0.0
        while True:
            self.handle_signals()
            self.reap_workers()
            self.proxybeat.tick(self.workers.values())  # beats for GIL-bound workers
            if self.state is State.RUNNING:
                self.murder_workers()
                self.manage_workers()
                if not ready_sent and self._all_booted():
                    ready_sent = True
                    self.notifier.send("READY=1")
                    log.info("All %d worker(s) booted.", self.procs)
                if self.burst and time.monotonic() >= next_burst_check:
                    next_burst_check = time.monotonic() + 0.2
                    if ready_sent and burst.drained(self.client, self.settings, self.keys):
                        log.info("Queues drained; stopping (burst mode).")
                        self.begin_stop(graceful=True)
            elif self._stopped():
                break
            self.notifier.watchdog()
            if self.on_tick:
                self.on_tick(self)
            self._sleep(TICK_S)
        log.info("Supervisor (pid %d) stopped with exit code %d.", self.pid, self.exit_code)
        return int(self.exit_code)

    def _all_booted(self) -> bool:
        live = [w for w in self.workers.values() if not w.stopping]
        return len(live) >= self.procs and all(self._booted(w) for w in live)


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

