"""`taskexec memory`: ask workers for tracemalloc snapshots and show what grew between two.

Snapshots are pickles. `top` reads only a local file the operator names, and through an
unpickler that accepts nothing but tracemalloc's own two classes, so a file that is not a
snapshot cannot run code; nothing is ever unpickled from Redis.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import time
import tracemalloc
from pathlib import Path
from typing import Any

import click
import psutil

from supervisor import inspect
from supervisor.cli import Failure, common, default_host_id, emit_json, producer, settings_from
from workers.exitcodes import ExitCode
from workers.memory import snapshot_glob

# Frames of the tracing machinery itself say nothing about the program.
_NOISE = (tracemalloc.Filter(False, tracemalloc.__file__),
          tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
          tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
          tracemalloc.Filter(False, "<unknown>"))


class _SnapshotUnpickler(pickle.Unpickler):
    ALLOWED = {("tracemalloc", "Snapshot"), ("tracemalloc", "_Traces")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a snapshot")
        return super().find_class(module, name)


def load_snapshot(path: str) -> tracemalloc.Snapshot:
    """A snapshot from a local file: exit 3 when it is missing, 2 when it is not a snapshot."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise Failure(f"{path}: no such file", ExitCode.NOT_FOUND) from None
    except OSError as exc:
        raise Failure(f"{path}: cannot read it: {exc}", ExitCode.NOT_FOUND) from None
    try:
        snap = _SnapshotUnpickler(io.BytesIO(data)).load()
        if not isinstance(snap, tracemalloc.Snapshot):
            raise TypeError(type(snap).__name__)
        return snap.filter_traces(_NOISE)
    except Exception as exc:
        raise Failure(f"{path} is not a tracemalloc snapshot ({type(exc).__name__}: {exc})",
                      ExitCode.USAGE) from None


@click.group("memory")
def memory() -> None:
    """Memory snapshots of running processes (tracemalloc), and what grew."""


# snapshot ------------------------------------------------------------------------------------

def _snapshot_dir(configured: str, pid: int) -> Path:
    """The folder a process writes to: a relative snapshot_dir is relative to its own cwd."""
    folder = Path(configured)
    if folder.is_absolute():
        return folder
    try:
        return Path(psutil.Process(pid).cwd()) / folder
    except psutil.Error:
        return folder.resolve()


def _local_workers(obj: dict[str, Any], host_id: str) -> list[int]:
    """Pids of this host's live workers, as their heartbeats tell and this machine confirms."""
    rows, problem = inspect.executors(producer(obj))
    if problem:
        raise Failure(problem, ExitCode.FAILED)
    pids = []
    for row in rows:
        pid = row.get("pid")
        if row.get("host") != host_id or not row.get("alive") or not isinstance(pid, int):
            continue
        try:  # a pid reused by another program has another parent
            if psutil.Process(pid).ppid() == row.get("supervisor_pid"):
                pids.append(pid)
        except psutil.Error:
            continue
    if not pids:
        raise Failure(f"no live worker of host {host_id} runs on this machine (see taskexec "
                      "executors; --host-id names another host)", ExitCode.NOT_FOUND)
    return sorted(pids)


def _existing(folder: Path, pid: int) -> set[Path]:
    return set(folder.glob(snapshot_glob(pid))) if folder.is_dir() else set()


def _check_taskexec(pid: int) -> None:
    """Refuse a pid that is not a taskexec process: SIGUSR1 kills most other programs."""
    try:
        title = " ".join(psutil.Process(pid).cmdline())
    except psutil.NoSuchProcess:
        raise Failure(f"no process {pid}", ExitCode.NOT_FOUND) from None
    except psutil.Error as exc:
        raise Failure(f"cannot inspect process {pid}: {exc}", ExitCode.FAILED) from None
    if not title.startswith("taskexec"):
        raise Failure(f"process {pid} is not a taskexec worker or supervisor ({title[:60]!r}); "
                      "not signalled", ExitCode.USAGE)


@memory.command("snapshot")
@click.option("--pid", "pids", multiple=True, type=int,
              help="Process to snapshot (repeatable; default: every local worker).")
@click.option("--host-id", default=None, help="Host id the workers run under (default: hostname).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the files (exit 4 after).")
@click.option("--json", "as_json", is_flag=True)
@common
def snapshot(obj: dict[str, Any], pids: tuple[int, ...], host_id: str | None, timeout: float,
             as_json: bool) -> None:
    """Send SIGUSR1 to workers and print the snapshot files they write."""
    settings = settings_from(obj)
    targets = list(dict.fromkeys(pids)) or _local_workers(obj, host_id or default_host_id())
    for pid in targets:
        _check_taskexec(pid)
    folders = {pid: _snapshot_dir(settings.memory.snapshot_dir, pid) for pid in targets}
    before = {pid: _existing(folders[pid], pid) for pid in targets}
    for pid in targets:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            raise Failure(f"no process {pid}", ExitCode.NOT_FOUND) from None
        except PermissionError:
            raise Failure(f"not allowed to signal process {pid}", ExitCode.FAILED) from None
    found: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(targets) and time.monotonic() < deadline:
        for pid in targets:
            new = sorted(_existing(folders[pid], pid) - before[pid])
            if pid not in found and new:
                found[pid] = str(new[-1])
                if not as_json:
                    click.echo(found[pid])
        time.sleep(0.1)  # poll interval of the deadline loop above
    missing = [pid for pid in targets if pid not in found]
    if as_json:
        emit_json({"files": {str(pid): path for pid, path in found.items()},
                   "missing": missing})
    if missing:
        raise Failure(f"no snapshot within {timeout:g} s from pid(s) "
                      f"{', '.join(map(str, missing))} (looked in "
                      f"{', '.join(sorted({str(folders[p]) for p in missing}))})",
                      ExitCode.TIMED_OUT)


# top -----------------------------------------------------------------------------------------

def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def top_rows(newer: tracemalloc.Snapshot, older: tracemalloc.Snapshot | None,
             limit: int) -> list[dict[str, Any]]:
    """The largest allocation sites, or the sites that grew most since `older`."""
    if older is None:
        stats = newer.statistics("lineno")
    else:
        stats = sorted(newer.compare_to(older, "lineno"),
                       key=lambda s: (s.size_diff, s.size), reverse=True)
    rows = []
    for s in stats[:limit]:
        frame = s.traceback[0]
        row = {"site": f"{frame.filename}:{frame.lineno}", "filename": frame.filename,
               "lineno": frame.lineno, "size": s.size, "count": s.count}
        if older is not None:
            row.update(size_diff=s.size_diff, count_diff=s.count_diff)
        rows.append(row)
    return rows


@memory.command("top")
@click.argument("file")
@click.option("--vs", "older", default=None, help="An older snapshot: show the growth since it.")
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@common
def top(obj: dict[str, Any], file: str, older: str | None, limit: int, as_json: bool) -> None:
    """Print the largest allocation sites of FILE, or their growth since OLDER."""
    newer = load_snapshot(file)
    base = load_snapshot(older) if older else None
    rows = top_rows(newer, base, limit)
    if as_json:
        emit_json(rows)
        return
    total = sum(s.size for s in newer.statistics("filename"))
    if base is None:
        click.echo(f"{file}: {_size(total)} traced; largest allocation sites:")
    else:
        grown = total - sum(s.size for s in base.statistics("filename"))
        click.echo(f"{file} against {older}: {_size(total)} traced ({'+' if grown >= 0 else ''}"
                   f"{_size(grown)}); largest growth:")
    for i, row in enumerate(rows, 1):
        line = f"{i:>3}  {row['site']}  size {_size(row['size'])}  count {row['count']}"
        if base is not None:
            sign = "+" if row["size_diff"] >= 0 else ""
            line += (f"  diff {sign}{_size(row['size_diff'])} "
                     f"{'+' if row['count_diff'] >= 0 else ''}{row['count_diff']}")
        click.echo(line)
