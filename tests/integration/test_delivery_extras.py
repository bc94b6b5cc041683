"""Retries with a delay, duplicate ids, re-runs, and trimming of acknowledged entries."""

import time

import pytest

from tests.delivery_support import field, start_count, with_handlers
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)


def test_retry_exception_runs_the_task_again_after_its_delay(harness, redis_server):
    with_handlers(harness, queue={"max_attempts": 2})
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    t = client.submit("retry_once", {"delay_s": 1.5})
    poll(lambda: start_count(r, t) == 1 and statuses(r, [t]) == ["queued"], 10, 0.02,
         "queued again after the retry request")
    assert "RetryTask: not yet" in field(r, t, "error")
    asked = time.monotonic()
    poll(lambda: statuses(r, [t]) == ["done"], 10, 0.05, "done on the second run")
    assert time.monotonic() - asked >= 1.2
    assert start_count(r, t) == 2 and field(r, t, "retry_count") == "2"
    # Retries are bounded: a handler that always asks again fails at queue.max_attempts runs.
    always = client.submit("retry_once", {"delay_s": 0.2, "always": True})
    poll(lambda: statuses(r, [always]) == ["failed"], 10, 0.05, "retries exhausted")
    assert start_count(r, always) == 2
    assert "retries exhausted" in field(r, always, "progress_msg")


def test_duplicate_ids_are_refused_and_reruns_clear_stale_flags(harness, redis_server):
    harness.start("run", "--procs", "1", "--threads", "1")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    busy = harness.cli("submit", "sleep", "--data", '{"seconds": 2}', "--id", "job-1")
    assert busy.returncode == 0
    again = harness.cli("submit", "noop", "--id", "job-1")
    assert again.returncode == 2 and b"job-1" in again.stderr
    poll(lambda: statuses(r, ["job-1"]) == ["done"], 10, message="first run done")
    assert harness.cli("submit", "noop", "--id", "job-1").returncode == 2
    r.set("job-1-cancel", "x", ex=60)  # a stale flag from an earlier cancel
    rerun = harness.cli("submit", "noop", "--id", "job-1", "--rerun", "--wait", "--timeout", "10")
    assert rerun.returncode == 0, rerun.stderr
    assert statuses(r, ["job-1"]) == ["done"] and field(r, "job-1", "retry_count") == "1"


def test_cleanup_trims_acknowledged_entries_only(harness, redis_server):
    harness.conf.update(cleanup={"interval_s": 0.5})
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    client = harness.client()
    ids = client.submit_many("noop", [{}] * 200)
    poll(lambda: statuses(r, ids) == ["done"] * 200, 20, 0.1, "200 done")
    poll(lambda: r.xlen("te.0.common") == 0, 10, 0.1, "acknowledged entries trimmed")
    running = [client.submit("sleep", {"seconds": 4}) for _ in range(2)]
    poll(lambda: statuses(r, running) == ["running"] * 2, 10, message="slots busy")
    queued = client.submit_many("noop", [{}] * 5)
    time.sleep(2)  # ok: two cleanup intervals pass while entries are pending or undelivered
    assert r.xlen("te.0.common") == 7
    poll(lambda: statuses(r, queued) == ["done"] * 5, 15, 0.1, "queued ones done")
