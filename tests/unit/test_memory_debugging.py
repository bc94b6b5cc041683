"""Memory debugging without processes: merged requests, safe loading, growth ranking."""

from __future__ import annotations

import os
import pickle
import signal
import tracemalloc
from pathlib import Path

import pytest

from supervisor.cli import Failure
from supervisor.memorycli import load_snapshot, top_rows
from workers.beatscripts import max_entries
from workers.memory import MemoryDebugger

_KEPT: list[bytes] = []


@pytest.fixture(autouse=True)
def no_tracing_left():
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def test_requests_during_a_snapshot_are_merged_and_usr2_is_idempotent(tmp_path: Path) -> None:
    dbg = MemoryDebugger(tmp_path, "Test", trace_on_start=False)
    for _ in range(3):  # arrived while the first snapshot is written
        dbg.on_signal(signal.SIGUSR1, None)
    dbg.serve(signal.SIGUSR1)
    assert dbg.written == 1 and tracemalloc.is_tracing()
    (path,) = tmp_path.glob(f"{os.getpid()}_snapshot_*.trace")
    assert not list(tmp_path.glob(".*part"))  # written under a temporary name, then renamed
    dbg.serve(signal.SIGUSR1)  # a later request is a new snapshot, in the same second too
    assert len(list(tmp_path.glob("*.trace"))) == 2
    dbg.serve(signal.SIGUSR2)
    assert not tracemalloc.is_tracing()
    dbg.serve(signal.SIGUSR2)  # harmless
    assert not tracemalloc.is_tracing() and isinstance(load_snapshot(str(path)),
                                                       tracemalloc.Snapshot)


def test_a_file_that_is_not_a_snapshot_cannot_run_code(tmp_path: Path) -> None:
    evil = tmp_path / "evil.trace"
    evil.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(Failure) as err:
        load_snapshot(str(evil))
    assert err.value.exit_code == 2 and not (tmp_path / "boom").exists()
    with pytest.raises(Failure) as err:
        load_snapshot(str(tmp_path / "missing.trace"))
    assert err.value.exit_code == 3


class _Boom:
    def __reduce__(self):
        return (os.mkdir, (str(Path(__file__).parent / "boom"),))


def test_growth_is_ranked_by_size_and_limited() -> None:
    tracemalloc.start()
    older = tracemalloc.take_snapshot()
    _KEPT.extend(os.urandom(1000) for _ in range(2000))  # the growth
    newer = tracemalloc.take_snapshot()
    rows = top_rows(newer, older, 3)
    assert len(rows) <= 3
    assert rows[0]["filename"] == __file__ and rows[0]["size_diff"] > 1_900_000
    assert [r["size_diff"] for r in rows] == sorted((r["size_diff"] for r in rows), reverse=True)


def test_heartbeat_history_bound() -> None:
    assert max_entries(3, 0.1) == 31
    assert max_entries(1800, 10) == 181
