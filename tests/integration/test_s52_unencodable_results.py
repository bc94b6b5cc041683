"""S52: results that JSON cannot encode."""

import json

import pytest

from tests.delivery_support import field, with_handlers
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def test_s52_results_are_encoded_or_the_task_fails_cleanly(harness, redis_server):
    with_handlers(harness)
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    pid = next(iter(heartbeats(r).values()))["pid"]
    client = harness.client()
    kinds = ["int_keys", "set", "datetime", "decimal", "bytes", "object", "deep"]
    ids = {k: client.submit("odd_result", {"kind": k}) for k in kinds}
    progress = client.submit("odd_progress")
    noops = client.submit_many("noop", [{}] * 10)
    every = [*ids.values(), progress, *noops]
    poll(lambda: all(s in ("done", "failed") for s in statuses(r, every)), 20, 0.1, "all final")
    result = {k: field(r, t, "result") for k, t in ids.items()}
    assert json.loads(result["int_keys"]) == {"1": "a", "2": "b"}
    assert json.loads(result["set"]) == {"s": [1, 2, 3]}
    assert json.loads(result["datetime"]) == {"at": "2026-01-02T03:04:05"}
    assert json.loads(result["decimal"]) == {"d": "1.10"}
    for k in ("bytes", "object", "deep"):
        assert statuses(r, [ids[k]]) == ["failed"]
        assert "cannot be encoded as JSON" in field(r, ids[k], "error")
        assert result[k] == ""
    assert "bytes" in field(r, ids["bytes"], "error")
    assert "object" in field(r, ids["object"], "error")
    assert "an exception as the message" in field(r, progress, "progress_msg")
    assert statuses(r, [progress, *noops]) == ["done"] * 11
    for t in every:
        value = field(r, t, "result")
        assert value == "" or json.loads(value) is not None
    assert next(iter(heartbeats(r).values()))["pid"] == pid
    assert "exited" not in sup.stderr and "was killed" not in sup.stderr
