"""The supervisor: one signal queue, one loop that reaps, respawns and converges the workers."""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from supervisor import burst as burst_mod
from supervisor import notify, proxybeat, restarts
from supervisor.hostlock import HostLock
from supervisor.restarts import Death, SlotState
from supervisor.signals import SignalQueue
from supervisor.spawn import WorkerProc, describe_status, fork_worker, next_dead_child, reap
from workers import memory, titles
from workers.channel import Channel, WorkerState
from workers.exitcodes import ExitCode
from workers.keys import Keys
from workers.outage import Outage
from workers.redisconn import TRANSIENT_ERRORS
from workers.takeover import held_task_ids
from workers.worker import Predecessor, Worker, consumer_name

log = logging.getLogger("taskexec.supervisor")

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)
TICK_S = 0.25
QUICK_STOP_S = 3.0
STOP_MARGIN_S = 1.0  # past executor.graceful_timeout_s before a stopping worker is killed
ABORT_GRACE_S = 1.0  # between SIGABRT (stacks dumped) and SIGKILL for an unresponsive worker
STATUS_EVERY_S = 1.0
FORK_WAIT_MAX_S = 5.0  # longest a spawn waits for the supervisor's other threads to end


class State(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    QUICK = "quick stop"


class Supervisor:
    """Forks `executor.procs` workers and keeps them running until told to stop."""

    def __init__(self, settings: Any, *, host_id: str, client: redis.Redis, burst: bool = False,
                 on_tick: Callable[[Supervisor], None] | None = None,
                 reload: Callable[[], Any] | None = None,
                 notifier: notify.Notifier | None = None, host_lock: HostLock | None = None,
                 leftovers: Iterable[tuple[int, Predecessor]] = ()) -> None:
        self.settings = settings
        self.host_id = host_id
        self.client = client
        self.burst = burst_mod.BurstWatch(client, settings) if burst else None
        self.on_tick = on_tick
        self.reload = reload
        self.host_lock = host_lock
        self.keys = Keys.from_settings(settings.keys)
        self.procs = settings.executor.procs
        self.state = State.RUNNING
        self.workers: dict[int, WorkerProc] = {}  # pid -> worker
        self.slots: dict[int, SlotState] = {}
        self.known_children: dict[int, str] = {}  # other children (the embedded Redis), by pid
        self.generation = 0
        self.exit_code = ExitCode.OK
        self.quick_deadline = 0.0
        self.replacing: list[int] = []  # slots still to be replaced after a reload
        self.signals = SignalQueue(HANDLED)
        self.pid = os.getpid()
        self.notifier = notifier or notify.Notifier.from_environ()
        # One warning per Redis outage for the supervisor, whichever duty meets it first.
        self.outage = Outage(log, "Supervisor")
        self._claim_outage = self.outage.duty("host id claim")
        self.proxybeat = proxybeat.ProxyBeat(settings, client, supervisor_pid=self.pid,
                                             outage=self.outage.duty("worker heartbeats"))
        self.ready_sent = False
        self._status_at = 0.0
        self._threads_since = 0.0
        for slot, pred in leftovers:
            self.slot(slot % self.procs).predecessors.append(pred)

    def slot(self, n: int) -> SlotState:
        return self.slots.setdefault(n, SlotState())

    # Signals: the handler only records; the loop acts -----------------------------------------

    def handle_signals(self) -> None:
        for signum in self.signals.pending():
            name = signal.Signals(signum).name
            if signum != signal.SIGCHLD:
                log.info("Supervisor received %s.", name)
            getattr(self, "handle_" + name[3:].lower())()

    def handle_term(self) -> None:
        self.begin_stop(graceful=self.state is State.RUNNING)

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
        # Workers added or removed with TTIN/TTOU stay added or removed across a reload.
        self.procs = max(1, new.executor.procs + self.procs - self.settings.executor.procs)
        self.settings = new
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
        state = self.slot(slot)
        channel = Channel()
        worker = Worker(self.settings, slot=slot, host_id=self.host_id, supervisor_pid=self.pid,
                        predecessors=list(state.predecessors), channel=channel)
        # No Redis connection may cross the fork: the supervisor reconnects on its next call.
        self.client.connection_pool.disconnect()
        pid = fork_worker(worker, channel, handled=HANDLED,
                          close_in_child=self._close_in_child)
        state.predecessors = []
        state.handed = []
        self.workers[pid] = WorkerProc(slot, pid, self.generation,
                                       consumer_name(self.host_id, slot, pid), channel,
                                       time.monotonic(), self.settings)
        log.info("Spawned worker %d (pid %d, generation %d).", slot, pid, self.generation)

    def _close_in_child(self) -> None:
        self.signals.close_in_child()
        self.notifier.close()
        for w in self.workers.values():
            w.channel.close()

    def _kill(self, w: WorkerProc, sig: int, group: bool = False) -> None:
        """Signal a live (not yet reaped) worker, or its whole process group."""
        log.debug("Sending %s to %s %d (pid %d).", signal.Signals(sig).name,
                  "the process group of worker" if group else "worker", w.slot, w.pid)
        try:
            if group:
                os.killpg(w.pid, sig)
            else:
                os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def stop_worker(self, w: WorkerProc, why: str = "") -> None:
        if not w.stopping:
            if why:
                log.info("Stopping worker %d (pid %d): %s.", w.slot, w.pid, why)
            self._mark_stopping(w)
            self._kill(w, signal.SIGTERM)

    def _mark_stopping(self, w: WorkerProc) -> None:
        w.stopping = True
        w.stop_deadline = (time.monotonic() + w.settings.executor.graceful_timeout_s
                           + STOP_MARGIN_S)

    def reap_workers(self) -> None:
        while (pid := next_dead_child()) is not None:
            w = self.workers.pop(pid, None)
            if w is not None:
                # While the zombie keeps its pid, kill the processes its tasks left behind.
                self._kill(w, signal.SIGKILL, group=True)
            status = reap(pid)
            if w is None:
                log.warning("Child %d (%s) %s.", pid, self.known_children.pop(pid, "not a "
                            "worker"), describe_status(status))
                continue
            self._on_worker_exit(w, status)
            w.channel.close()

    def _on_worker_exit(self, w: WorkerProc, status: int) -> None:
        death = describe_status(status)
        if self.state is not State.RUNNING:
            log.info("Worker %d (pid %d) %s.", w.slot, w.pid, death)
            return
        booted = w.booted or w.report().state is not WorkerState.BOOTING
        s = self.settings.supervisor
        slot = self.slot(w.slot)
        heir = self.slot(w.slot if w.slot < self.procs else w.slot % self.procs)
        verdict = restarts.judge(slot, booted=booted, status=status,
                                 uptime_s=time.monotonic() - w.spawned_at,
                                 backoff_max_s=s.restart_backoff_max_s,
                                 boot_failures_max=s.boot_failures_max)
        slot.next_spawn_at = max(slot.next_spawn_at, time.monotonic() + verdict.delay_s)
        if verdict.death is not Death.CLEAN or booted:
            # Even a clean exit may leave messages (a drain that hit its deadline).
            heir.predecessors.append(Predecessor(w.consumer, f"worker {w.consumer} {death}"))
        held = self._held_tasks(w.consumer) if verdict.death is Death.CRASH else []
        tail = w.channel.tail() if verdict.death is Death.BOOT_FAILURE else ""
        log.log(*restarts.report(verdict, w.slot, w.pid, death, held, tail))
        if verdict.halt:
            log.critical("Worker %d failed to boot %d times in a row; halting.", w.slot,
                         slot.boot_failures)
            self.exit_code = ExitCode.BOOT_FAILED
            self.begin_stop(graceful=True)

    def _held_tasks(self, consumer: str) -> list[str]:
        streams = [st for q in self.settings.queue.names
                   for st in self.keys.streams(q, self.settings.queue.priorities)]
        try:
            return held_task_ids(self.client, streams, self.keys.group, consumer)
        except Exception:  # the log line must not depend on Redis answering
            return []

    def observe_workers(self) -> None:
        """Read each worker's channel: booted, draining by itself, or silent too long."""
        now = time.monotonic()
        timeout = self.settings.supervisor.worker_timeout_s
        for w in list(self.workers.values()):
            rep = w.report()
            if not w.booted and rep.state is not WorkerState.BOOTING:
                w.booted = True
            if rep.state is WorkerState.DRAINING and not w.stopping:
                log.info("Worker %d (pid %d) is draining%s; starting its successor.", w.slot,
                         w.pid, f": {rep.reason}" if rep.reason else "")
                self._mark_stopping(w)
            if w.aborted_at:
                if now - w.aborted_at >= ABORT_GRACE_S:
                    self._kill(w, signal.SIGKILL, group=True)
                continue
            age = w.liveness_age(now)
            if age > timeout:
                log.error("Worker %d (pid %d) has not responded for %.1f s "
                          "(supervisor.worker_timeout_s %g); aborting it.", w.slot, w.pid, age,
                          timeout)
                w.aborted_at = now
                self._kill(w, signal.SIGABRT)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.stopping and now >= w.stop_deadline:
                log.warning("Worker %d (pid %d) outlived its stop deadline; killing it.",
                            w.slot, w.pid)
                self._kill(w, signal.SIGKILL, group=True)
                w.stop_deadline = now + QUICK_STOP_S

    def manage_workers(self) -> None:
        """Converge to `procs` workers, one reading worker per slot 0..procs-1."""
        active = {w.slot: w for w in self.workers.values() if not w.stopping}
        for slot, w in active.items():
            if slot >= self.procs:
                self.stop_worker(w, "fewer workers wanted")
        self._replace_next(active)
        self._hand_over(active)
        reading = {w.slot for w in self.workers.values() if not w.stopping}
        now = time.monotonic()
        for slot in range(self.procs):
            if slot not in reading and self.slot(slot).next_spawn_at <= now and \
                    self._fork_is_safe(now):
                self.spawn_worker(slot)

    def _fork_is_safe(self, now: float) -> bool:
        """True when this process runs no other thread (a memory snapshot writes from one for
        a moment): a fork meanwhile could copy a lock that thread holds into the child."""
        if threading.active_count() == 1:
            self._threads_since = 0.0
            return True
        self._threads_since = self._threads_since or now
        if now - self._threads_since < FORK_WAIT_MAX_S:
            return False
        log.warning("Forking although %d other thread(s) ran for %.0f s.",
                    threading.active_count() - 1, now - self._threads_since)
        self._threads_since = now
        return True

    def _replace_next(self, active: dict[int, WorkerProc]) -> None:
        # One slot at a time: the old worker stops reading and drains while its successor
        # boots; the next slot follows once that successor has booted.
        while self.replacing:
            w = active.get(self.replacing[0])
            if w is None:
                return
            if w.settings is not self.settings:
                self.stop_worker(w, "configuration reloaded")
                return
            if not w.booted:
                return
            self.replacing.pop(0)

    def _hand_over(self, active: dict[int, WorkerProc]) -> None:
        """Dead consumers of a slot whose worker already runs go to it through its mailbox."""
        for n, slot in self.slots.items():
            w = active.get(n)
            if w is not None and slot.predecessors:
                slot.handed += [[p.consumer, p.death] for p in slot.predecessors]
                slot.predecessors = []
                w.channel.post(slot.handed)

    # Stop -----------------------------------------------------------------------------------

    def begin_stop(self, graceful: bool) -> None:
        if graceful and self.state is State.RUNNING:
            self.state = State.DRAINING
            self.notifier.send("STOPPING=1")
            for w in self.workers.values():
                self.stop_worker(w)
            self.notifier.extend_timeout(self.settings.executor.graceful_timeout_s
                                         + STOP_MARGIN_S + QUICK_STOP_S + 5)
        elif self.state is not State.QUICK:
            self.state = State.QUICK
            self.quick_deadline = time.monotonic() + QUICK_STOP_S
            self.notifier.send("STOPPING=1")
            self.notifier.extend_timeout(QUICK_STOP_S * 2 + 5)
            for w in self.workers.values():
                w.stopping = True
                w.stop_deadline = min(w.stop_deadline or self.quick_deadline,
                                      self.quick_deadline)
                self._kill(w, signal.SIGQUIT)

    # The loop -------------------------------------------------------------------------------

    def run(self, early_signals: list[int] | None = None) -> int:
        self.signals.install(early_signals)
        titles.set_title(titles.supervisor_title(self.host_id))
        log.info("Supervisor (pid %d) of host %s starts %d worker(s) of %d thread(s) on %s.",
                 self.pid, self.host_id, self.procs, self.settings.executor.threads,
                 ", ".join(self.settings.queue.names))
        while True:
            self.handle_signals()
            self.reap_workers()
            self.proxybeat.tick(self.workers.values())  # beats for GIL-bound workers
            if self.state is State.RUNNING:
                self.observe_workers()
                self.manage_workers()
                self._check_ready()
                self._check_burst()
                self._renew_host_lock()
            elif not self.workers:
                break
            else:
                self.observe_workers()
            self.enforce_deadlines()
            self.notifier.watchdog()
            self._report_status()
            if self.on_tick:
                self.on_tick(self)
            self.signals.sleep(TICK_S)
        self.signals.retire()
        log.info("Supervisor (pid %d) stopped with exit code %d.", self.pid, self.exit_code)
        return int(self.exit_code)

    def _check_ready(self) -> None:
        if self.ready_sent:
            return
        live = [w for w in self.workers.values() if not w.stopping]
        if len(live) >= self.procs and all(w.booted for w in live):
            self.ready_sent = True
            self._report_status(force=True)
            self.notifier.send("READY=1")
            log.info("All %d worker(s) booted.", self.procs)

    def _check_burst(self) -> None:
        ready = self.burst is not None and self.ready_sent and self.burst.due()
        if ready and self.burst.drained():
            log.info("Queues drained; stopping (burst mode).")
            self.begin_stop(graceful=True)

    def _renew_host_lock(self) -> None:
        if self.host_lock is None or not self.host_lock.renew_due():
            return
        try:
            lost = self.host_lock.renew(after_outage=self.outage.down)
        except TRANSIENT_ERRORS as exc:
            self._claim_outage.failed(exc)
            return
        self._claim_outage.succeeded()
        if lost:
            log.critical("%s; stopping so that only one supervisor serves it.", lost[0].upper()
                         + lost[1:])
            self.exit_code = ExitCode.USAGE
            self.begin_stop(graceful=True)

    def _report_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.notifier.address or (not force and now - self._status_at < STATUS_EVERY_S):
            return
        self._status_at = now
        stopping = None if self.state is State.RUNNING else self.state.value
        self.notifier.status(notify.status_line(self.workers.values(), self.procs, stopping))
