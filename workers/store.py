"""Task records (`te:task:{id}`) and cancel flags: every state change through one script."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from workers import scripts
from workers.keys import Keys
from workers.redisconn import raise_if_transient

RECORD_FIELDS = (
    "id", "task_type", "queue", "priority", "status", "progress", "progress_msg", "retry_count",
    "created_at", "begin_at", "finished_at", "process_duration", "consumer", "task", "result",
    "error",
)


@functools.lru_cache(maxsize=4)
def _hms(second: int) -> str:
    # strftime per task showed in profiles; a second's text serves all its tasks.
    return time.strftime("%H:%M:%S", time.localtime(second))


def log_line(message: str, now: float | None = None) -> str:
    """One `HH:MM:SS message` line of progress_msg, as RAGFlow writes it."""
    return _hms(int(now or time.time())) + " " + message


def decode_record(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A record hash as Python values: numbers as numbers, task and result as JSON."""
    rec: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    for name in ("progress", "created_at", "begin_at", "finished_at", "process_duration"):
        rec[name] = float(rec[name]) if rec.get(name) else None
    for name in ("priority", "retry_count"):
        rec[name] = int(rec[name]) if rec.get(name) else 0
    for name in ("task", "result"):
        if rec.get(name):
            try:
                rec[name] = orjson.loads(rec[name])
            except orjson.JSONDecodeError:
                pass
        else:
            rec[name] = None
    return rec


def run_scripts(client: redis.Redis, calls: list[tuple[Any, list[Any], list[Any]]],
                raise_on_error: bool = True) -> list[Any]:
    """EVALSHA each (script, keys, args) in one pipeline, one round trip.

    redis-py's Script objects put a SCRIPT EXISTS round trip before every pipeline; here only
    a server that lost its scripts (NOSCRIPT) costs more: the scripts are loaded and the calls
    that failed, and only those, run again.
    """
    replies = send_all(client, [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls])
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        for script in {id(calls[i][0]): calls[i][0] for i in missing}.values():
            client.script_load(script.script)
        again = [calls[i] for i in missing]
        retried = send_all(client, [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in again])
        for i, reply in zip(missing, retried, strict=True):
            replies[i] = reply
    if raise_on_error:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def send_all(client: redis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send the commands in one write on one pooled connection and read their replies, an
    error reply as its exception: a pipeline without redis-py's Pipeline object, retry
    wrapper and reply callbacks, which cost a busy worker more than Redis takes to run the
    scripts. Replies are as Redis sent them (what EVALSHA gets anyway). A connection that
    fails is closed, so the pool opens a fresh one."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def step_reply(reply: list[Any]) -> Any:
    """One task's reply of a batch script. Its {'error', text} is returned as an exception when
    the task's own key is at fault (a record of the wrong type), and raised otherwise: a
    refused write (a replica, no memory) fails the whole batch, to be tried again."""
    if reply and reply[0] == b"error":
        text = reply[1].decode("utf-8", "replace")
        if "WRONGTYPE" in text:
            return redis.ResponseError(text)
        raise_if_transient(text)
        raise redis.ResponseError(text)
    return reply


@dataclass(slots=True)
class Completion:
    """The outcome of one run of a task, on its way to the store."""

    task_id: str
    stream: str
    entry_id: str
    status: str
    result: str = ""
    error: str = ""
    message: str = ""
    delay_s: float = 0.0
    payload: bytes = b""


class TaskStore:
    """Reads and writes task records; the scripts make each transition atomic."""

    def __init__(self, client: redis.Redis, keys: Keys, *, group: str, max_log_chars: int,
                 cancel_ttl_s: float, result_ttl_s: float, max_attempts: int = 3) -> None:
        self.client = client
        self.keys = keys
        self.group = group
        self.max_log_chars = max_log_chars
        self.cancel_ttl_s = cancel_ttl_s
        self.result_ttl_s = result_ttl_s
        self.max_attempts = max_attempts
        self._begin = client.register_script(scripts.BEGIN_MANY)
        self._finish = client.register_script(scripts.FINISH_MANY)
        self._progress = client.register_script(scripts.PROGRESS)
        self._submit = client.register_script(scripts.SUBMIT)
        self._cancel = client.register_script(scripts.CANCEL)
        self._retry = client.register_script(scripts.RETRY)

    def _task_keys(self, task_id: str) -> list[str]:
        return [self.keys.task_record(task_id), self.keys.cancel_flag(task_id)]

    # Producer side -------------------------------------------------------------------------

    def submit_args(self, task: Mapping[str, Any], message: bytes, stream: str,
                    rerun: bool) -> tuple[list[str], list[Any]]:
        now = repr(time.time())
        fields = {
            "id": task["id"], "task_type": task["task_type"], "queue": task["queue"],
            "priority": task["priority"], "status": "queued", "progress": "0",
            "progress_msg": log_line("Task queued.") + "\n", "retry_count": "0", "created_at": now,
            "begin_at": "", "finished_at": "", "process_duration": "", "consumer": "",
            "task": message, "result": "", "error": "",
        }
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        return self._task_keys(task["id"]) + [stream], ["1" if rerun else "0", message, *flat]

    def submit_many(self, prepared: Iterable[tuple[list[str], list[Any]]]) -> list[list[Any]]:
        return run_scripts(self.client, [(self._submit, keys, args) for keys, args in prepared])

    def status(self, task_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(self.keys.task_record(task_id))
        return decode_record(raw) if raw else None

    def cancel(self, task_id: str) -> tuple[str, str]:
        """('missing'|'final'|'cancelled'|'requested', status)."""
        reply = self._cancel(keys=self._task_keys(task_id), args=[
            int(self.cancel_ttl_s), repr(time.time()), log_line("Task cancelled while queued."),
            self.max_log_chars])
        return reply[0].decode(), (reply[1].decode() if len(reply) > 1 else "")

    # Worker side ---------------------------------------------------------------------------

    def begin_args(self) -> list[Any]:
        """The begin step's arguments after group and consumer: now, log prefix, log limit."""
        return [repr(time.time()), log_line("")[:-1], self.max_log_chars]

    def vet_args(self, task_types: Iterable[str], max_message_bytes: int) -> list[Any]:
        """READ_BEGIN's vetting arguments: the record and cancel keys around the id, the byte
        limit and the task types this worker runs."""
        record = self.keys.task.split("{id}", 1)
        cancel = self.keys.cancel.split("{id}", 1)
        return [*record, *cancel, max_message_bytes, *sorted(task_types)]

    def begin_many(self, items: list[tuple[str, str, str]], consumer: str) -> list[list[Any]]:
        """Mark each (task id, stream, entry id) running: one script call, one round trip.

        One reply per item; a record that could not be read (wrong type) gives an exception.
        """
        if not items:
            return []
        keys: list[Any] = []
        args: list[Any] = [self.group, consumer, *self.begin_args()]
        for task_id, stream, entry_id in items:
            keys += self._task_keys(task_id)
            keys.append(stream)
            args.append(entry_id)
        (replies,) = run_scripts(self.client, [(self._begin, keys, args)])
        return [step_reply(r) for r in replies]

    def finish_calls(self, done: list[Completion]) -> list[tuple[Any, list[Any], list[Any]]]:
        """The script calls that write these final statuses and acknowledge their messages:
        one FINISH_MANY for all, and one RETRY per run that asked to run again later."""
        now = time.time()
        keys: list[Any] = []
        args: list[Any] = [self.group, repr(now), self.max_log_chars, int(self.result_ttl_s)]
        calls: list[tuple[Any, list[Any], list[Any]]] = []
        for c in done:
            task_keys = self._task_keys(c.task_id) + [c.stream]
            if c.status == "retry":
                calls.append((self._retry, task_keys + [self.keys.delayed], [
                    self.group, c.entry_id, c.delay_s, c.payload, log_line(c.message, now),
                    self.max_log_chars, c.error, self.max_attempts]))
                continue
            keys += task_keys
            args += [c.entry_id, c.status, c.result, c.error, log_line(c.message, now)]
        return ([(self._finish, keys, args)] if keys else []) + calls

    @staticmethod
    def finish_replies(done: list[Completion], replies: list[Any]) -> list[Any]:
        """One reply per completion, from the replies of `finish_calls`, in order.

        A call that failed as a whole raises; a record that could not be read (wrong type)
        gives an exception, and its message stays pending for the takeover to deliver again.
        """
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        batch = any(c.status != "retry" for c in done)
        finished = iter([step_reply(r) for r in replies[0]] if batch else [])
        retried = iter(replies[1 if batch else 0:])
        return [next(retried) if c.status == "retry" else next(finished) for c in done]

    def finish_many(self, done: list[Completion]) -> list[Any]:
        """Write final statuses and acknowledge their messages, in one round trip."""
        calls = self.finish_calls(done)
        return self.finish_replies(done, run_scripts(self.client, calls, raise_on_error=False))

    def progress(self, task_id: str, value: float | None, message: str) -> str:
        """'ok', or why the handler should stop: 'cancelled', 'missing' or the status."""
        line = "\n".join(log_line(m) for m in message.split("\n")) if message else ""
        reply = self._progress(keys=self._task_keys(task_id), args=[
            "" if value is None else repr(float(value)), line, self.max_log_chars])
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def cancel_requested(self, task_id: str) -> bool:
        """True when the cancel flag is set or the record is gone."""
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.cancel_flag(task_id))
        pipe.exists(self.keys.task_record(task_id))
        flag, record = pipe.execute()
        return bool(flag) or not record
