"""S42: on-demand memory tracing does not stall the worker (scaled down: 2 tasks holding about
15 MB each while a noop arrives every 0.5 s; USR1 twice, USR2 twice)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests import memhandlers
from tests.support import Conf, Harness, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(90)


def _files(folder: Path, pid: int) -> list[Path]:
    return sorted(folder.glob(f"{pid}_snapshot_*.trace"), key=lambda p: p.stat().st_mtime_ns)


class Feeder(threading.Thread):
    """Submits a noop every `every_s` seconds until stopped."""

    def __init__(self, harness: Harness, every_s: float) -> None:
        super().__init__(daemon=True)
        self.client = harness.client()
        self.every_s = every_s
        self.ids: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            self.ids.append(self.client.submit("noop"))

    def wait_for(self, more: int) -> None:
        """Let `more` noops be submitted, so each step runs alongside live traffic."""
        target = len(self.ids) + more
        poll(lambda: len(self.ids) >= target, more * self.every_s + 5, message="noops submitted")


def test_s42_snapshots_and_tracing_do_not_stall_the_worker(
        tmp_path: Path, conf: Conf, harness: Harness, redis_server) -> None:
    snaps = tmp_path / "snaps"
    conf.update(handlers=memhandlers.HANDLERS, memory={"snapshot_dir": str(snaps)})
    sup = harness.start("run", "--procs", "1", "--threads", "4")
    r = redis_server.client()
    ((consumer, beat),) = poll(lambda: list(heartbeats(r).items()), 20, message="heartbeat")
    worker = beat["pid"]
    client = harness.client()
    holders = client.submit_many("hold", [{"mb": 15, "seconds": 20}] * 2)
    poll(lambda: statuses(r, holders) == ["running"] * 2, 15, message="holders running")
    owners: set[tuple[str, str]] = set()
    feeder = Feeder(harness, 0.5)
    feeder.start()
    try:
        for n in (1, 2):  # each USR1 to the supervisor reaches the worker, and itself
            feeder.wait_for(4)
            sup.send(signal.SIGUSR1)
            poll(lambda n=n: len(_files(snaps, worker)) == n and len(_files(snaps, sup.pid)) == n,
                 20, message=f"snapshot {n} of the worker and the supervisor")
            owners |= _owners(r)
        feeder.wait_for(3)
        sup.send(signal.SIGUSR2)
        poll(lambda: f"Worker 0 (pid {worker}) stopped memory tracing" in sup.stderr, 10,
             message="tracing stopped")
        sup.send(signal.SIGUSR2)
        poll(lambda: f"Worker 0 (pid {worker}): memory tracing is already off" in sup.stderr,
             10, message="a second USR2 is harmless")
        feeder.wait_for(2)
        res = harness.cli("memory", "snapshot", "--pid", str(worker), "--timeout", "20")
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout.decode().split() == [str(_files(snaps, worker)[-1])]
        owners |= _owners(r)
        feeder.wait_for(2)
    finally:
        feeder.halt.set()
        feeder.join(5)

    files = _files(snaps, worker)
    assert len(files) == 3
    # The second snapshot saw the holders' churn since the first started tracing.
    top = harness.cli("memory", "top", str(files[1]), "--vs", str(files[0]), "--limit", "10")
    assert top.returncode == 0, top.stderr.decode()
    entries = top.stdout.decode().splitlines()[1:]
    assert 1 <= len(entries) <= 10 and all(" diff +" in e for e in entries[:1])
    assert "memhandlers.py:" in entries[0], top.stdout.decode()
    assert harness.cli("memory", "top", str(tmp_path / "missing.trace")).returncode == 3
    (tmp_path / "notes.trace").write_text("not a snapshot")
    assert harness.cli("memory", "top", str(tmp_path / "notes.trace")).returncode == 2

    for path in files:  # each snapshot was logged with its path and duration
        assert f"wrote memory snapshot {path} in " in sup.stderr

    # Every noop was done within 5 s of its submission, while snapshots were taken.
    assert len(feeder.ids) >= 15
    poll(lambda: statuses(r, feeder.ids) == ["done"] * len(feeder.ids), 10, message="noops done")
    waits = [_record_seconds(r, i) for i in feeder.ids]
    assert max(waits) < 5, waits

    # No task was taken over: one start each, the same owner throughout, the worker unchanged.
    assert owners and {owner for _, owner in owners} == {consumer}
    assert [int(r.hget(f"te:task:{i}", "retry_count")) for i in holders] == [1, 1]
    assert list(heartbeats(r).values())[0]["pid"] == worker


def _owners(r) -> set[tuple[str, str]]:
    rows = r.xpending_range("te.0.common", "rag_flow_svr_task_broker", "-", "+", 100)
    return {(row["message_id"].decode(), row["consumer"].decode()) for row in rows}


def _record_seconds(r, task_id: str) -> float:
    created, finished = r.hmget(f"te:task:{task_id}", "created_at", "finished_at")
    return float(finished) - float(created)


def test_memory_snapshot_refuses_a_pid_that_is_not_taskexec(harness) -> None:
    import subprocess

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        res = harness.cli("memory", "snapshot", "--pid", str(bystander.pid), "--timeout", "2")
        assert res.returncode == 2 and b"not a taskexec" in res.stderr
        assert bystander.poll() is None, "the bystander was not signalled"
    finally:
        bystander.kill()
        bystander.wait(5)
