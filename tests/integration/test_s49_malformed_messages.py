"""S49: malformed messages go to the dead-letter stream and the loop goes on."""

import json

import pytest

from tests.delivery_support import pending
from tests.support import heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)

BIG = 2 ** 70


def test_s49_bad_entries_are_dead_lettered_and_the_loop_goes_on(harness, redis_server):
    sup = harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    poll(lambda: heartbeats(r), 20, message="worker up")
    pid = next(iter(heartbeats(r).values()))["pid"]
    client = harness.client()
    big_id = "b" * 32
    r.hset(f"te:task:{big_id}", mapping={"id": big_id, "task_type": "noop", "queue": "common",
                                          "priority": 0, "status": "queued", "progress": 0})
    bad = {
        "a": {"other": "x"},
        "b": {"message": "{not json"},
        "c": {"message": "[1, 2]"},
        "d": {"message": json.dumps({"id": "d" * 32})},
        "e": {"message": json.dumps({"id": "e" * 32, "task_type": 5})},
        "f": {"message": b"\xff\xfe\xfd"},
        "g": {"message": "[" * 100_000 + "]" * 100_000},
        "h": {"message": f'{{"id": "{big_id}", "task_type": "noop", "n": {BIG}}}'},
    }
    noops, entries = [], {}
    for name, fields in bad.items():
        noops.append(client.submit("noop"))
        entries[name] = r.xadd("te.0.common", fields).decode()
    noops += client.submit_many("noop", [{}] * 2)
    poll(lambda: statuses(r, noops) == ["done"] * 10, 20, 0.1, "10 noop done")
    poll(lambda: pending(r) == 0, 10, 0.1, "nothing pending")
    assert statuses(r, [big_id]) in (["done"], ["dead"])
    dead = {f[b"entry_id"].decode(): {k.decode(): v.decode("utf-8", "replace")
                                      for k, v in f.items()} for _, f in r.xrange("te.dead.common")}
    expect_dead = [n for n in bad if n != "h" or statuses(r, [big_id]) == ["dead"]]
    for name in expect_dead:
        d = dead[entries[name]]
        assert d["stream"] == "te.0.common" and d["reason"], d
    reasons = {n: dead[entries[n]]["reason"] for n in expect_dead}
    assert "no 'message' field" in reasons["a"]
    assert "not valid JSON" in reasons["b"] and "not an object" in reasons["c"]
    assert "task_type" in reasons["d"] and "task_type" in reasons["e"]
    assert "UTF-8" in reasons["f"] and "not valid JSON" in reasons["g"]
    assert len(dead[entries["g"]]["message"]) < 2000, "a bounded preview"
    err = sup.stderr
    for name in expect_dead:
        assert sum(1 for line in err.splitlines()
                   if "WARNING" in line and entries[name] in line) == 1
    assert next(iter(heartbeats(r).values()))["pid"] == pid
    listing = harness.cli("dead", "list")
    assert listing.returncode == 0 and b"no 'message' field" in listing.stdout
    assert harness.cli("dead", "purge").returncode == 0
    assert r.xlen("te.dead.common") == 0
    def task_keys():
        return sorted(k for k in r.scan_iter("te*") if not k.startswith(b"te:delayed"))

    before = task_keys()
    # Trimming may shorten the streams meanwhile; their last ids show what was added.
    lengths = {k: r.xinfo_stream(k)["last-generated-id"] for k in before
               if r.type(k) == b"stream"}
    for data in ("{not json", "[1]"):
        res = harness.cli("submit", "noop", "--data", data)
        assert res.returncode == 2, res.stderr
    assert task_keys() == before, "a refused submit writes nothing"
    assert lengths == {k: r.xinfo_stream(k)["last-generated-id"] for k in lengths}
