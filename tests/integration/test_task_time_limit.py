"""executor.task_time_limit_s: soft (the handler is asked to stop), then hard (the task fails and
the worker, whose thread the task still holds, is replaced)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support import poll, statuses
from tests.support_proc import log_lines, wait_exit, with_proc_handlers, workers_by_slot

pytestmark = pytest.mark.timeout(60)


def test_task_time_limit_soft_then_hard(harness, redis_server) -> None:
    with_proc_handlers(harness.conf, executor={"task_time_limit_s": 1,
                                               "graceful_timeout_s": 1.5})
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: workers_by_slot(sup.pid), 20, 0.05, "a worker")
    first = workers_by_slot(sup.pid)[0]
    client = harness.client()
    polite = client.submit("sleep", {"seconds": 10})
    stubborn = client.submit("ignore_cancel", {"seconds": 30})
    started = time.monotonic()
    poll(lambda: statuses(r, [polite]) == ["failed"], 5, 0.05, "the polite task stopped")
    assert "TaskTimeLimit" in client.status(polite)["error"]
    assert time.monotonic() - started < 3
    poll(lambda: statuses(r, [stubborn]) == ["failed"], 6, 0.05, "the stubborn task failed")
    assert "executor.task_time_limit_s" in client.status(stubborn)["error"]
    poll(lambda: workers_by_slot(sup.pid).get(0) not in (None, first), 10, 0.05,
         "the worker holding the stuck thread replaced")
    assert log_lines(sup, "stuck in a thread past its time limit")
    after = client.submit("noop")
    poll(lambda: statuses(r, [after]) == ["done"], 10, 0.05, "the new worker works")
    assert statuses(r, [stubborn]) == ["failed"], "never run again"
    sup.send(signal.SIGTERM)
    assert wait_exit(sup, 15)[0] == 0
