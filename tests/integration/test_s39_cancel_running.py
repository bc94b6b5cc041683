"""S39: cancelling a running task takes effect quickly and sticks."""

import time

import pytest

from tests.delivery_support import field, pending, with_handlers
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def _big_document(path, mb=40):
    line = "Chunking splits a document at sentence ends and merges pieces up to a limit. "
    with path.open("w") as fh:
        for _ in range(mb * 1024 * 1024 // (len(line) * 50)):
            fh.write(line * 50 + "\n")


def test_s39_cancel_stops_running_tasks_and_sticks(harness, redis_server, tmp_path):
    with_handlers(harness)
    harness.start("run", "--procs", "1", "--threads", "3")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    doc = tmp_path / "big.txt"
    _big_document(doc)
    out = tmp_path / "OUT"
    client = harness.client()
    step = client.submit("steps", {"n": 200, "step_s": 0.5})
    chunk = client.submit("chunk", {"path": str(doc), "out": str(out)})
    stubborn = client.submit("hang", {"seconds": 3})
    poll(lambda: statuses(r, [step, chunk, stubborn]) == ["running"] * 3, 10, message="running")
    poll(lambda: float(field(r, chunk, "progress") or 0) > 0, 10, message="chunk under way")
    for task_id, bound in ((step, 1.0), (chunk, 2.0), (stubborn, None)):
        sent = time.monotonic()
        res = harness.cli("cancel", task_id)
        assert res.returncode == 0, res.stderr
        if bound is not None:
            poll(lambda t=task_id: statuses(r, [t]) == ["cancelled"], bound + 1.5, 0.02,
                 f"{task_id} cancelled")
            # The CLI takes a few hundred ms to start; the bound is from the cancel.
            assert time.monotonic() - sent < bound + 1.0
            assert field(r, task_id, "progress") == "-1"
    poll(lambda: statuses(r, [stubborn]) == ["cancelled"], 6, 0.05, "stubborn task settled")
    assert field(r, stubborn, "result") == ""
    poll(lambda: heartbeats(r) and next(iter(heartbeats(r).values()))["busy"] == 0, 5,
         message="slots free again")
    assert pending(r) == 0
    assert not list(out.rglob("*.jsonl")) and not list(out.rglob("*.tmp*"))
