"""Where a worker's time goes on the noop drain: py-spy samples of every worker, summarised.

Two drains are sampled: one with the threads that are running (on CPU or waiting for the GIL),
one with only the thread that holds the GIL. A thread group active far more often than it holds
the GIL is waiting for it. py-spy is optional (`pip install py-spy`); it samples without pausing
the workers (--nonblocking).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench.env import Bench, BenchError

RATE = 250  # samples per second per worker
_THREAD = re.compile(r"^thread \(\d+\): (?P<name>[^;]*)")
_LINE = re.compile(r" \(([^:()]+):\d+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("the profile needs py-spy: pip install py-spy")
    return found


def thread_group(name: str) -> str:
    # Pool threads are named task-{slot}_{n}: one group for all of them.
    return "task threads" if name.startswith("task-") else name or "?"


# Frames every sample of a thread has (the CLI, the fork, thread start-up): not informative.
_CHAIN_FILES = ("click/", "runpy", "supervisor/", "__main__.py")
_CHAIN_FUNCTIONS = ("Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "Worker.run")


def frame_name(frame: str) -> str:
    """`fn (/a/b/file.py:12)` -> `fn (b/file.py)`: lines of one function are summed."""
    m = _LINE.search(frame)
    if not m:
        return frame
    path = Path(m.group(1))
    return f"{frame[:m.start()]} ({path.parent.name}/{path.name})"


def chain(frame: str) -> bool:
    fn, _, where = frame.partition(" (")
    return fn in _CHAIN_FUNCTIONS or any(c in where for c in _CHAIN_FILES)


def sampled_drain(bench: Bench, n: int, out: Path, gil: bool) -> float:
    """Drain n queued noop tasks with py-spy on each worker; the drain's seconds."""
    bench.flush()
    ids = bench.client.submit_many("noop", [{}] * n)
    spies: list[subprocess.Popen] = []
    with bench.service(2, 8) as svc:
        svc.wait_booted()
        start = time.monotonic()
        for i, pid in enumerate(svc.worker_pids()):
            args = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking",
                    "--threads", "--format", "raw", "--output", f"{out}.{i}"]
            spies.append(bench.procs.start(args + (["--gil"] if gil else []), cwd=bench.tmp,
                                           env=bench.env))
        try:
            bench.drained(len(ids), max(120, n / 100))
            seconds = time.monotonic() - start
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for spy in spies:
                try:
                    spy.wait(20)
                except subprocess.TimeoutExpired:
                    pass
                bench.procs.kill(spy)
    return seconds


def read_samples(paths: list[Path]) -> list[tuple[str, list[str], int]]:
    samples = []
    for path in paths:
        if not path.exists():
            raise BenchError(f"py-spy wrote no {path.name}; see its permissions (ptrace)")
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            m = _THREAD.match(stack)
            if not m or not count.isdigit():
                continue
            frames = [frame_name(f) for f in stack.split(";")[1:]]
            samples.append((thread_group(m.group("name")), frames, int(count)))
    return samples


def summarise(samples: list[tuple[str, list[str], int]], ticks: float
              ) -> dict[str, Any]:
    """Per thread group: share of sample ticks; per function: self and inclusive shares."""
    groups: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = sum(c for _, _, c in samples) or 1
    for group, frames, count in samples:
        groups[group] += count
        if frames:
            own[frames[-1]] += count
        for f in set(frames):
            if not chain(f):
                inclusive[f] += count
    return {
        "samples": total,
        "groups": {g: c / ticks for g, c in groups.most_common()},
        "self": [(f, c / total) for f, c in own.most_common(25)],
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(40)],
    }


def profile(bench: Bench, n: int) -> dict[str, Any]:
    out = {}
    for mode, gil in (("active", False), ("gil", True)):
        base = bench.tmp / f"spy-{mode}"
        seconds = sampled_drain(bench, n, base, gil)
        paths = sorted(base.parent.glob(base.name + ".*"))
        ticks = RATE * seconds * len(paths)
        out[mode] = {"seconds": seconds, "rate": n / seconds,
                     **summarise(read_samples(paths), ticks)}
    return out


def text(prof: dict[str, Any]) -> str:
    """The profile as the bench prints it."""
    act, gil = prof["active"], prof["gil"]
    per_worker = gil["rate"] / 2  # tasks per second of one of the 2 workers
    lines = [f"Profile of the noop drain (py-spy, {RATE}/s per worker; drains at "
             f"{act['rate']:,.0f} and {gil['rate']:,.0f} tasks/s while sampled)",
             f"{'thread group (share of one worker wall time)':<48}{'active':>9}{'holds GIL':>11}"
             f"{'GIL us/task':>13}"]
    for g in sorted(set(act["groups"]) | set(gil["groups"]),
                    key=lambda g: -act["groups"].get(g, 0)):
        held = gil["groups"].get(g, 0)
        lines.append(f"{g:<48}{act['groups'].get(g, 0):>9.1%}{held:>11.1%}"
                     f"{held / per_worker * 1e6:>13.1f}")
    lines += ["", f"{'self time while holding the GIL (top 20)':<80}{'share':>8}"]
    lines += [f"{f[:80]:<80}{s:>8.1%}" for f, s in gil["self"][:20]]
    lines += ["", f"{'inclusive time while holding the GIL (top 30)':<80}{'share':>8}"]
    lines += [f"{f[:80]:<80}{s:>8.1%}" for f, s in gil["inclusive"][:30]]
    return "\n".join(lines)
