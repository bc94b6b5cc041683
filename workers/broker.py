"""The queue streams: groups, reads sized to free slots, acks, takeover and dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from workers import scripts
from workers.redisconn import raise_if_transient
from workers.store import run_scripts, send_all


@dataclass(slots=True)
class Message:
    """One stream entry as read, before its task is parsed."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int = 1
    death: str = ""  # why its previous consumer stopped, when it was taken over
    begun: Any = None  # the begin step's reply when the read began it (READ_BEGIN)


@dataclass
class ReadResult:
    messages: list[Message] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # stream -> error text
    last_ids: dict[str, str] = field(default_factory=dict)  # for the wake-up wait


def _task_id(msg: Message) -> str | None:
    try:
        task = orjson.loads(msg.fields.get(b"message", b""))
        return str(task["id"]) if isinstance(task, dict) and "id" in task else None
    except (orjson.JSONDecodeError, TypeError):
        return None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Broker:
    """Explicit stream operations for one consumer of one consumer group."""

    def __init__(self, client: redis.Redis, blocking: redis.Redis | None, *, group: str,
                 consumer: str) -> None:
        self.client = client
        self.blocking = blocking
        self.group = group
        self.consumer = consumer
        self._read = client.register_script(scripts.READ_BEGIN)
        self._delivered = client.register_script(scripts.BEGIN_DELIVERED)
        self._dead = client.register_script(scripts.DEAD_LETTER)
        self._claim = client.register_script(scripts.CLAIM)
        self._renew = client.register_script(scripts.RENEW)
        self._trim = client.register_script(scripts.TRIM)
        self._give_back = client.register_script(scripts.GIVE_BACK)

    def ensure_group(self, stream: str) -> bool:
        """Create the group from id 0 (so older entries are delivered); True if it was new."""
        try:
            self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            return True
        except redis.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise

    def read_args(self, streams: list[str], count: int, begin: list[Any], vet: list[Any]
                  ) -> tuple[Any, list[str], list[Any]]:
        """The READ_BEGIN call for `run_scripts`: up to `count` messages, each begun if vetted.

        `begin` is the begin step's arguments after group and consumer (now, log line prefix,
        max log chars); `vet` the vetting arguments (key parts, byte limit, task types).
        """
        return self._read, streams, [self.group, self.consumer, *begin, count, *vet]

    def read_result(self, reply: Any, report: bool = True) -> ReadResult:
        """The messages of a READ_BEGIN reply, highest-priority stream first; with `report`
        False a stream's error is left out, for the next READ to report."""
        out, last = reply
        result = ReadResult()
        for item in out:
            stream, kind = _s(item[0]), _s(item[1])
            if kind == "error" and not report:
                continue
            if kind == "error":
                # A demoted primary or a loading server is an outage, not a broken stream.
                raise_if_transient(_s(item[2]), self.client)
                result.errors[stream] = _s(item[2])
                continue
            for entry_id, flat, begun in item[2]:
                pairs = iter(flat or ())  # field, value, field, value...
                fields = dict(zip(pairs, pairs, strict=True))
                result.messages.append(Message(stream, _s(entry_id), fields, begun=begun))
        for stream, last_id in last:
            result.last_ids[_s(stream)] = _s(last_id)
        return result

    def wait_for_new(self, last_ids: dict[str, str], block_s: float) -> bool:
        """Block until a stream gets an entry after `last_ids`, or `block_s` passes.

        A plain XREAD consumes nothing: the group read that follows takes the message, so an
        idle worker never holds a message it has no slot for.
        """
        if not last_ids or self.blocking is None:
            time.sleep(min(block_s, 0.1))
            return False
        try:
            reply = self.blocking.xread(last_ids, count=1, block=max(1, int(block_s * 1000)))
        except redis.ResponseError as exc:
            raise_if_transient(str(exc))  # UNBLOCKED: the server turned replica under the read
            raise
        return bool(reply)

    def read_blocking(self, streams: list[str], block_s: float, begin: list[Any],
                      vet: list[Any], scan: int) -> list[Message]:
        """Block up to block_s for new entries, taking at most one per stream, and begin them
        in the same round trip (BEGIN_DELIVERED, up to `scan` pending entries per stream).

        Only for a caller with a free slot per stream, so it never holds more than it can run.
        `begin` and `vet` are as for read_args.
        """
        if self.blocking is None:
            return []
        args = [self.group, self.consumer, *begin, scan, *vet]
        read, begun = send_all(self.blocking, [
            ("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", 1,
             "BLOCK", max(1, int(block_s * 1000)), "STREAMS", *streams, *[">"] * len(streams)),
            ("EVALSHA", self._delivered.sha, len(streams), *streams, *args)])
        if isinstance(read, redis.ReadOnlyError):
            raise read  # an outage: the loop backs off
        if isinstance(begun, redis.exceptions.NoScriptError):
            (begun,) = run_scripts(self.blocking, [(self._delivered, streams, args)],
                                   raise_on_error=False)
        if isinstance(begun, Exception):
            raise_if_transient(str(begun), self.client)
            return []  # the next READ says what is wrong
        # A lost group or a broken stream fails the read of that stream only: the next READ
        # reports it. What the script began is started whatever the read's own reply.
        return self.read_result(begun, report=False).messages

    def pending_ids(self, stream: str, consumer: str, count: int, min_idle_ms: int = 0
                    ) -> list[str]:
        """Ids of entries `consumer` holds that were idle at least `min_idle_ms`."""
        rows = self.client.xpending_range(stream, self.group, "-", "+", count,
                                          consumername=consumer, idle=min_idle_ms or None)
        return [_s(r["message_id"]) for r in rows]

    def claim(self, stream: str, from_consumer: str, entry_ids: list[str],
              min_idle_ms: int = 0) -> tuple[list[Message], list[str]]:
        """Take entries from `from_consumer` (only those it still owns), counting a delivery.

        Returns the claimed messages and the ids whose message was gone (now acknowledged).
        """
        if not entry_ids:
            return [], []
        out, lost = self._claim(keys=[stream], args=[self.group, from_consumer, self.consumer,
                                                      min_idle_ms, *entry_ids])
        msgs = []
        for entry_id, flat, deliveries in out:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            msgs.append(Message(stream, _s(entry_id), fields, int(deliveries)))
        return msgs, [_s(i) for i in lost]

    def renew(self, leases: dict[str, list[str]]) -> list[tuple[str, str]]:
        """Reset the idle time of held entries without counting a delivery.

        Returns (stream, entry id) of the entries this consumer no longer owns.
        """
        if not leases:
            return []
        pipe = self.client.pipeline(transaction=False)
        streams = list(leases)
        for stream in streams:
            self._renew(keys=[stream], args=[self.group, self.consumer, *leases[stream]],
                        client=pipe)
        gone = []
        for stream, reply in zip(streams, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list):
                gone += [(stream, _s(i)) for i in reply]
        return gone

    def give_back(self, msgs: list[Message], record_key: Any) -> int:
        """Queue again messages read but never begun; returns how many went back."""
        pipe = self.client.pipeline(transaction=False)
        for m in msgs:
            task_id = _task_id(m)
            self._give_back(keys=[m.stream, record_key(task_id) if task_id else m.stream],
                            args=[self.group, self.consumer, m.entry_id,
                                  m.fields.get(b"message", b"")], client=pipe)
        return sum(int(r) for r in pipe.execute())

    def trim(self, stream: str) -> int:
        """Delete acknowledged entries; never one that is pending or not yet delivered."""
        return int(self._trim(keys=[stream], args=[self.group]))

    def ack(self, stream: str, entry_id: str) -> None:
        self.client.xack(stream, self.group, entry_id)

    def dead_letter(self, msg: Message, dead_stream: str, *, reason: str, task_id: str | None,
                    record_key: str | None, preview: str, log: str, max_log_chars: int) -> None:
        """Copy a message to the dead-letter stream with its reason, then acknowledge it. A
        record not final yet becomes `dead`, finished now, with `log` added to its log."""
        now = repr(time.time())
        fields = {
            "task_id": task_id or "", "stream": msg.stream, "entry_id": msg.entry_id,
            "reason": reason, "deliveries": str(msg.deliveries), "consumer": self.consumer,
            "dead_at": now, "message": preview,
        }
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        has_record = "1" if record_key else "0"
        self._dead(keys=[msg.stream, dead_stream, record_key or msg.stream],
                   args=[self.group, msg.entry_id, has_record, reason, log, max_log_chars, now,
                         *flat])

    def delete_consumer(self, stream: str, consumer: str) -> None:
        try:
            self.client.xgroup_delconsumer(stream, self.group, consumer)
        except redis.ResponseError:
            pass  # no stream or no group: nothing to remove
