"""The wire format: a stream entry with one `message` field holding the task as JSON."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from workers.broker import Message

RESERVED = ("id", "task_type", "queue", "priority")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
# orjson reads integers beyond 64 bits as floats; such messages are read again exactly.
_BIG_INT = re.compile(rb"\d{19}")
PREVIEW_CHARS = 1024


class BadMessage(ValueError):
    """A message that cannot be run; `reason` goes to the dead-letter stream."""

    def __init__(self, reason: str, task_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id


def new_id() -> str:
    return uuid.uuid4().hex


def preview(fields: Mapping[bytes, bytes], limit: int = PREVIEW_CHARS) -> str:
    """A bounded, printable copy of an entry's fields for the dead-letter stream."""
    parts = []
    for k, v in fields.items():
        parts.append(k.decode("utf-8", "replace") + "=" + v[:limit].decode("utf-8", "replace"))
    text = " ".join(parts)
    return text if len(text) <= limit else text[:limit] + "..."


def _loads(raw: bytes) -> Any:
    if _BIG_INT.search(raw):
        return json.loads(raw.decode("utf-8"))
    return orjson.loads(raw)


def parse(msg: Message, max_bytes: int) -> dict[str, Any]:
    """The task a message asks for, or BadMessage saying why it cannot be run."""
    raw = msg.fields.get(b"message")
    if raw is None:
        raise BadMessage("entry has no 'message' field")
    if len(raw) > max_bytes:
        raise BadMessage(f"message of {len(raw)} bytes exceeds queue.max_message_bytes "
                         f"({max_bytes})")
    try:
        task = _loads(raw)
    except UnicodeDecodeError:
        raise BadMessage("message is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"message is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(task, dict):
        raise BadMessage(f"message is JSON {type(task).__name__}, not an object")
    task_id = task.get("id")
    if not isinstance(task_id, str) or not NAME_RE.match(task_id):
        raise BadMessage("message has no valid 'id' (a string of up to 128 letters, digits "
                         "or _.:-)")
    task_type = task.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        raise BadMessage("message has no 'task_type' string", task_id)
    return task


def encode(task_type: str, data: Mapping[str, Any] | None, *, task_id: str | None,
           max_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Build a task and its JSON, refusing what a worker would have to dead-letter."""
    if not isinstance(task_type, str) or not NAME_RE.match(task_type):
        raise ValueError(f"task type {task_type!r} is not a name of letters, digits or _.:-")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"task data must be a JSON object, not {type(data).__name__}")
    clash = [k for k in RESERVED if k in data]
    if clash:
        raise ValueError(f"task data uses reserved field(s) {', '.join(clash)}")
    task_id = task_id or new_id()
    if not NAME_RE.match(task_id):
        raise ValueError(f"task id {task_id!r} is not up to 128 letters, digits or _.:-")
    task = {"id": task_id, "task_type": task_type, **data}
    try:
        raw = orjson.dumps(task)
    except TypeError as exc:
        raise ValueError(f"task data cannot be encoded as JSON: {exc}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"task of {len(raw)} bytes exceeds queue.max_message_bytes ({max_bytes})")
    return task, raw
