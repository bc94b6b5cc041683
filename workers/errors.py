"""Exceptions that cross module boundaries: for handlers, the producer API and the CLI."""


class TaskCancelled(Exception):
    """Raised inside a handler when its task was cancelled or its record vanished."""


class TaskTimeLimit(Exception):
    """Raised inside a handler whose task ran past `executor.task_time_limit_s`; the task fails."""


class RetryTask(Exception):
    """Raised by a handler (as `ctx.Retry`) to run its task again after `delay_s` seconds."""

    def __init__(self, reason: str = "", delay_s: float = 0.0) -> None:
        super().__init__(reason or "retry requested")
        self.delay_s = max(0.0, float(delay_s))


class TaskNotFound(LookupError):
    """No record exists for a task id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class SubmitError(ValueError):
    """A task was refused by the producer before anything was written."""


class RedisUnavailable(ConnectionError):
    """Redis could not be reached; the message names the address tried."""
