"""A worker leaks on purpose; two `memory snapshot`s and `memory top --vs` find the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import memhandlers
from tests.support import Conf, Harness, heartbeats, poll, statuses

pytestmark = pytest.mark.timeout(60)

LEAK_LINE = next(i for i, line in enumerate(
    Path(memhandlers.__file__).read_text().splitlines(), 1) if "# LEAK-LINE" in line)


def _snapshot(harness: Harness) -> str:
    res = harness.cli("memory", "snapshot", "--timeout", "20", timeout=40)
    assert res.returncode == 0, res.stderr.decode()
    files = res.stdout.decode().split()
    assert len(files) == 1 and Path(files[0]).is_file(), files
    return files[0]


def test_memory_top_vs_names_the_leaking_handler_line(
        tmp_path: Path, conf: Conf, harness: Harness, redis_server) -> None:
    snaps = tmp_path / "snaps"
    conf.update(handlers=memhandlers.HANDLERS, memory={"snapshot_dir": str(snaps)})
    harness.start("run", "--procs", "1", "--threads", "2")
    r = redis_server.client()
    (beat,) = poll(lambda: list(heartbeats(r).values()), 20, message="the worker's heartbeat")

    older = _snapshot(harness)  # starts tracing in the worker
    assert Path(older).name.startswith(f"{beat['pid']}_snapshot_")
    client = harness.client()
    ids = client.submit_many("leak", [{"kib": 512}] * 12)  # 6 MiB kept by one list
    poll(lambda: statuses(r, ids) == ["done"] * len(ids), 20, message="leak tasks done")
    newer = _snapshot(harness)
    assert newer != older

    res = harness.cli("memory", "top", newer, "--vs", older, "--limit", "5")
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    assert "largest growth" in lines[0]
    assert f"memhandlers.py:{LEAK_LINE}" in lines[1], res.stdout.decode()
    assert len(lines) <= 6

    rows = json.loads(harness.cli("memory", "top", newer, "--vs", older, "--json").stdout)
    top = rows[0]
    assert top["filename"].endswith("tests/memhandlers.py") and top["lineno"] == LEAK_LINE
    assert top["size_diff"] > 5 * 2**20 and top["count_diff"] >= 12 * 512
