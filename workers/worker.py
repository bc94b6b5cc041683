"""One worker process: the consume loop that reads as many messages as it has free slots."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

import workers
from workers import jsonsafe, messages, scripts
from workers.backoff import Backoff, Throttle
from workers.broker import Broker, Message, ReadResult
from workers.cleanup import Cleanup
from workers.context import TaskContext
from workers.errors import RetryTask, TaskCancelled
from workers.executor import BoundedExecutor, Task
from workers.handlers import Handler, load_handlers
from workers.heartbeat import Heartbeat
from workers.keys import Keys
from workers.lifecycle import Lifecycle, end_process
from workers.memory import MemoryDebugger
from workers.outage import Outage
from workers.redisconn import TRANSIENT_ERRORS, connect_worker, raise_if_transient
from workers.redisinfo import eviction_risk
from workers.store import Completion, TaskStore, log_line, run_scripts, step_reply
from workers.takeover import Takeover

log = logging.getLogger("taskexec.worker")

BROKEN_RETRY_S = 3.0  # longest wait before a stream that could not be read is tried again
# A task thread that ran a task this long refills its own slot (see _refill); shorter tasks
# leave it to the loop, which reads for many slots at once.
LONG_RUN_S = 0.002
# How many of its own pending entries per stream the begin after a blocking read looks
# through for the ones that read delivered; a worker holds no more than its threads.
PENDING_SCAN = 1000
REFILL_WAIT_S = 0.05  # a refill waits this long for the one in progress, then leaves it to the loop


def consumer_name(host_id: str, slot: int, pid: int) -> str:
    return f"task_executor_{host_id}_{slot}_{pid}"


@dataclass(slots=True)
class Running:
    """A task this worker has begun and not yet settled."""

    task_id: str
    task_type: str
    stream: str
    entry_id: str
    begin_at: float
    ctx: TaskContext | None = None
    payload: bytes = b""  # the message, kept for a retry with a delay


@dataclass
class Predecessor:
    """A dead consumer of this slot whose pending messages this worker takes over at once."""

    consumer: str
    death: str = ""


class Worker:
    """Constructed in the supervisor, run in the child: __init__ has no side effects."""

    def __init__(self, settings: Any, *, slot: int, host_id: str, supervisor_pid: int,
                 predecessors: list[Predecessor] | None = None, channel: Any = None) -> None:
        self.settings = settings
        self.slot = slot
        self.host_id = host_id
        self.supervisor_pid = supervisor_pid
        self.predecessors = list(predecessors or [])
        self.channel = channel  # shared with the supervisor (workers/channel.py)
        self.lifecycle: Lifecycle | None = None  # from the end of boot()
        self.memory = MemoryDebugger.from_settings(settings, f"Worker {slot}")
        self.keys = Keys.from_settings(settings.keys)
        self.streams = [s for q in settings.queue.names
                        for s in self.keys.streams(q, settings.queue.priorities)]
        self.stop_signal: int | None = None
        self.quick = False
        self.done = 0
        self.failed = 0
        self.completed = 0
        self.running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._completions: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._outcome = threading.Event()  # set when an outcome is queued
        self._writer = threading.Lock()  # held by whoever writes the outcomes (see _complete)
        self._unwritten: list[Completion] = []  # outcomes a failed write kept, with the writer
        self._ready: list[tuple[Running, dict[str, Any]]] = []  # begun, waiting for a slot
        self._accepting = True  # False once the loop ends: task threads read no more
        self._refills: queue.SimpleQueue[Completion] = queue.SimpleQueue()
        self._refiller = threading.Lock()  # held by the thread refilling slots (see _refill)
        self._broken: dict[str, float] = {}  # stream -> monotonic time to retry it
        self._stream_backoff: dict[str, Backoff] = {}
        self._broken_report_at: dict[str, float] = {}  # stream -> when to log it again
        self._throttle = Throttle(1.0)
        # One warning per Redis outage for the whole process, whichever duty meets it first.
        self.outage = Outage(log, f"Worker {slot}")
        self._loop_outage = self.outage.duty("consume loop")
        self._finish_outage = self.outage.duty("final statuses")
        self._promote_at = 0.0
        self._unstarted: list[Message] = []
        self._woken = threading.Event()  # set when a task thread's blocking read has ended
        self._wake_error: Exception | None = None  # what that read raised, for the loop

    # Process setup --------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGQUIT, self._on_stop)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        self.memory.install()  # USR1: snapshot, USR2: stop tracing (workers/memory.py)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def _on_stop(self, signum: int, frame: object) -> None:
        # Only record: the loop acts on it. A direct TERM and a forwarded one are one stop.
        if signum == signal.SIGQUIT:
            self.quick = True
        self.stop_signal = signum

    def boot(self) -> None:
        """Connect, create the groups and load the handlers; raises when the worker cannot run."""
        self.pid = os.getpid()
        self.memory.start()
        self.consumer = consumer_name(self.host_id, self.slot, self.pid)
        self.boot_at = datetime.now().isoformat(timespec="seconds")
        self.ip_address = _ip_address()
        s = self.settings
        # Within redis.max_connections: the blocking read and the heartbeat on their own.
        conns = connect_worker(s, name=self.consumer)
        self.client, self.blocking = conns.client, conns.blocking
        self.store = TaskStore(self.client, self.keys, group=self.keys.group,
                               max_log_chars=s.store.max_log_chars,
                               cancel_ttl_s=s.store.cancel_ttl_s, result_ttl_s=s.store.result_ttl_s,
                               max_attempts=s.queue.max_attempts)
        self.broker = Broker(self.client, self.blocking, group=self.keys.group,
                             consumer=self.consumer)
        self.handlers: dict[str, Handler] = load_handlers(s.handlers)
        self._promote = self.client.register_script(scripts.PROMOTE)
        self.executor = BoundedExecutor(s.executor.threads, name=f"task-{self.slot}")
        self._ensure_groups()
        if self.slot == 0 and not self.predecessors:
            risk = eviction_risk(self.client)
            if risk:
                log.warning("%s.", risk)
        self.takeover = Takeover(
            self.broker, self.streams, registry=self.keys.registry,
            timeout_s=s.heartbeat.timeout_s, scan_every_s=s.cleanup.interval_s,
            own_idle_s=max(2.0, 3 * s.heartbeat.interval_s), running_ids=self.running_ids)
        for pred in self.predecessors:
            self.takeover.add_predecessor(pred.consumer, pred.death)
        # The heartbeat thread's duties (beats, clean-up passes, the counts in each beat) use
        # the heartbeat's own connection: they never wait for, or widen, the shared pool.
        self._beat_client = conns.heartbeat or self.client
        beat_broker = Broker(self._beat_client, None, group=self.keys.group,
                             consumer=self.consumer)
        self.cleanup = Cleanup(beat_broker, self.keys, self.streams,
                               interval_s=s.cleanup.interval_s, lock_ttl_s=s.cleanup.lock_ttl_s,
                               timeout_s=s.heartbeat.timeout_s)
        self.heartbeat = Heartbeat(
            beat_broker, key=self.consumer, registry=self.keys.registry,
            interval_s=s.heartbeat.interval_s, retention_s=s.heartbeat.retention_s,
            snapshot=self.snapshot, leases=self.leases, outage=self.outage,
            after_beat=self.cleanup.maybe_run)
        self.heartbeat.beat()
        self.heartbeat.start()
        log.info("Worker %d (pid %d) consumes %s as %s with %d threads; handlers: %s.",
                 self.slot, self.pid, ", ".join(self.streams), self.consumer,
                 s.executor.threads, ", ".join(sorted(self.handlers)))
        self._vet = self.store.vet_args(self.handlers, s.queue.max_message_bytes)
        self._loggers = {name: log.getChild(name) for name in self.handlers}
        self._writer.acquire()  # the consume loop's until it blocks in Redis or drains
        self.lifecycle = Lifecycle(self, self.channel)  # from here on the worker has booted

    def _ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                self.broker.ensure_group(stream)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # a broken stream must not stop the others
                self._mark_broken(stream, str(exc))

    # The loop --------------------------------------------------------------------------------

    def run(self) -> int:
        """The child's entry point after fork. Returns the exit status."""
        self._install_signals()
        _set_parent_death_signal()
        self.boot()
        # Capped at 2 s: consumption resumes within moments of Redis answering again.
        backoff = Backoff(0.1, 2.0)
        while self.stop_signal is None and not self._recycle_due():
            if os.getppid() != self.supervisor_pid:
                log.warning("Worker %d: supervisor %d is gone; stopping.", self.slot,
                            self.supervisor_pid)
                break
            try:
                if self.step():
                    backoff.reset()
                    self._loop_outage.succeeded()
            except TRANSIENT_ERRORS as exc:
                self._loop_outage.failed(exc)
                time.sleep(backoff.next_delay())
            except Exception as exc:  # the loop never dies of one bad reply or key
                if self._throttle.ready("step:" + type(exc).__name__):
                    log.exception("Worker %d: consume step failed: %s; going on.", self.slot, exc)
                time.sleep(backoff.next_delay())
        return self.drain()

    def step(self) -> bool:
        """One pass: the outcomes that came in are written and up to the free slots read and
        begun, all in one round trip; with neither, wait for a message or an outcome.

        Returns whether it reached Redis: a pass that only waited for a task thread proves
        nothing about an outage, and must not end one (it would be reported twice)."""
        self._touch_liveness()
        self._start_ready()
        self._housekeeping()
        done = self._take_completions()
        free = (min(self.executor.free_slots() + len(done), self.lifecycle.quota())
                - len(self._ready))
        taken: list[Message] = []  # read earlier or taken over: begun after the exchange
        if free > 0:
            if self._unstarted:
                taken, self._unstarted = self._unstarted, []
            elif self.takeover.orphans:
                taken = self.takeover.claim(free)
        reading = free > 0 and not taken and self.stop_signal is None
        streams = self._sound_streams() if reading else []
        result = self._exchange(done, streams, free) if done or streams else None
        if taken:
            self.dispatch(taken)
        elif result is not None and result.messages:
            self._begun(result.messages)
        elif result is not None and not done:
            self._wait_for_message(streams, result, free)
        elif not done:
            self._wait_for_outcome(min(self.settings.queue.block_s, 0.5))
        return bool(done or streams or taken)

    def _housekeeping(self) -> None:
        """Once a second: due retries back onto their streams; dead consumers looked for."""
        now = time.monotonic()
        if now >= self._promote_at:
            self._promote_at = now + 1.0
            self._promote(keys=[self.keys.delayed], args=[100])
        if self.takeover.scan_due():
            self.takeover.scan()

    def _sound_streams(self) -> list[str]:
        now = time.monotonic()
        return [s for s in self.streams if self._broken.get(s, 0) <= now]

    def _exchange(self, done: list[Completion], streams: list[str], free: int
                  ) -> ReadResult | None:
        """Write `done` and, with `streams`, read and begin up to `free` messages: one round
        trip. Outcomes that could not be written are kept and written on a later step."""
        calls = self.store.finish_calls(done) if done else []
        if streams:
            calls.append(self.broker.read_args(streams, free, self.store.begin_args(), self._vet))
        try:
            if done:
                replies = run_scripts(self.client, calls, raise_on_error=False)
            else:
                # Only a read: a task thread that finishes meanwhile writes its own outcome,
                # so a lightly loaded worker never holds one back for a round trip.
                with self._writer_released():
                    replies = run_scripts(self.client, calls, raise_on_error=False)
        except TRANSIENT_ERRORS:
            self._unwritten = done + self._unwritten
            raise
        read = replies.pop() if streams else None
        if done:
            self._settle_or_keep(done, replies)
        if read is None:
            return None
        if isinstance(read, Exception):
            raise_if_transient(str(read), self.client)
            raise read
        result = self.broker.read_result(read)
        for stream, error in result.errors.items():
            if "NOGROUP" in error:
                self._recreate_group(stream)
            else:
                self._mark_broken(stream, error)
        for stream in streams:
            if stream not in result.errors and stream in self._stream_backoff:
                del self._stream_backoff[stream]
                self._broken_report_at.pop(stream, None)
        return result

    def _wait_for_message(self, streams: list[str], result: ReadResult, free: int) -> None:
        """Nothing to read: block in Redis until a message comes, while the task threads write
        their own outcomes."""
        sound = [s for s in streams if s not in result.errors]
        with self._writer_released():
            if not self._completions.empty():
                return  # an outcome came meanwhile: the next step writes it
            if sound and free >= len(sound):
                self._wait_on_task_thread(sound)
            else:
                self.broker.wait_for_new(result.last_ids, self.settings.queue.block_s)

    def _wait_on_task_thread(self, streams: list[str]) -> None:
        """Have an idle task thread do the blocking read, and wait for it: the first task it
        begins runs on that thread at once, with no hand-off from this one."""
        self._woken.clear()
        self.executor.hand(lambda: self._read_and_begin(streams))
        while not self._woken.wait(0.5):  # the read's socket timeout ends it
            self._touch_liveness()
        if self._wake_error is not None:
            exc, self._wake_error = self._wake_error, None
            raise exc  # the loop's to handle, as if it had read itself

    def _read_and_begin(self, streams: list[str]) -> Task | None:
        """On a task thread, for the loop: block for new messages and begin them in the same
        round trip; each new message wakes one consumer. Short blocks, so a worker told to
        stop takes no new message for long; one that came with the stop is begun already,
        and runs before the drain ends. Returns the first task, for this thread to run."""
        mine = None
        try:
            msgs = self.broker.read_blocking(
                streams, min(self.settings.queue.block_s, 0.2), self.store.begin_args(),
                self._vet, scan=PENDING_SCAN)
            mine, unvetted = self._start_begun(msgs, keep_one=True)
            if unvetted:
                self.dispatch(unvetted)
        except Exception as exc:
            self._wake_error = exc
        finally:
            self._woken.set()
        return mine

    @contextlib.contextmanager
    def _writer_released(self) -> Iterator[None]:
        self._writer.release()
        try:
            yield
        finally:
            self._writer.acquire()

    def _wait_for_outcome(self, timeout_s: float) -> None:
        self._outcome.clear()
        if self._completions.empty():
            self._outcome.wait(timeout_s)

    def _recreate_group(self, stream: str) -> None:
        if self.broker.ensure_group(stream) and self._throttle.ready("group:" + stream):
            log.warning("Worker %d: consumer group of %s was lost; created it again.",
                        self.slot, stream)

    def _mark_broken(self, stream: str, error: str) -> None:
        # Reported once per growing backoff step, but retried every few seconds at least, so
        # a repaired stream is read again soon even after a long outage (S18).
        now = time.monotonic()
        if now >= self._broken_report_at.get(stream, 0.0):
            delay = self._stream_backoff.setdefault(stream, Backoff(1.0, 30.0)).next_delay()
            self._broken_report_at[stream] = now + delay
            log.error("Worker %d: cannot read stream %s: %s; retrying, next report in %.1f s.",
                      self.slot, stream, error, delay)
        self._broken[stream] = now + min(BROKEN_RETRY_S, self._broken_report_at[stream] - now)

    # Dispatch --------------------------------------------------------------------------------

    def dispatch(self, msgs: list[Message]) -> None:
        """Begin messages read without their begin (taken over, or woken by the blocking read)."""
        runnable: list[tuple[Message, dict[str, Any]]] = []
        for msg in msgs:
            task = self._validate(msg)
            if task is not None:
                runnable.append((msg, task))
        if not runnable:
            return
        try:
            replies = self.store.begin_many(
                [(t["id"], m.stream, m.entry_id) for m, t in runnable], self.consumer)
        except TRANSIENT_ERRORS:
            # They are ours in Redis already: begin them on a later step, once it answers.
            self._unstarted = [m for m, _ in runnable]
            raise
        for (msg, task), reply in zip(runnable, replies, strict=True):
            self._after_begin(msg, task, reply)

    def _begun(self, msgs: list[Message]) -> None:
        """Start the messages a read began; those it could not vet are looked at here."""
        _, unvetted = self._start_begun(msgs)
        if unvetted:
            self.dispatch(unvetted)

    def _start_begun(self, msgs: list[Message], keep_one: bool = False
                     ) -> tuple[Task | None, list[Message]]:
        """Start the messages a read began, but with `keep_one` (the blocking read's task
        thread, while the loop waits for it) return the first task for the calling thread to
        run, in a slot taken for it. Returns it and the messages the read could not vet."""
        mine = None
        unvetted: list[Message] = []
        for i, msg in enumerate(msgs):
            if msg.begun[0] == b"check":
                unvetted.append(msg)
                continue
            task = self._validate(msg)
            if task is None:
                continue
            try:
                reply = step_reply(msg.begun)
            except Exception:
                if keep_one:
                    # A refused write (the server turned replica between the blocking read
                    # and its begin): this message and the rest are ours but not begun; the
                    # loop, waiting for this thread, begins them on its next step. The ones
                    # started before it run.
                    self._unstarted += unvetted + msgs[i:]
                    if mine is not None:
                        self.executor.hand(mine)
                raise
            if keep_one and mine is None and self.executor.take_slot():
                mine = self._after_begin(msg, task, reply, held=True)
                if mine is None:  # cancelled, final or gone: nothing to run
                    self.executor.release()
            else:
                self._after_begin(msg, task, reply)
        return mine, unvetted

    def _after_begin(self, msg: Message, task: dict[str, Any], reply: Any,
                     held: bool = False) -> Task | None:
        if isinstance(reply, Exception):
            self._dead_letter(msg, f"cannot begin task: {reply}", task["id"])
            return None
        outcome = reply[0].decode()
        if outcome == "run":
            return self._start(msg, task, held)
        elif outcome == "missing":
            self._dead_letter(msg, f"task record {self.keys.task_record(task['id'])} is "
                              "missing", task["id"])
        elif outcome == "cancelled":
            log.info("Task %s was cancelled before it started; skipped.", task["id"])
        else:
            log.debug("Task %s is already %s; message %s acknowledged.", task["id"],
                      reply[1].decode(), msg.entry_id)
        return None

    def _validate(self, msg: Message) -> dict[str, Any] | None:
        """The task of a runnable message; anything else is dead-lettered here."""
        max_attempts = self.settings.queue.max_attempts
        death = msg.death
        try:
            task = messages.parse(msg, self.settings.queue.max_message_bytes)
        except messages.BadMessage as bad:
            self._dead_letter(msg, bad.reason, bad.task_id)
            return None
        if task["task_type"] not in self.handlers:
            self._dead_letter(msg, f"unknown task type {task['task_type']!r} (registered: "
                              f"{', '.join(sorted(self.handlers))})", task["id"])
            return None
        if msg.deliveries > max_attempts:
            reason = (f"delivered {msg.deliveries} times without finishing "
                      f"(queue.max_attempts {max_attempts})")
            self._dead_letter(msg, reason + (f"; last: {death}" if death else ""), task["id"])
            return None
        return task

    def _dead_letter(self, msg: Message, reason: str, task_id: str | None) -> None:
        queue_name = self._queue_of(msg.stream)
        try:
            self.broker.dead_letter(
                msg, self.keys.dead(queue_name), reason=reason, task_id=task_id,
                record_key=self.keys.task_record(task_id) if task_id else None,
                preview=messages.preview(msg.fields),
                log=log_line("Task dead: " + reason[:300]),
                max_log_chars=self.settings.store.max_log_chars)
        except TRANSIENT_ERRORS as exc:  # pending still: delivered again once Redis answers
            self._loop_outage.failed(exc)
            return
        except Exception as exc:  # the rest of its batch still starts
            log.warning("Message %s on %s (task %s) could not be dead-lettered (%s): %s; it "
                        "stays pending and is delivered again.", msg.entry_id, msg.stream,
                        task_id or "unknown", reason, exc)
            return
        log.warning("Message %s on %s dead-lettered (task %s): %s.", msg.entry_id, msg.stream,
                    task_id or "unknown", reason)

    def _queue_of(self, stream: str) -> str:
        for q in self.settings.queue.names:
            if stream in self.keys.streams(q, self.settings.queue.priorities):
                return q
        return stream

    def _start(self, msg: Message, task: dict[str, Any], held: bool = False) -> Task | None:
        run = Running(task["id"], task["task_type"], msg.stream, msg.entry_id, time.time(),
                      payload=msg.fields.get(b"message", b""))
        run.ctx = TaskContext(task["id"], self.store, self._loggers[task["task_type"]])
        with self._lock:
            self.running[msg.entry_id] = run  # its lease is renewed from now on
        if held:
            return lambda: self._run_task(run, task)
        if self.executor.free_slots() > 0:
            self.executor.submit(lambda: self._run_task(run, task))
        else:
            # Begun while outcomes that were to free its slot could not be written yet.
            self._ready.append((run, task))
        return None

    def _start_ready(self) -> None:
        while self._ready and self.executor.free_slots() > 0:
            run, task = self._ready.pop(0)
            self.executor.submit(lambda run=run, task=task: self._run_task(run, task))

    def _run_task(self, run: Running, task: dict[str, Any]) -> Task | None:
        handler = self.handlers[run.task_type]
        started = time.monotonic()
        status, result, error, message, delay = "done", "", "", "Task done.", 0.0
        try:
            result = jsonsafe.dumps(handler(task, run.ctx))
        except TaskCancelled as exc:
            status, message = "cancelled", f"Task cancelled: {exc}"
        except RetryTask as exc:
            status, delay = "retry", exc.delay_s
            error = f"RetryTask: {jsonsafe.text(exc, 1000)}"
            message = f"Task asked to run again in {exc.delay_s:g} s: {jsonsafe.text(exc, 200)}"
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the slot is freed
            status = "failed"
            error = f"{type(exc).__name__}: {jsonsafe.text(exc, 1000)}"
            message = "Task failed: " + error
            log.error("Task %s (%s) failed: %s\n%s", run.task_id, run.task_type, error,
                      traceback.format_exc(limit=20))
            # The record keeps where it failed: the innermost frames, one line each.
            frames = traceback.extract_tb(exc.__traceback__)[-3:]
            error += "".join(f"\n  at {f.filename}:{f.lineno} in {f.name}" for f in frames)
        completion = Completion(run.task_id, run.stream, run.entry_id, status, result, error,
                                message, delay, run.payload)
        if time.monotonic() - started >= LONG_RUN_S and self._may_refill():
            return self._refill_together(completion)
        self._complete(completion)
        return None

    # Completion: final statuses and acks, batched -------------------------------------------
    # The consume loop holds the writer lock and writes the outcomes with its next read: short
    # tasks come back in batches. While it blocks in Redis, or drains, it lets go: a task thread
    # then writes its own outcome at once, with whatever the others queued meanwhile. A thread
    # that ran a long task (LONG_RUN_S) refills its own slot instead: see _refill.

    def _may_refill(self) -> bool:
        # Not with executor.max_tasks_per_worker: the loop and the threads would share one
        # count of tasks left. With memory.max_rss_mb the RSS is read first, as after any task.
        lc = self.lifecycle
        return (self._accepting and self.stop_signal is None and lc.reason is None
                and not lc.max_tasks and not self._unstarted and not self.takeover.orphans
                and (not lc.max_rss or lc.within_memory()))

    def _refill_together(self, completion: Completion) -> Task | None:
        """Refill this thread's slot, together with those of the threads that end meanwhile:
        tasks of one length started together end together, and one round trip for all of
        them beats a round trip each, taken one after another under the GIL."""
        self._refills.put(completion)
        if not self._refiller.acquire(timeout=REFILL_WAIT_S):
            self._outcome.set()  # still queued: the loop writes it
            return None
        try:
            batch = _drain(self._refills)
            # Empty: another thread wrote this outcome, and handed its slot to a task it read.
            return self._refill(batch) if batch else None
        finally:
            self._refiller.release()

    def _refill(self, batch: list[Completion]) -> Task | None:
        """Write these outcomes and read a message for each of their slots, in one round trip;
        return one task read for this thread to run next, and hand the others to the threads.

        The slots pass from the tasks that ended to the ones read, so the worker never holds
        more messages than it has threads. Whatever goes wrong is left to the loop.
        """
        streams = self._sound_streams()
        calls = self.store.finish_calls(batch)
        if streams:
            calls.append(self.broker.read_args(streams, len(batch), self.store.begin_args(),
                                               self._vet))
        try:
            replies = run_scripts(self.client, calls, raise_on_error=False)
        except Exception as exc:
            self._hand_to_loop(batch, exc)
            return None
        read = replies.pop() if streams else None
        try:
            settled = self.store.finish_replies(batch, replies)
        except Exception as exc:  # their slots stay taken until the loop writes them
            self._hand_to_loop(batch, exc)
            held = 0
        else:
            self._finish_outage.succeeded()
            held = len(batch)
            self._settle(batch, settled, keep=held)
        mine = None
        if read is not None and not isinstance(read, Exception):
            # What it read and could not start stays pending: the takeover delivers it again.
            try:
                mine, held = self._start_held(self.broker.read_result(read).messages, held)
            except TRANSIENT_ERRORS as exc:
                self._loop_outage.failed(exc)
            except Exception as exc:
                if self._throttle.ready("refill:" + type(exc).__name__):
                    log.exception("Worker %d: a task thread's read failed: %s; going on.",
                                  self.slot, exc)
        if held:
            self.executor.release(held)
            self._outcome.set()  # slots are free again: the loop reads for them
        return mine

    def _start_held(self, msgs: list[Message], held: int) -> tuple[Task | None, int]:
        """Start what READ_BEGIN began in the `held` slots; the first task is returned for the
        calling thread. Returns it and the slots left unused."""
        mine = None
        others = []
        for msg in msgs:
            if msg.begun[0] == b"check" or not held:
                others.append(msg)
                continue
            task = self._validate(msg)
            run = task and self._after_begin(msg, task, step_reply(msg.begun), held=True)
            if run:
                held -= 1
                if mine is None:
                    mine = run
                else:
                    self.executor.hand(run)
        if others:
            self._begun(others)  # looked at here, started in free slots
        return mine, held

    def _hand_to_loop(self, batch: list[Completion], exc: Exception) -> None:
        if isinstance(exc, TRANSIENT_ERRORS):
            self._finish_outage.failed(exc)
        for c in batch:
            self._completions.put(c)
        self._outcome.set()

    def _complete(self, completion: Completion) -> None:
        self._completions.put(completion)
        self._outcome.set()
        while not self._completions.empty() and self._writer.acquire(blocking=False):
            try:
                self._write_completions()
            finally:
                self._writer.release()
            # An outcome queued while this thread wrote, by a thread that found the writer
            # taken, is seen by the empty() check above: none is left behind.

    def _take_completions(self) -> list[Completion]:
        """The outcomes to write, the ones a failed write kept first. With the writer lock.

        Outcomes queued for a refill that no thread took up are written too."""
        batch, self._unwritten = self._unwritten, []
        return batch + _drain(self._completions) + _drain(self._refills)

    def _write_completions(self) -> None:
        """One try at writing the queued outcomes, with the writer lock; kept if it fails."""
        batch = self._take_completions()
        if not batch:
            return
        try:
            replies = run_scripts(self.client, self.store.finish_calls(batch),
                                  raise_on_error=False)
        except TRANSIENT_ERRORS as exc:
            # Never drop a completion: the record becomes final once Redis answers.
            self._unwritten = batch + self._unwritten
            self._finish_outage.failed(exc)
            return
        self._settle_or_keep(batch, replies)

    def _settle_or_keep(self, batch: list[Completion], replies: list[Any]) -> None:
        try:
            settled = self.store.finish_replies(batch, replies)
        except Exception as exc:  # e.g. OOM or a demoted primary: written on a later try
            self._unwritten = batch + self._unwritten
            if isinstance(exc, TRANSIENT_ERRORS):
                self._finish_outage.failed(exc)
            elif self._throttle.ready("finish:" + type(exc).__name__):
                log.error("Worker %d: cannot write %d final status(es): %s; retrying.",
                          self.slot, len(batch), exc)
            return
        self._finish_outage.succeeded()
        self._settle(batch, settled)

    def _settle(self, batch: list[Completion], replies: list[Any], keep: int = 0) -> None:
        """Count the outcomes and free their slots (`keep` of them kept, for tasks the caller
        starts in them)."""
        with self._lock:
            for c, reply in zip(batch, replies, strict=True):
                self.running.pop(c.entry_id, None)
                if isinstance(reply, Exception):
                    # Left pending and no longer renewed: the takeover delivers it again, and
                    # its begin dead-letters it with this same error.
                    log.error("Task %s: final status %s not written: %s.", c.task_id,
                              c.status, reply)
                    continue
                final = reply[0].decode()
                if final == "final":
                    log.info("Task %s was already %s when its run ended; left as it was.",
                             c.task_id, reply[1].decode())
                if final == "done":
                    self.done += 1
                elif final in ("failed", "cancelled"):
                    self.failed += final == "failed"
                if final == "missing":
                    log.info("Task %s finished but its record is gone; not recreated.", c.task_id)
            self.completed += len(batch)
        self.executor.release(len(batch) - keep)

    # Stop ------------------------------------------------------------------------------------

    def _give_back(self) -> None:
        msgs, self._unstarted = self._unstarted, []
        try:
            n = self.broker.give_back(msgs, self.keys.task_record)
            log.info("Worker %d: %d message(s) read as the stop came were queued again.",
                     self.slot, n)
        except TRANSIENT_ERRORS as exc:  # still ours in Redis: the takeover gets them later
            log.warning("Worker %d: %d message(s) left for takeover: %s.", self.slot, len(msgs),
                        exc)

    def _recycle_due(self) -> bool:
        return self.lifecycle is not None and self.lifecycle.recycle_due()

    def drain(self) -> int:
        """Finish the running tasks within the graceful timeout, then leave cleanly."""
        if self.quick:
            log.info("Worker %d (pid %d): quick stop; %d task(s) left for reclaim.", self.slot,
                     self.pid, len(self.running))
            end_process(0)
        log.info("Worker %d (pid %d) drains %d running task(s).", self.slot, self.pid,
                 len(self.running))
        if self._unstarted:
            self._give_back()
        deadline = time.monotonic() + self.settings.executor.graceful_timeout_s
        self._accepting = False
        self._writer.release()  # the task threads write their own outcomes from here on
        while self.running and time.monotonic() < deadline and not self.quick:
            self._touch_liveness()
            with self._writer:
                self._write_completions()  # what could not be written before, if anything
            self.executor.wait_idle(0.2)
        if self.running:
            log.warning("Worker %d: %d task(s) unfinished at the deadline; left for reclaim: %s.",
                        self.slot, len(self.running),
                        ", ".join(r.task_id for r in self.running.values()))
            end_process(0)
        self.heartbeat.stop()
        self.heartbeat.deregister()
        for stream in self.streams:
            try:
                if not self.broker.pending_ids(stream, self.consumer, 1):
                    self.broker.delete_consumer(stream, self.consumer)
            except Exception:  # best effort: the cleanup duty removes leftovers
                pass
        log.info("Worker %d (pid %d) stopped after %d task(s).", self.slot, self.pid,
                 self.completed)
        return 0

    # Reporting ---------------------------------------------------------------------------------

    def _touch_liveness(self) -> None:
        if self.lifecycle is not None:
            self.lifecycle.tick()  # liveness, title, recycling and time limits

    def running_ids(self) -> set[str]:
        with self._lock:
            return set(self.running)

    def leases(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        with self._lock:
            for run in self.running.values():
                out.setdefault(run.stream, []).append(run.entry_id)
        return out

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            current = {r.task_id: {"id": r.task_id, "task_type": r.task_type,
                                   "begin_at": r.begin_at,
                                   "progress": r.ctx.last_progress if r.ctx else None}
                       for r in self.running.values()}
        try:
            rss = psutil.Process(self.pid).memory_info().rss
        except psutil.Error:
            rss = 0
        pending, lag = self._group_counts()
        return {
            "ip_address": self.ip_address, "pid": self.pid, "name": self.consumer,
            "now": datetime.now().isoformat(timespec="milliseconds"), "boot_at": self.boot_at,
            "pending": pending, "lag": lag, "done": self.done, "failed": self.failed,
            "current": current, "host": self.host_id, "slot": self.slot,
            "supervisor_pid": self.supervisor_pid, "threads": self.executor.threads,
            "busy": self.executor.busy, "rss_bytes": rss, "version": workers.__version__,
            "queues": list(self.settings.queue.names),
        }

    def _group_counts(self) -> tuple[int, int]:
        pending = lag = 0
        pipe = self._beat_client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_groups(stream)
        for groups in pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue
            for g in groups:
                if g.get("name") in (self.keys.group, self.keys.group.encode()):
                    pending += int(g.get("pending") or 0)
                    lag += int(g.get("lag") or 0)  # absent before Redis 7
        return pending, lag


def _drain(q: queue.SimpleQueue) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def _ip_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _set_parent_death_signal() -> None:
    """Ask the kernel to send TERM when the supervisor dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
