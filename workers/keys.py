"""Redis key names, built from the `keys:` templates of the configuration."""

from __future__ import annotations

from dataclasses import dataclass

FINAL_STATUSES = frozenset({"done", "failed", "cancelled", "dead"})


@dataclass(frozen=True)
class Keys:
    queue_stream: str = "te.{priority}.{queue}"
    dead_stream: str = "te.dead.{queue}"
    task: str = "te:task:{id}"
    cancel: str = "{id}-cancel"
    group: str = "rag_flow_svr_task_broker"
    registry: str = "TASKEXE"
    cleanup_lock: str = "clean_task_executor"
    delayed: str = "te:delayed"

    @classmethod
    def from_settings(cls, keys: object) -> Keys:
        return cls(**{name: getattr(keys, name) for name in cls.__dataclass_fields__})

    def stream(self, queue: str, priority: int) -> str:
        return self.queue_stream.format(priority=priority, queue=queue)

    def dead(self, queue: str) -> str:
        return self.dead_stream.format(queue=queue)

    def task_record(self, task_id: str) -> str:
        return self.task.format(id=task_id)

    def cancel_flag(self, task_id: str) -> str:
        return self.cancel.format(id=task_id)

    def streams(self, queue: str, priorities: list[int] | tuple[int, ...]) -> list[str]:
        """The streams of one queue, highest priority first."""
        return [self.stream(queue, p) for p in sorted(priorities, reverse=True)]
