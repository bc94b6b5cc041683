"""`taskexec dead`: list, retry and purge the dead-letter streams."""

from __future__ import annotations

from typing import Any

import redis

from supervisor.burst import _name


def _dead_streams(c: Any, queues: list[str] | None) -> list[tuple[str, str]]:
    return [(q, c.keys.dead(q)) for q in queues or c.settings.queue.names]


def list_dead(c: Any, queues: list[str] | None, limit: int) -> list[dict[str, Any]]:
    rows = []
    for q, stream in _dead_streams(c, queues):
        try:
            entries = c.redis.xrevrange(stream, "+", "-", count=limit)
        except redis.ResponseError:
            continue
        for entry_id, fields in reversed(entries):
            row = {_name(k): _name(v) for k, v in fields.items()}
            row.update(queue=q, dead_id=_name(entry_id))
            rows.append(row)
    return rows


def _find(c: Any, ident: str, queues: list[str] | None) -> tuple[str, str, dict[str, str]]:
    for _, stream in _dead_streams(c, queues):
        try:
            entries = c.redis.xrange(stream, "-", "+")
        except redis.ResponseError:
            continue
        for entry_id, fields in reversed(entries):
            row = {_name(k): _name(v) for k, v in fields.items()}
            if ident in (row.get("task_id"), _name(entry_id)):
                return stream, _name(entry_id), row
    raise LookupError(f"no dead letter for {ident}")


def retry(c: Any, ident: str, queues: list[str] | None) -> str:
    """Queue the task of a dead letter again, from its record, and drop the dead letter."""
    stream, dead_id, row = _find(c, ident, queues)
    task_id = row.get("task_id")
    rec = c.store.status(task_id) if task_id else None
    if rec is None or not isinstance(rec.get("task"), dict):
        raise LookupError(f"dead letter {dead_id} has no task record to queue again "
                          "(the message itself could not be read)")
    task = dict(rec["task"])
    task.pop("id", None)
    task_type = task.pop("task_type")
    new_id = c.submit(task_type, task, id=task_id, queue=rec["queue"],
                      priority=rec["priority"], rerun=True)
    c.redis.xdel(stream, dead_id)
    return new_id


def purge(c: Any, queues: list[str] | None) -> int:
    total = 0
    for _, stream in _dead_streams(c, queues):
        try:
            total += c.redis.xlen(stream)
        except redis.ResponseError:
            continue
        c.redis.delete(stream)
    return total
