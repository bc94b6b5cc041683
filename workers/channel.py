"""A page of memory a worker shares with its supervisor: state, liveness, and a mailbox.

The supervisor maps it before the fork, so both processes see the same bytes without a system
call: the worker writes its state, counts and a liveness stamp on every loop turn; the
supervisor reads them on every pass of its own loop, and posts the dead consumers whose messages
the worker should take over. CLOCK_MONOTONIC is one clock for every process of the machine,
so the stamp means the same thing on both sides and ignores changes of the wall clock.
"""

from __future__ import annotations

import enum
import mmap
import struct
import time
from dataclasses import dataclass

import orjson

SIZE = 8192
_HEAD = struct.Struct("<BxHHxxIIQd")  # state, busy, threads, started, completed, rss, alive
_TEXT = struct.Struct("<H")
_REASON_AT, _REASON_MAX = 64, 254
_TAIL_AT, _TAIL_MAX = 320, 700
_MAIL_AT = 1024
_MAIL_HEAD = struct.Struct("<II")  # sequence (odd while being written), length
_MAIL_MAX = SIZE - _MAIL_AT - _MAIL_HEAD.size


class WorkerState(enum.IntEnum):
    BOOTING = 0
    RUNNING = 1
    DRAINING = 2


@dataclass(frozen=True)
class Report:
    """What a worker last wrote about itself."""

    state: WorkerState
    busy: int
    threads: int
    started: int
    completed: int
    rss_bytes: int
    alive_at: float  # time.monotonic() of its last loop turn; 0 before the first
    reason: str  # why it drains, when it decided so itself


class Channel:
    """Created by the supervisor before the fork; used by both sides afterwards."""

    def __init__(self) -> None:
        self._mm = mmap.mmap(-1, SIZE)  # anonymous and shared: inherited by the child
        self._mail_seen = 0

    def close(self) -> None:
        self._mm.close()

    # Worker side ------------------------------------------------------------------------------

    def report(self, state: WorkerState, *, busy: int, threads: int, started: int,
               completed: int, rss_bytes: int) -> None:
        _HEAD.pack_into(self._mm, 0, int(state), min(busy, 65535), min(threads, 65535),
                        started & 0xFFFFFFFF, completed & 0xFFFFFFFF, rss_bytes,
                        time.monotonic())

    def set_reason(self, text: str) -> None:
        self._put_text(_REASON_AT, _REASON_MAX, text)

    def set_tail(self, line: str) -> None:
        """The last line the worker wrote to stderr, for the supervisor's log of its death."""
        self._put_text(_TAIL_AT, _TAIL_MAX, line)

    def take_mail(self) -> list[list[str]] | None:
        """Items posted since the last call, or None when there is nothing new (or a post is
        being written right now: the next call gets it)."""
        seq, length = _MAIL_HEAD.unpack_from(self._mm, _MAIL_AT)
        if seq == self._mail_seen or seq % 2:
            return None
        body = bytes(self._mm[_MAIL_AT + _MAIL_HEAD.size:_MAIL_AT + _MAIL_HEAD.size + length])
        if _MAIL_HEAD.unpack_from(self._mm, _MAIL_AT)[0] != seq:
            return None
        self._mail_seen = seq
        return orjson.loads(body) if body else []

    # Supervisor side --------------------------------------------------------------------------

    def read(self) -> Report:
        state, busy, threads, started, completed, rss, alive = _HEAD.unpack_from(self._mm, 0)
        try:
            st = WorkerState(state)
        except ValueError:
            st = WorkerState.BOOTING
        return Report(st, busy, threads, started, completed, rss, alive,
                      self._get_text(_REASON_AT))

    def tail(self) -> str:
        return self._get_text(_TAIL_AT)

    def post(self, items: list[list[str]]) -> None:
        """Replace the mailbox with `items` (the worker keeps track of what it has seen)."""
        body = orjson.dumps(items)
        while len(body) > _MAIL_MAX and items:
            items = items[1:]
            body = orjson.dumps(items)
        seq, _ = _MAIL_HEAD.unpack_from(self._mm, _MAIL_AT)
        _MAIL_HEAD.pack_into(self._mm, _MAIL_AT, seq + 1, 0)
        start = _MAIL_AT + _MAIL_HEAD.size
        self._mm[start:start + len(body)] = body
        _MAIL_HEAD.pack_into(self._mm, _MAIL_AT, seq + 2, len(body))

    # Both -------------------------------------------------------------------------------------

    def _put_text(self, at: int, limit: int, text: str) -> None:
        data = text.encode("utf-8", "replace")[:limit]
        self._mm[at + _TEXT.size:at + _TEXT.size + len(data)] = data
        _TEXT.pack_into(self._mm, at, len(data))

    def _get_text(self, at: int) -> str:
        (length,) = _TEXT.unpack_from(self._mm, at)
        start = at + _TEXT.size
        return bytes(self._mm[start:start + length]).decode("utf-8", "replace")
