"""The main job end to end, on real processes and a redis-server started by the test."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from pathlib import Path

import orjson
import pytest

from tests.handlers import starts
from tests.support import ROOT, Conf, Harness, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(120)


def _corpus(folder: Path, minimum: int = 50) -> int:
    """At least `minimum` real documents: the shipped examples plus installed documentation."""
    shutil.copytree(ROOT / "examples" / "docs", folder / "examples")
    sources = [Path("/usr/share/doc"), Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"]
    n = len(list((folder / "examples").iterdir()))
    for src in sources:
        for path in sorted(src.rglob("*")) if src.exists() else []:
            if n >= minimum + 10:
                return n
            if path.suffix in (".txt", ".md", ".html") and path.is_file() and \
                    1000 < path.stat().st_size < 200_000:
                dest = folder / "installed" / f"{n:03d}-{path.name}"
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(path, dest)
                n += 1
    return n


def test_chunk_on_embedded_redis_writes_one_file_per_document(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    count = _corpus(docs)
    assert count >= 50
    conf = Conf(tmp_path / "conf", None, redis={"embedded": {"dir": str(tmp_path / "data")}})
    h = Harness(tmp_path, conf, None)
    outputs = []
    for run in (1, 2):
        out = tmp_path / f"out{run}"
        res = h.cli("chunk", str(docs), "--out", str(out), "--procs", "2", "--threads", "4",
                    timeout=110)
        assert res.returncode == 0, res.stderr.decode()[-2000:]
        summary = res.stdout.decode()
        assert f"documents {count}," in summary and "failures 0," in summary
        files = sorted(out.rglob("*.jsonl"))
        assert len(files) == count
        ids = {}
        for f in files:
            lines = [orjson.loads(line) for line in f.read_bytes().splitlines()]
            assert lines and all(set(c) == {"doc", "index", "text", "tokens", "chunk_id"}
                                 for c in lines)
            ids[str(f.relative_to(out))] = [c["chunk_id"] for c in lines]
        outputs.append(ids)
    assert outputs[0] == outputs[1]
    cjk = [c for c in (tmp_path / "out1").rglob("pipelines-zh.txt.jsonl")]
    assert cjk, "the CJK document was chunked"
    # The embedded server was stopped last: nothing answers on its socket any more.
    res = h.cli("queues")
    assert res.returncode == 5, res.stderr
    assert len(res.stderr.decode().strip().splitlines()) == 1


def test_thousand_noops_each_run_once(harness: Harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "2", "--threads", "4")
    jsonl = harness.tmp / "tasks.jsonl"
    jsonl.write_text("{}\n" * 1000)
    res = harness.cli("submit", "noop", "--jsonl", str(jsonl))
    assert res.returncode == 0, res.stderr
    ids = res.stdout.decode().split()
    assert len(ids) == 1000
    r = redis_server.client()
    poll(lambda: statuses(r, ids).count("done") == 1000, 60, 0.2, "1000 noop tasks done")
    pipe = r.pipeline()
    for i in ids:
        pipe.hget(f"te:task:{i}", "retry_count")
    assert set(pipe.execute()) == {b"1"}
    res = harness.cli("queues", "--json")
    rows = json.loads(res.stdout)
    stream = next(row for row in rows if row["stream"] == "te.0.common")
    assert stream["pending"] == 0 and stream["lag"] == 0
    sup.send(signal.SIGTERM)
    assert sup.wait(15) == 0


def test_killed_worker_is_respawned_and_its_tasks_finish(harness: Harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "2", "--threads", "2")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 20, message="two workers heartbeat")
    client = harness.client()
    ids = [client.submit("count", {"seconds": 3}) for _ in range(4)]
    poll(lambda: statuses(r, ids).count("running") == 4, 10, message="4 tasks running")
    victim = poll(lambda: next((hb for hb in heartbeats(r).values()
                                if hb["slot"] == 0 and len(hb["current"]) == 2), None),
                  5, message="slot 0 heartbeats its 2 tasks")
    killed_at = time.monotonic()
    import os

    os.kill(victim["pid"], signal.SIGKILL)

    def respawned():
        return [hb for hb in heartbeats(r).values() if hb["slot"] == 0 and
                hb["pid"] != victim["pid"]]

    poll(respawned, 5, 0.05, "slot 0 respawned")
    assert time.monotonic() - killed_at < 2.5
    poll(lambda: statuses(r, ids).count("done") == 4, 30, 0.1, "all tasks done")
    held = list(victim["current"])
    assert held and all(starts(r, t) == 2 for t in held)
    assert all(starts(r, t) == 1 for t in ids if t not in held)
    assert "was killed by signal 9" in _wait_log(sup, "killed by signal 9")
    sup.send(signal.SIGTERM)
    assert sup.wait(15) == 0


def _wait_log(proc, text: str) -> str:
    return poll(lambda: proc.stderr if text in proc.stderr else "", 5, message=text)


def test_sigterm_drains_running_tasks_then_exits_0(harness: Harness, redis_server) -> None:
    sup = harness.start("run", "--procs", "1", "--threads", "4")
    r = redis_server.client()
    client = harness.client()
    ids = [client.submit("sleep", {"seconds": 1}) for _ in range(4)]
    poll(lambda: statuses(r, ids).count("running") == 4, 20, message="4 tasks running")
    sent = time.monotonic()
    sup.send(signal.SIGTERM)
    assert sup.wait(10 + 2) == 0
    assert time.monotonic() - sent < 12
    assert statuses(r, ids) == ["done"] * 4
    assert r.xpending("te.0.common", "rag_flow_svr_task_broker")["pending"] == 0
    assert not r.smembers("TASKEXE"), "a clean stop leaves the registry"


def test_cancel_queued_and_running_tasks(harness: Harness, redis_server) -> None:
    harness.start("run", "--procs", "1", "--threads", "1")
    r = redis_server.client()
    client = harness.client()
    running = client.submit("sleep", {"seconds": 30})
    poll(lambda: statuses(r, [running]) == ["running"], 20, message="sleep task running")
    queued = client.submit("sleep", {"seconds": 30})
    for task_id in (queued, running):
        sent = time.monotonic()
        res = harness.cli("cancel", task_id)
        assert res.returncode == 0, res.stderr
        poll(lambda t=task_id: statuses(r, [t]) == ["cancelled"], 2, message=f"{task_id} "
             "cancelled")
        assert time.monotonic() - sent < 2.5
        assert float(r.hget(f"te:task:{task_id}", "progress")) == -1
    assert r.hget(f"te:task:{queued}", "begin_at") == b"", "the queued task never started"
    assert not r.exists(f"{running}-cancel"), "the flag goes once the task is final"
    res = harness.cli("cancel", "0" * 32)
    assert res.returncode == 3


def test_executors_json_lists_heartbeat_fields(harness: Harness, redis_server) -> None:
    harness.start("run", "--procs", "2", "--threads", "3", "--host-id", "h1")
    r = redis_server.client()
    poll(lambda: len(heartbeats(r)) == 2, 20, message="two workers heartbeat")
    res = harness.cli("executors", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert len(rows) == 2
    fields = {"ip_address", "pid", "name", "now", "boot_at", "pending", "lag", "done", "failed",
              "current", "host", "slot", "supervisor_pid", "threads", "busy", "rss_bytes",
              "version", "alive", "heartbeat_age_s"}
    for row in rows:
        assert fields <= set(row), fields - set(row)
        assert row["alive"] is True and row["threads"] == 3 and row["host"] == "h1"
        assert row["name"] == f"task_executor_h1_{row['slot']}_{row['pid']}"
        assert row["rss_bytes"] > 0
    assert sorted(row["slot"] for row in rows) == [0, 1]
    table = harness.cli("executors").stdout.decode()
    assert "CONSUMER" in table and "task_executor_h1_0_" in table


@pytest.mark.parametrize("content,words", [
    ("queue:\n  blok_s: 1\n", ["service_conf.yaml", "queue.blok_s"]),
    ("executor:\n  threads: many\n", ["service_conf.yaml", "executor.threads"]),
])
def test_bad_configuration_exits_2_naming_file_and_key(harness: Harness, content: str,
                                                       words: list[str]) -> None:
    (harness.conf.dir / "local.service_conf.yaml").write_text(content)
    for args in (("run",), ("config", "show"), ("status", "x")):
        res = harness.cli(*args, timeout=20)
        assert res.returncode == 2, (args, res.stderr)
        err = res.stderr.decode()
        assert all(w in err for w in words), err


def test_commands_exit_5_when_redis_is_away(tmp_path: Path) -> None:
    conf = Conf(tmp_path / "conf", f"unix://{tmp_path}/nothing.sock")
    h = Harness(tmp_path, conf, None)
    for args in (("status", "abc"), ("submit", "noop"), ("queues",)):
        res = h.cli(*args)
        assert res.returncode == 5, res.stderr
        assert len(res.stderr.decode().strip().splitlines()) == 1
