"""S26: a storm of signals neither hangs the service nor loses work."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import psutil
import pytest

from tests.support import Harness, poll

pytestmark = pytest.mark.timeout(120)

DOCS = 400  # the scenario's 2000, scaled down
STORM = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2)


def _corpus(folder: Path, n: int, seed: int = 26) -> None:
    rng = random.Random(seed)
    words = ("document", "pipelines", "split", "text", "at", "sentence", "ends", "and", "merge",
             "the", "pieces", "up", "to", "a", "token", "limit", "so", "every", "chunk", "keeps",
             "its", "meaning")
    folder.mkdir(parents=True)
    for i in range(n):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 25))) + "."
                 for _ in range(30)]
        (folder / f"doc{i:04d}.txt").write_text("\n".join(lines))


def _storm(pid: int, stop: threading.Event, rng: random.Random) -> None:
    """A random signal to the supervisor every 5 to 50 ms, USR1/USR2 to random workers;
    from the moment its loop runs (its title says so), as a service manager would."""
    poll(lambda: "taskexec: supervisor" in " ".join(psutil.Process(pid).cmdline()), 30, 0.01,
         "the supervisor loop running")
    while not stop.is_set():
        try:
            sup = psutil.Process(pid)
            sup.send_signal(rng.choice(STORM))
            workers = sup.children()
            if workers and rng.random() < 0.3:
                rng.choice(workers).send_signal(rng.choice((signal.SIGUSR1, signal.SIGUSR2)))
        except psutil.Error:
            pass
        stop.wait(rng.uniform(0.005, 0.05))


def _chunk(h: Harness, docs: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(h.argv("chunk", str(docs), "--out", str(out), "--procs", "3",
                                   "--threads", "4", "--json", *extra),
                            cwd=h.tmp, env=h.env, stdout=subprocess.PIPE,
                            stderr=(h.tmp / f"{out.name}.err").open("wb"),
                            start_new_session=True)


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))}


def _runs_per_task(r, out: Path) -> list[int]:
    counts = []
    for key in r.scan_iter(match="te:task:*", count=1000):
        rec = r.hmget(key, "task", "retry_count")
        if rec[0] and orjson.loads(rec[0]).get("out") == str(out):
            counts.append(int(rec[1]))
    return counts


def test_s26_storm_changes_nothing_and_term_stops_it(harness, redis_server, tmp_path) -> None:
    harness.conf.update(memory={"snapshot_dir": str(tmp_path / "snapshots")})
    docs = tmp_path / "docs"
    _corpus(docs, DOCS)
    r = redis_server.client()
    calm = _chunk(harness, docs, tmp_path / "calm")
    assert calm.wait(60) == 0

    stormy = _chunk(harness, docs, tmp_path / "stormy", "--log-level", "DEBUG")
    stop = threading.Event()
    storm = threading.Thread(target=_storm, args=(stormy.pid, stop, random.Random(1)))
    storm.start()
    try:
        out, _ = stormy.communicate(timeout=90)
    finally:
        stop.set()
        storm.join(5)
    assert stormy.returncode == 0, (stormy.returncode, out[-2000:])
    summary = orjson.loads(out)
    assert summary["documents"] == DOCS and summary["failures"] == 0
    assert _outputs(tmp_path / "stormy") == _outputs(tmp_path / "calm")
    assert set(_runs_per_task(r, (tmp_path / "stormy").resolve())) == {1}
    err = (tmp_path / "stormy.err").read_text()
    assert "Traceback" not in err, err[err.find("Traceback") - 500:][:3000]

    big = tmp_path / "big"
    _corpus(big, DOCS * 3, seed=27)
    cut = _chunk(harness, big, tmp_path / "cut")
    stop = threading.Event()
    storm = threading.Thread(target=_storm, args=(cut.pid, stop, random.Random(2)))
    storm.start()
    try:
        poll(lambda: len(list((tmp_path / "cut").rglob("*.jsonl"))) >= DOCS // 2, 60, 0.05,
             "part of the big run done")
        sent = time.monotonic()
        cut.send_signal(signal.SIGTERM)
        out, _ = cut.communicate(timeout=20)
    finally:
        stop.set()
        storm.join(5)
    assert cut.returncode == 1 and time.monotonic() - sent < 10 + 5
    summary = orjson.loads(out)
    assert summary["unfinished"] > 0 and summary["failures"] == 0
